"""Unpaired text per language: load, normalise, deduplicate, and keep evaluation text out.

Sources are given as ``LANG=PATH`` strings (``DataConfig.unpaired_text``):
- ``*.txt`` / ``*.txt.gz``: plain UTF-8, one sentence a line;
- ``*.parquet`` / ``*.json`` / ``*.jsonl`` / ``*.csv``: a ``datasets`` table with a ``text`` column;
- a folder written by ``datasets.Dataset.save_to_disk`` with a ``text`` column.

Every line is normalised with :func:`astra.text_norm.normalize_text` (the function scoring
uses), so "the same sentence" means the same thing here and in evaluation. A line whose
normalised form occurs in a dev/test transcript is removed (``eval_overlap``), repeated lines
are removed (``duplicate_text``), empty ones too (``empty_transcript``); all are counted.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path

from astra.data import skips
from astra.data.skips import SkipCounter
from astra.text_norm import normalize_text

log = logging.getLogger(__name__)


def parse_sources(specs: list[str]) -> dict[str, list[str]]:
    """``["en_us=a.txt", "fr_fr=b.txt"]`` -> ``{"en_us": ["a.txt"], "fr_fr": ["b.txt"]}``."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        lang, sep, path = spec.partition("=")
        if not sep or not lang.strip() or not path.strip():
            raise ValueError(f"unpaired text source must be LANG=PATH, got {spec!r}")
        out.setdefault(lang.strip(), []).append(path.strip())
    return out


def read_lines(path: str | Path) -> list[str]:
    """Raw lines of one source (see module doc for the formats)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"unpaired text source not found: {path}")
    if path.is_dir():
        import datasets

        return [str(x) for x in datasets.load_from_disk(str(path))["text"]]
    name = path.name.lower()
    if name.endswith(".txt.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read().splitlines()
    if name.endswith(".txt"):
        return path.read_text(encoding="utf-8").splitlines()
    builders = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
    if path.suffix.lower() not in builders:
        raise ValueError(
            f"unpaired text {path}: unknown format (use .txt, .txt.gz, .parquet, .json(l), .csv or a saved dataset)"
        )
    import datasets

    ds = datasets.load_dataset(builders[path.suffix.lower()], data_files=str(path), split="train")
    if "text" not in ds.column_names:
        raise ValueError(f"unpaired text {path}: no 'text' column (columns: {ds.column_names})")
    return [str(x) for x in ds["text"]]


@dataclass
class UnpairedText:
    """Normalised, deduplicated sentences per language and what was removed."""

    sentences: dict[str, list[str]] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)  # lines read per language
    skips: SkipCounter = field(default_factory=lambda: SkipCounter("unpaired text"))

    def report(self) -> str:
        lines = [
            f"{lang}: kept {len(self.sentences.get(lang, []))} of {self.read[lang]} lines "
            + ", ".join(f"{r} {n}" for r, n in self.skips.by_language.get(lang, {}).items())
            for lang in sorted(self.read)
        ]
        return "\n".join(lines)


def load_unpaired_text(
    sources: dict[str, list[str]] | list[str],
    exclude: set[str] | None = None,
    languages: list[str] | None = None,
) -> UnpairedText:
    """Read, normalise and deduplicate unpaired text.

    Args:
        sources: ``{lang: [path, ...]}`` or ``LANG=PATH`` strings.
        exclude: normalised evaluation transcripts; matching lines are removed (counted as
            ``eval_overlap``).
        languages: keep only these languages (``None``: all).
    """
    if isinstance(sources, list):
        sources = parse_sources(sources)
    exclude = exclude or set()
    out = UnpairedText()
    for lang in sorted(sources):
        if languages is not None and lang not in languages:
            log.info("unpaired text %s: not among the configured languages, not used", lang)
            continue
        seen: set[str] = set()
        kept: list[str] = []
        n_read = 0
        for path in sources[lang]:
            for line in read_lines(path):
                n_read += 1
                text = normalize_text(line)
                if not text:
                    out.skips.add(skips.EMPTY_TRANSCRIPT, f"{path}:{n_read}", lang)
                elif text in exclude:
                    out.skips.add(skips.EVAL_OVERLAP, f"{path}:{n_read}", lang, text[:60])
                elif text in seen:
                    out.skips.add(skips.DUPLICATE_TEXT, f"{path}:{n_read}", lang)
                else:
                    seen.add(text)
                    kept.append(text)
        out.sentences[lang] = kept
        out.read[lang] = n_read
        removed = out.skips.by_language.get(lang, {}).get(skips.EVAL_OVERLAP, 0)
        log.info("unpaired text %s: %d lines read, %d kept, %d removed as dev/test overlap", lang, n_read, len(kept),
                 removed)
    return out
