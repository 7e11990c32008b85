#!/usr/bin/env python
"""The tiny recipe's `--compare` over several runs (seeds, or variants of the text-injected model).

    python recipes/tiny/seed_table.py --run 1234=exp/tiny --run 1235=exp/tiny_s2 [--out exp/seeds]

Each ``--run LABEL=WORK`` is a work folder of ``run.sh --compare`` (its
``results_compare{,_ctc_beam,_ctc_beam_lm,_ctc,_ctc_lm,_rescore}.json``, written by ``report.py``). Prints
one row per run and model (pooled WER / CER of every decoder, the text-only word error and the
per-language WER under the best decoder, CTC beam + LM), the mean of the runs per model, and the
relative change of the text-injected model against the paired-only one per decoder: of the
means, and per run. Writes ``OUT.md`` and ``OUT.json`` with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the recipe's report.py

from report import emit_tables, split_named  # noqa: E402

# (file suffix, label) of run.sh's decoders, in its order; BEST is the best decoder (its
# text-only and per-language columns); OPTIONAL joins when every run has it (run.sh --rescore)
DECODERS = [("", "Aligner greedy"), ("_ctc_beam", "Aligner + CTC beam"), ("_ctc_beam_lm", "+ LM"),
            ("_ctc", "CTC greedy"), ("_ctc_lm", "CTC beam + LM")]
OPTIONAL = [("_rescore", "+ Aligner rescoring")]
BEST = "_ctc_lm"
MODELS = ("paired-only", "text+ASTRA")


def read_run(work: Path) -> dict[str, dict]:
    """``{suffix: {model: report.py's summary}}`` of one work folder (the OPTIONAL decoders
    where present); ValueError if a file or a model is missing."""
    out = {}
    for suffix, label in DECODERS + OPTIONAL:
        path = work / f"results_compare{suffix}.json"
        if not path.is_file() and (suffix, label) in OPTIONAL:
            continue
        if not path.is_file():
            raise ValueError(f"{path} not found ({label}): run `run.sh --compare --work {work}` first")
        data = json.loads(path.read_text(encoding="utf-8"))
        missing = [m for m in MODELS if m not in data]
        if missing:
            raise ValueError(f"{path} has no {', '.join(missing)} (models: {sorted(data)})")
        out[suffix] = data
    return out


def summary(model: dict) -> dict:
    """The numbers one table row shows of one model under one decoder (fractions)."""
    return dict(wer=model["pooled"], cer=model["cer_pooled"], text_only=model["text_only_pooled"]["error_rate"],
                languages=dict(sorted(model["error_rate"].items())))


def mean(rows: list[dict]) -> dict:
    """Field-wise mean of :func:`summary` dicts."""
    out = {k: sum(r[k] for r in rows) / len(rows) for k in ("wer", "cer", "text_only")}
    out["languages"] = {lang: sum(r["languages"][lang] for r in rows) / len(rows) for lang in rows[0]["languages"]}
    return out


def relative(new: float, old: float) -> float:
    """Relative change of ``new`` against ``old`` (-0.05: 5 % lower)."""
    return (new - old) / old if old else float("nan")


def build(runs: list[tuple[str, dict]]) -> tuple[str, dict]:
    """Markdown table and JSON data of the runs."""
    decoders = DECODERS + [d for d in OPTIONAL if all(d[0] in run for _, run in runs)]
    best, best_name = BEST, dict(decoders)[BEST]
    data: dict = {"runs": {}, "mean": {}, "relative_change": {}}
    for label, run in runs:
        data["runs"][label] = {m: {s: summary(run[s][m]) for s, _ in decoders} for m in MODELS}
    for m in MODELS:
        data["mean"][m] = {s: mean([data["runs"][r][m][s] for r, _ in runs]) for s, _ in decoders}
    languages = list(data["mean"][MODELS[0]][best]["languages"])
    head = (["run", "model"] + [f"{name} WER / CER" for _, name in decoders]
            + [f"text-only word error, {best_name}", f"WER {' / '.join(languages)}, {best_name}"])
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(decoders) + 1) + "---|"]

    def row(label: str, model: str, cells: dict) -> str:
        pairs = [f"{100 * cells[s]['wer']:.1f} / {100 * cells[s]['cer']:.1f}" for s, _ in decoders]
        langs = " / ".join(f"{100 * v:.1f}" for v in cells[best]["languages"].values())
        return f"| {label} | {model} | " + " | ".join(pairs) + f" | {100 * cells[best]['text_only']:.1f} | {langs} |"

    for label, _ in runs:
        lines += [row(label, m, data["runs"][label][m]) for m in MODELS]
    lines += [row(f"mean of {len(runs)}", m, data["mean"][m]) for m in MODELS]
    lines += ["", "Text-injected against paired-only, relative change (%; negative: lower error):", "",
              "| decoder | WER, of the means | WER, per run | text-only word error, of the means | per run |",
              "|---|---:|---|---:|---|"]
    base, text = MODELS
    for s, name in decoders:
        change = {k: relative(data["mean"][text][s][k], data["mean"][base][s][k]) for k in ("wer", "text_only")}
        per_run = {k: [relative(data["runs"][r][text][s][k], data["runs"][r][base][s][k]) for r, _ in runs]
                   for k in ("wer", "text_only")}
        data["relative_change"][s or "aligner_greedy"] = dict(of_means=change, per_run=per_run)
        lines.append(f"| {name} | {100 * change['wer']:+.1f} | " + " / ".join(f"{100 * v:+.1f}" for v in per_run["wer"])
                     + f" | {100 * change['text_only']:+.1f} | "
                     + " / ".join(f"{100 * v:+.1f}" for v in per_run["text_only"]) + " |")
    return "\n".join(lines) + "\n", data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", dest="runs", action="append", required=True, metavar="LABEL=WORK",
                        help="a `run.sh --compare` work folder (give one per seed or variant)")
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    try:
        runs = []
        for spec in args.runs:
            label, work = split_named(spec, "--run", "WORK")
            runs.append((label, read_run(work)))
    except ValueError as e:
        print(f"seed_table: error: {e}", file=sys.stderr)
        return 2
    emit_tables(args.out, *build(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
