#!/usr/bin/env python
"""Tables of the tiny recipe: WER, CER and the error rates on text-only and unseen words.

    python recipes/tiny/report.py --corpus exp/tiny/corpus --eval "text+ASTRA=exp/tiny/eval/main" \
        [--eval "paired-only=exp/tiny/eval/paired_only"] [--out exp/tiny/results]

Each ``--eval NAME=DIR`` is an ``astra evaluate`` output folder (``results.json``,
``hyps.tsv``). The **text-only word error rate** of a language is the fraction of the test
references' occurrences of its text-only words (``CORPUS/text_only_words.json``: words that
occur in the unpaired text but in no paired training transcript) that the hypothesis does
not reproduce: the word is substituted or deleted in the word alignment (jiwer) of its
utterance. The **unseen word error rate** is the same for the words that occur in no training
text at all (``CORPUS/unseen_words.json``; ``n/a`` when the corpus has no such file), and the
**paired word error rate** for the other words, those of the paired training transcripts (what
the acoustic model has heard; ``n/a`` without ``unseen_words.json``). Also
reported per system: CER (jiwer's character alignment, spaces included) and the WER of the
test sentences that contain at least one text-only word.

The first table compares the systems on the pooled test set (all languages), one row per
system; the second gives every language. With two or more evaluations (baseline first) the
last column is the relative reduction of each system's text-only word error rate over the
first's. Writes ``OUT.md`` and ``OUT.json`` (unknown rates are ``null``).
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
class EditCounts:
    """Edit operations (substitutions + deletions + insertions) against reference units."""

    errors: int = 0
    units: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.units if self.units else math.nan


@dataclass
class Evaluation:
    """One ``astra evaluate`` folder: WER per language, pooled, macro, text-only counts."""

    name: str
    wer: dict[str, float]
    pooled: float
    macro: float
    metric: str
    text_only: dict[str, TextOnlyCounts] = field(default_factory=dict)
    unseen: dict[str, TextOnlyCounts] = field(default_factory=dict)
    paired: dict[str, TextOnlyCounts] = field(default_factory=dict)  # words of the paired transcripts
    chars: dict[str, EditCounts] = field(default_factory=dict)
    text_only_sentences: dict[str, EditCounts] = field(default_factory=dict)

    def text_only_pooled(self) -> TextOnlyCounts:
        return _pool(self.text_only.values(), TextOnlyCounts())

    def unseen_pooled(self) -> TextOnlyCounts:
        return _pool(self.unseen.values(), TextOnlyCounts())

    def paired_pooled(self) -> TextOnlyCounts:
        return _pool(self.paired.values(), TextOnlyCounts())

    def chars_pooled(self) -> EditCounts:
        return _pool(self.chars.values(), EditCounts())

    def text_only_sentences_pooled(self) -> EditCounts:
        return _pool(self.text_only_sentences.values(), EditCounts())


def _pool(counts, total):
    """Sum dataclass counters field by field into ``total``."""
    for c in counts:
        for name in total.__dataclass_fields__:
            setattr(total, name, getattr(total, name) + getattr(c, name))
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


def _edits(out) -> int:
    return out.substitutions + out.deletions + out.insertions


def count_occurrences(counts: TextOnlyCounts, words: set[str], ref: str, hits: list[bool]) -> None:
    """Add the occurrences in ``ref`` of the ``words`` (and how many ``hits`` marks) to ``counts``."""
    for word, hit in zip(ref.split(), hits, strict=True):
        if word in words:
            counts.occurrences += 1
            counts.recognised += int(hit)


def read_evaluation(name: str, folder: Path, text_only_words: dict[str, list[str]],
                    unseen_words: dict[str, list[str]] | None = None) -> Evaluation:
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
    import jiwer

    for row in rows:
        lang, ref, hyp = row["language"], row["reference"], row["hypothesis"]
        words = set(text_only_words.get(lang, []))
        hits = recognised_words(ref, hyp)
        count_occurrences(evaluation.text_only.setdefault(lang, TextOnlyCounts()), words, ref, hits)
        if unseen_words is not None:
            unseen = set(unseen_words.get(lang, []))
            count_occurrences(evaluation.unseen.setdefault(lang, TextOnlyCounts()), unseen, ref, hits)
            count_occurrences(evaluation.paired.setdefault(lang, TextOnlyCounts()),
                              set(ref.split()) - words - unseen, ref, hits)
        if not ref:
            continue
        chars = evaluation.chars.setdefault(lang, EditCounts())
        chars.errors += _edits(jiwer.process_characters(ref, hyp)) if hyp else len(ref)
        chars.units += len(ref)
        sentences = evaluation.text_only_sentences.setdefault(lang, EditCounts())
        if words.intersection(ref.split()):
            sentences.errors += _edits(jiwer.process_words(ref, hyp)) if hyp else len(ref.split())
            sentences.units += len(ref.split())
    return evaluation


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.1f}"


def relative_reduction(before: float, after: float) -> float:
    """``(before - after) / before`` (NaN if ``before`` is 0 or unknown)."""
    if math.isnan(before) or math.isnan(after) or before == 0:
        return math.nan
    return (before - after) / before


METRICS = ("WER", "CER", "WER of sentences with text-only words", "paired word error", "text-only word error",
           "unseen word error")


def _cells(e: Evaluation, lang: str | None) -> list[float]:
    """The METRICS of ``e`` for one language, or pooled over all (``lang=None``)."""
    if lang is None:
        return [e.pooled, e.chars_pooled().error_rate, e.text_only_sentences_pooled().error_rate,
                e.paired_pooled().error_rate, e.text_only_pooled().error_rate, e.unseen_pooled().error_rate]
    return [e.wer.get(lang, math.nan), e.chars.get(lang, EditCounts()).error_rate,
            e.text_only_sentences.get(lang, EditCounts()).error_rate,
            e.paired.get(lang, TextOnlyCounts()).error_rate,
            e.text_only.get(lang, TextOnlyCounts()).error_rate,
            e.unseen.get(lang, TextOnlyCounts()).error_rate]


def markdown(evaluations: list[Evaluation]) -> str:
    """Two tables (rates in %): the systems on the pooled test set, then every language."""
    languages = sorted(set().union(*(e.wer for e in evaluations)))
    compare = len(evaluations) > 1
    metrics = [f"{m} (%)" for m in METRICS]
    extra = [f"text-only error: relative reduction vs {evaluations[0].name} (%)"] if compare else []

    def header(first: list[str]) -> list[str]:
        head = first + metrics + ["text-only occurrences"] + extra
        return ["| " + " | ".join(head) + " |", "|---" * len(first) + "|---:" * (len(head) - len(first)) + "|"]

    def cells(e: Evaluation, lang: str | None) -> list[str]:
        counts = e.text_only_pooled() if lang is None else e.text_only.get(lang, TextOnlyCounts())
        base = evaluations[0].text_only_pooled() if lang is None else evaluations[0].text_only.get(
            lang, TextOnlyCounts())
        out = [_pct(v) for v in _cells(e, lang)] + [str(counts.occurrences)]
        if compare:
            out.append(_pct(relative_reduction(base.error_rate, counts.error_rate)))
        return out

    lines = ["Pooled over all languages:", ""] + header(["system"])
    lines += ["| " + " | ".join([e.name] + cells(e, None)) + " |" for e in evaluations]
    lines += ["", "Per language:", ""] + header(["language", "system"])
    for lang in languages:
        lines += ["| " + " | ".join([lang, e.name] + cells(e, lang)) + " |" for e in evaluations]
    lines.append("")
    lines.append("Macro average WER (%): " + ", ".join(f"{e.name} {_pct(e.macro)}" for e in evaluations))
    return "\n".join(lines) + "\n"


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


def _counts(c: TextOnlyCounts) -> dict:
    return {"occurrences": c.occurrences, "recognised": c.recognised, "error_rate": _num(c.error_rate)}


def to_json(evaluations: list[Evaluation]) -> dict:
    out: dict = {}
    for e in evaluations:
        pooled = e.text_only_pooled()
        out[e.name] = {
            "metric": e.metric,
            "error_rate": e.wer,
            "pooled": e.pooled,
            "macro": e.macro,
            "text_only": {lang: _counts(c) for lang, c in sorted(e.text_only.items())},
            "text_only_pooled": _counts(pooled),
            "unseen_pooled": _counts(e.unseen_pooled()),
            "unseen": {lang: _counts(c) for lang, c in sorted(e.unseen.items())},
            "paired_pooled": _counts(e.paired_pooled()),
            "paired": {lang: _counts(c) for lang, c in sorted(e.paired.items())},
            "cer": {lang: _num(c.error_rate) for lang, c in sorted(e.chars.items())},
            "cer_pooled": _num(e.chars_pooled().error_rate),
            "text_only_sentences_wer": {lang: _num(c.error_rate) for lang, c in sorted(e.text_only_sentences.items())},
            "text_only_sentences_wer_pooled": _num(e.text_only_sentences_pooled().error_rate),
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


def read_unseen_words(corpus: Path) -> dict[str, list[str]] | None:
    """``CORPUS/unseen_words.json`` (language -> test words in no training text), or None."""
    path = Path(corpus) / "unseen_words.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


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
        unseen_words = read_unseen_words(args.corpus)
        evaluations = [read_evaluation(*split_named(spec, "--eval", "DIR"), text_only_words, unseen_words)
                       for spec in args.evals]
    except ValueError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    emit_tables(args.out, markdown(evaluations), to_json(evaluations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
