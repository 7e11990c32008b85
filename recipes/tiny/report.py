#!/usr/bin/env python
"""Tables of the tiny recipe: per-language WER and the error rate on the text-only words.

    python recipes/tiny/report.py --corpus exp/tiny/corpus --eval "text+ASTRA=exp/tiny/eval/main" \
        [--eval "paired-only=exp/tiny/eval/paired_only"] [--out exp/tiny/results]

Each ``--eval NAME=DIR`` is an ``astra evaluate`` output folder (``results.json``,
``hyps.tsv``). The **text-only word error rate** of a language is the fraction of the test
references' occurrences of its text-only words (``CORPUS/text_only_words.json``: words that
occur in the unpaired text but in no paired training transcript) that the hypothesis does
not reproduce: the word is substituted or deleted in the word alignment (jiwer) of its
utterance. With two evaluations (baseline first) the tables are printed side by side, with
the relative reduction of the text-only word error rate of the second over the first.
Writes ``OUT.md`` and ``OUT.json`` (unknown rates are ``null``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TextOnlyCounts:
    """Occurrences of text-only words in the references and how many were recognised."""

    occurrences: int = 0
    recognised: int = 0

    @property
    def error_rate(self) -> float:
        return 1.0 - self.recognised / self.occurrences if self.occurrences else math.nan


@dataclass
class Evaluation:
    """One ``astra evaluate`` folder: WER per language, pooled, macro, text-only counts."""

    name: str
    wer: dict[str, float]
    pooled: float
    macro: float
    metric: str
    text_only: dict[str, TextOnlyCounts] = field(default_factory=dict)

    def text_only_pooled(self) -> TextOnlyCounts:
        total = TextOnlyCounts()
        for c in self.text_only.values():
            total.occurrences += c.occurrences
            total.recognised += c.recognised
        return total


def recognised_words(reference: str, hypothesis: str) -> list[bool]:
    """For every reference word: is it aligned to an identical hypothesis word?"""
    import jiwer

    ref_words = reference.split()
    hits = [False] * len(ref_words)
    if not ref_words:
        return hits
    if not hypothesis.split():
        return hits
    out = jiwer.process_words(reference, hypothesis)
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            for i in range(chunk.ref_start_idx, chunk.ref_end_idx):
                hits[i] = True
    return hits


def read_evaluation(name: str, folder: Path, text_only_words: dict[str, list[str]]) -> Evaluation:
    results_path, hyps_path = folder / "results.json", folder / "hyps.tsv"
    for path in (results_path, hyps_path):
        if not path.is_file():
            raise ValueError(f"{name}: {path} not found (run `astra evaluate` first)")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    evaluation = Evaluation(
        name=name,
        wer={lang["language"]: float(lang["error_rate"]) for lang in results["languages"]},
        pooled=float(results["pooled"]["error_rate"]),
        macro=float(results["macro"]["error_rate"]),
        metric=str(results["pooled"].get("metric", "WER")),
    )
    with open(hyps_path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    for row in rows:
        lang = row["language"]
        words = set(text_only_words.get(lang, []))
        counts = evaluation.text_only.setdefault(lang, TextOnlyCounts())
        ref = row["reference"]
        for word, hit in zip(ref.split(), recognised_words(ref, row["hypothesis"]), strict=True):
            if word in words:
                counts.occurrences += 1
                counts.recognised += int(hit)
    return evaluation


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.1f}"


def relative_reduction(before: float, after: float) -> float:
    """``(before - after) / before`` (NaN if ``before`` is 0 or unknown)."""
    if math.isnan(before) or math.isnan(after) or before == 0:
        return math.nan
    return (before - after) / before


def markdown(evaluations: list[Evaluation]) -> str:
    """Side-by-side table: WER (%) and text-only word error (%) of every evaluation."""
    languages = sorted(set().union(*(e.wer for e in evaluations)))
    metric = evaluations[0].metric
    head = ["language"] + [f"{metric} (%) {e.name}" for e in evaluations]
    head += [f"text-only words: error (%) {e.name}" for e in evaluations] + ["text-only occurrences"]
    compare = len(evaluations) > 1
    if compare:
        head.append(f"text-only error: relative reduction {evaluations[-1].name} vs {evaluations[0].name} (%)")
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]

    def row(label: str, wers: list[float], text_only: list[TextOnlyCounts]) -> str:
        cells = [label] + [_pct(w) for w in wers] + [_pct(c.error_rate) for c in text_only]
        cells.append(str(text_only[0].occurrences))
        if compare:
            cells.append(_pct(relative_reduction(text_only[0].error_rate, text_only[-1].error_rate)))
        return "| " + " | ".join(cells) + " |"

    for lang in languages:
        lines.append(row(
            lang,
            [e.wer.get(lang, math.nan) for e in evaluations],
            [e.text_only.get(lang, TextOnlyCounts()) for e in evaluations],
        ))
    lines.append(row("**pooled**", [e.pooled for e in evaluations], [e.text_only_pooled() for e in evaluations]))
    macro_text_only = []
    for e in evaluations:
        rates = [c.error_rate for c in e.text_only.values() if c.occurrences]
        macro_text_only.append(sum(rates) / len(rates) if rates else math.nan)
    cells = ["**macro**"] + [_pct(e.macro) for e in evaluations] + [_pct(r) for r in macro_text_only] + [""]
    if compare:
        cells.append(_pct(relative_reduction(macro_text_only[0], macro_text_only[-1])))
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


def to_json(evaluations: list[Evaluation]) -> dict:
    out: dict = {}
    for e in evaluations:
        pooled = e.text_only_pooled()
        out[e.name] = {
            "metric": e.metric,
            "error_rate": e.wer,
            "pooled": e.pooled,
            "macro": e.macro,
            "text_only": {
                lang: {"occurrences": c.occurrences, "recognised": c.recognised, "error_rate": _num(c.error_rate)}
                for lang, c in sorted(e.text_only.items())
            },
            "text_only_pooled": {
                "occurrences": pooled.occurrences, "recognised": pooled.recognised, "error_rate": _num(pooled.error_rate),
            },
        }
    if len(evaluations) > 1:
        first, last = evaluations[0].text_only_pooled(), evaluations[-1].text_only_pooled()
        out["text_only_pooled_relative_reduction"] = _num(relative_reduction(first.error_rate, last.error_rate))
    return out


def read_text_only_words(corpus: Path) -> dict[str, list[str]]:
    """``CORPUS/text_only_words.json``: language -> its text-only words."""
    path = Path(corpus) / "text_only_words.json"
    if not path.is_file():
        raise ValueError(f"{path} not found (build the corpus with tools/build_tiny_corpus.py)")
    return json.loads(path.read_text(encoding="utf-8"))


def split_named(spec: str, flag: str, value: str) -> tuple[str, Path]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``; ``ValueError`` naming ``flag`` otherwise."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"{flag} must be NAME={value}, got {spec!r}")
    return name, Path(path)


def emit_tables(out: Path | None, table: str, data: dict) -> None:
    """Print the markdown ``table``; with ``out``, also write it to ``OUT.md`` and ``data`` to
    ``OUT.json``."""
    print(table, end="")
    if not out:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="the tiny corpus folder (text_only_words.json)")
    parser.add_argument("--eval", dest="evals", action="append", required=True, metavar="NAME=DIR",
                        help="an `astra evaluate` output folder; give two to compare (baseline first)")
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    try:
        text_only_words = read_text_only_words(args.corpus)
        evaluations = [read_evaluation(*split_named(spec, "--eval", "DIR"), text_only_words) for spec in args.evals]
    except ValueError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    emit_tables(args.out, markdown(evaluations), to_json(evaluations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
