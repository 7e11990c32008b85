"""Evaluation reports: markdown table, ``results.json``, ``results.csv``, ``hyps.tsv``, PNG chart.

Every file is written into one output folder (see :func:`output_dir_name`); rates are
stored as fractions in JSON/CSV and shown as percentages in the markdown table and chart.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path

from astra.eval.metrics import ScoreSummary, UtteranceScore, rate_name

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
HYPS_TSV = "hyps.tsv"
CHART_PNG = "error_rates.png"
TABLE_MD = "results.md"

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-") or "x"


def output_dir_name(checkpoint: str | Path, data: str) -> str:
    """Folder name for one evaluation: ``<run>_<checkpoint>__<data>``.

    ``checkpoint`` is a checkpoint folder; it is named by its run folder and its own name
    (``exp/tiny/checkpoints/step-00000200`` -> ``tiny_step-00000200``; a ``checkpoints``
    folder in between is skipped). ``data`` describes the data (``fleurs-hi_in-ta_in_test``
    or a local corpus folder name). Characters outside ``[A-Za-z0-9._+-]`` become ``-``.
    """
    path = Path(checkpoint).resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    parts = [p for p in (run.name, path.name) if p]
    return f"{_slug('_'.join(parts))}__{_slug(data)}"


def _pct(rate: float) -> str:
    return f"{100.0 * rate:.2f}"


def markdown_table(summary: ScoreSummary, rtf: float | None = None, title: str | None = None) -> str:
    """A markdown table: one row per language, then the pooled and macro averages.

    Columns: language, metric (WER/CER), utterances, reference units, S, D, I, error rate (%).
    """
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [
        "| language | metric | utts | ref units | sub | del | ins | error rate (%) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang in summary.languages:
        c = lang.counts
        lines.append(
            f"| {lang.language} | {lang.metric} | {lang.utterances} | {c.ref_units} | "
            f"{c.substitutions} | {c.deletions} | {c.insertions} | {_pct(c.error_rate)} |"
        )
    p = summary.pooled
    metric = summary.pooled_metric
    lines.append(
        f"| **pooled** (total errors / total ref units) | {metric} | {summary.utterances} | "
        f"{p.ref_units} | {p.substitutions} | {p.deletions} | {p.insertions} | "
        f"{_pct(p.error_rate)} |"
    )
    if len(summary.pooled_by_unit) > 1:
        for unit, c in sorted(summary.pooled_by_unit.items()):
            name = rate_name(unit)
            lines.append(
                f"| pooled, {name} languages only | {name} | | {c.ref_units} | "
                f"{c.substitutions} | {c.deletions} | {c.insertions} | {_pct(c.error_rate)} |"
            )
    lines.append(
        f"| **macro** (mean of {len(summary.languages)} languages) | {metric} | | | | | | "
        f"{_pct(summary.macro_error_rate)} |"
    )
    if rtf is not None:
        lines += ["", f"Real-time factor (decode seconds per audio second): {rtf:.4f}"]
    return "\n".join(lines) + "\n"


def write_results_json(path: Path, summary: ScoreSummary, meta: dict) -> None:
    """``results.json``: ``{"meta": ..., **summary.to_dict()}`` (rates as fractions)."""
    payload = {"meta": meta, **summary.to_dict()}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


CSV_FIELDS = (
    "language", "metric", "utterances", "ref_units", "substitutions", "deletions",
    "insertions", "errors", "error_rate",
)


def write_results_csv(path: Path, summary: ScoreSummary) -> None:
    """``results.csv``: one row per language, then rows ``pooled`` and ``macro``."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for lang in summary.languages:
            c = lang.counts
            writer.writerow([
                lang.language, lang.metric, lang.utterances, c.ref_units, c.substitutions,
                c.deletions, c.insertions, c.errors, f"{c.error_rate:.6f}",
            ])
        p = summary.pooled
        writer.writerow([
            "pooled", summary.pooled_metric, summary.utterances, p.ref_units, p.substitutions,
            p.deletions, p.insertions, p.errors, f"{p.error_rate:.6f}",
        ])
        writer.writerow([
            "macro", summary.pooled_metric, summary.utterances, "", "", "", "", "",
            f"{summary.macro_error_rate:.6f}",
        ])


HYPS_FIELDS = ("key", "language", "reference", "hypothesis", "errors", "ref_units", "error_rate")


def _tsv_cell(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def write_hyps_tsv(path: Path, scores: Sequence[UtteranceScore]) -> None:
    """``hyps.tsv``: key, language, reference, hypothesis (both as scored), errors, ..."""
    with path.open("w", encoding="utf-8") as f:
        f.write("\t".join(HYPS_FIELDS) + "\n")
        for s in scores:
            row = [
                s.key, s.language, s.reference, s.hypothesis, str(s.errors),
                str(s.counts.ref_units), f"{s.error_rate:.6f}",
            ]
            f.write("\t".join(_tsv_cell(x) for x in row) + "\n")


def read_hyps_tsv(path: Path) -> list[dict[str, str]]:
    """Read a ``hyps.tsv`` back as a list of dicts keyed by :data:`HYPS_FIELDS`."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def plot_error_rates(path: Path, summary: ScoreSummary, title: str = "") -> None:
    """PNG bar chart: error rate (%) per language, plus pooled and macro bars (hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{lang.language}\n({lang.metric})" for lang in summary.languages]
    values = [100.0 * lang.error_rate for lang in summary.languages]
    names += ["pooled", "macro"]
    values += [100.0 * summary.pooled_error_rate, 100.0 * summary.macro_error_rate]
    width = max(4.0, 0.7 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(width, 3.6), dpi=100)
    colors = ["tab:blue"] * len(summary.languages) + ["tab:gray", "tab:gray"]
    bars = ax.bar(range(len(names)), values, color=colors)
    for bar in bars[-2:]:
        bar.set_hatch("//")
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_ylabel("error rate (%)")
    ax.set_title(title or f"{summary.pooled_metric} per language", fontsize=9)
    ax.set_ylim(0, max([1.0, *values]) * 1.15)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_reports(
    out_dir: str | Path,
    scores: Sequence[UtteranceScore],
    summary: ScoreSummary,
    meta: dict,
    title: str = "",
) -> dict[str, Path]:
    """Write every report file into ``out_dir`` (created); returns ``{kind: path}``.

    ``meta`` (checkpoint, data, method, beam, normalize, rtf, ...) goes into results.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / RESULTS_JSON,
        "csv": out / RESULTS_CSV,
        "hyps": out / HYPS_TSV,
        "chart": out / CHART_PNG,
        "markdown": out / TABLE_MD,
    }
    write_results_json(paths["json"], summary, meta)
    write_results_csv(paths["csv"], summary)
    write_hyps_tsv(paths["hyps"], scores)
    plot_error_rates(paths["chart"], summary, title)
    paths["markdown"].write_text(markdown_table(summary, meta.get("rtf"), title), encoding="utf-8")
    return paths
