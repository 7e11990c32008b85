#!/usr/bin/env python
"""Build the tiny recipe's multilingual corpus (espeak-ng speech of Debian fortunes sentences).

    python tools/build_tiny_corpus.py --out exp/tiny/corpus [--config recipes/tiny/corpus.yaml]
        [--set train_sentences=100 ...] [--workers 2] [--force] [--no-progress]

Writes the local corpus layout of docs/data.md (``OUT/{lang}/{train,validation,test}.tsv``
with 16 kHz audio) plus ``OUT/{lang}/unpaired.txt`` and ``OUT/text_only_words.json``; see
docs/recipe_tiny.md. Re-running skips finished work. Needs the Debian packages ``espeak-ng``,
``fortunes``, ``fortunes-de``, ``fortunes-es``, ``fortunes-it`` and ``fortunes-ru``.
Exit status: 0 built or up to date, 2 bad settings / a missing package, 1 synthesis failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tiny_corpus.build import build_corpus  # noqa: E402
from tiny_corpus.plan import PAIRED_SPLITS, TinyCorpusConfig  # noqa: E402
from tiny_corpus.synth import ESPEAK_INSTALL_HINT, SynthesisError  # noqa: E402

from astra.config import ConfigError, load_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="corpus folder (created; an ignored folder such as exp/)")
    parser.add_argument("--config", help="YAML with TinyCorpusConfig fields (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set train_sentences=100 (repeatable)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="espeak-ng processes in parallel (default: number of cores)")
    parser.add_argument("--force", action="store_true", help="rebuild a corpus made with other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


STAT_COLUMNS = (
    ("usable sentences", "usable_sentences"),
    ("unpaired sentences", "unpaired_sentences"),
    ("word types in paired speech", "paired_word_types"),
    *((f"{split} {what}", f"{split}_{key}") for split in ("validation", "test") for what, key in (
        ("words", "words"), ("text-only", "text_only_word_occurrences"), ("unseen", "unseen_word_occurrences"))),
)


def statistics_table(summary: dict) -> str:
    """The corpus statistics per language as a markdown table (words = occurrences)."""
    lines = ["| language | " + " | ".join(s for s in PAIRED_SPLITS) + " | "
             + " | ".join(name for name, _ in STAT_COLUMNS) + " |",
             "|---" * (1 + len(PAIRED_SPLITS) + len(STAT_COLUMNS)) + "|"]
    for code, info in summary["languages"].items():
        splits = info["splits"]
        cells = [str(splits.get(s, {}).get("utterances", 0)) for s in PAIRED_SPLITS]
        cells += [str(info[key]) for _, key in STAT_COLUMNS]
        lines.append(f"| {code} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[tiny corpus] %(message)s")
    try:
        cfg = load_config(TinyCorpusConfig, args.config, args.overrides)
        summary = build_corpus(cfg, args.out, workers=args.workers, progress=not args.no_progress, force=args.force)
    except (ConfigError, ValueError) as e:
        print(f"build_tiny_corpus: error: {e}", file=sys.stderr)
        return 2
    except SynthesisError as e:
        print(f"build_tiny_corpus: error: {e}", file=sys.stderr)
        return 2 if str(e) == ESPEAK_INSTALL_HINT else 1
    print(statistics_table(summary))
    print(f"corpus: {args.out}  synthesis: {json.dumps(summary['synthesis'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
