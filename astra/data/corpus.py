"""One entry point for utterance records, whatever the source (local folders, FLEURS)."""

from __future__ import annotations

import logging
from pathlib import Path

from astra.data import skips
from astra.data.config import DataConfig
from astra.data.fleurs import iter_fleurs, parse_configs
from astra.data.local_corpus import canonical_split, is_fleurs_layout, load_local_corpus
from astra.data.manifest import Utterance
from astra.data.skips import SkipCounter

log = logging.getLogger(__name__)


def load_corpus(
    source: str | Path,
    split: str | list[str] = "test",
    languages: list[str] | None = None,
    skip_counter: SkipCounter | None = None,
    cache_dir: str | None = None,
    target: str = "transcription",
) -> list[Utterance]:
    """Utterances of one local corpus folder (local layout or FLEURS parquet copy).

    Args:
        source: folder with ``{lang}/{split}.tsv|.parquet`` or ``{config}/{split}/*.parquet``.
        split: one split name or a list.
        languages: keep only these languages (``None``: all).
    Raises:
        ValueError: the folder is not a corpus.
    """
    splits = [split] if isinstance(split, str) else list(split)
    splits = [canonical_split(s) for s in splits]
    source = Path(source)
    if is_fleurs_layout(source):
        configs = sorted(p.name for p in source.iterdir() if p.is_dir())
        if languages:
            configs = [c for c in configs if c in languages]
        out = []
        for config in configs:
            present = [s for s in splits if any((source / config / s).glob("*.parquet"))]
            out.extend(iter_fleurs([config], present, data_dir=source, target=target, cache_dir=cache_dir,
                                   skip_counter=skip_counter))
        return out
    return load_local_corpus(source, splits, languages or None, skip_counter)


def load_utterances(
    cfg: DataConfig,
    splits: str | list[str],
    languages: list[str] | None = None,
    skip_counter: SkipCounter | None = None,
) -> list[Utterance]:
    """Utterances of ``splits`` from every source in ``cfg`` (corpora first, then FLEURS).

    ``languages`` (default ``cfg.languages``; empty = all) filters by language code.
    Raises ``ValueError`` if the config names no source.
    """
    if not cfg.corpora and not cfg.fleurs:
        raise ValueError("data config names no corpus: set data.corpora and/or data.fleurs")
    splits = [splits] if isinstance(splits, str) else list(splits)
    langs = languages if languages is not None else (cfg.languages or None)
    out: list[Utterance] = []
    for root in cfg.corpora:
        out.extend(load_corpus(root, splits, langs, skip_counter, cfg.hf_cache_dir, cfg.fleurs_target))
    configs = [c for c in parse_configs(cfg.fleurs) if langs is None or c in langs]
    if configs:
        out.extend(
            iter_fleurs(
                configs, [canonical_split(s) for s in splits], data_dir=cfg.fleurs_dir, target=cfg.fleurs_target,
                streaming=cfg.fleurs_streaming, cache_dir=cfg.hf_cache_dir, skip_counter=skip_counter,
            )
        )
    seen: set[str] = set()
    unique = []
    for utt in out:  # the same key from two sources: keep the first
        if utt.key in seen:
            if skip_counter is not None:
                skip_counter.add(skips.DUPLICATE_KEY, utt.key, utt.language, "in two sources")
            continue
        seen.add(utt.key)
        unique.append(utt)
    return unique
