"""Local corpora: ``ROOT/{lang}/{split}.tsv`` (or ``.parquet``) manifests plus audio files.

Layout and columns are documented in docs/data.md ("Local corpus layout"). Audio paths are
relative to the manifest's folder. ``dev`` is accepted as an alias of ``validation``.
A folder laid out like FLEURS' parquet conversion (``ROOT/{config}/{split}/*.parquet``) is
recognised by :func:`is_fleurs_layout` and loaded by :mod:`astra.data.fleurs` instead.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from astra.data import skips
from astra.data.manifest import Utterance
from astra.data.skips import SkipCounter

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".tsv", ".parquet")
SPLIT_ALIASES = {"dev": "validation", "valid": "validation"}


def canonical_split(name: str) -> str:
    return SPLIT_ALIASES.get(name, name)


def is_fleurs_layout(root: str | Path) -> bool:
    """True if ``root`` holds ``{config}/{split}/*.parquet`` (a copy of FLEURS' parquet conversion)."""
    root = Path(root)
    return root.is_dir() and any(root.glob("*/*/*.parquet"))


def find_manifests(root: str | Path) -> dict[str, dict[str, Path]]:
    """``{lang: {split: manifest path}}`` of a local corpus folder.

    Raises:
        ValueError: ``root`` is not a folder or holds no manifest.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"corpus folder not found: {root}")
    found: dict[str, dict[str, Path]] = {}
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for manifest in sorted(lang_dir.iterdir()):
            if manifest.is_file() and manifest.suffix in MANIFEST_SUFFIXES:
                split = canonical_split(manifest.stem)
                if split in found.get(lang_dir.name, {}):
                    raise ValueError(f"two manifests for {lang_dir.name}/{split} in {lang_dir}")
                found.setdefault(lang_dir.name, {})[split] = manifest
    if not found:
        raise ValueError(
            f"{root} holds no manifest: expected {root}/{{lang}}/{{split}}.tsv or .parquet "
            "(see docs/data.md), or a FLEURS parquet copy {config}/{split}/*.parquet"
        )
    return found


def _read_rows(manifest: Path) -> list[dict]:
    if manifest.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(manifest).to_pylist()
    with open(manifest, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None or not {"path", "transcription"} <= set(reader.fieldnames):
            raise ValueError(
                f"{manifest}: header must name at least 'path' and 'transcription', got {reader.fieldnames}"
            )
        return list(reader)


def _as_float(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_manifest(manifest: str | Path, language: str, split: str,
                  skip_counter: SkipCounter | None = None) -> list[Utterance]:
    """Rows of one manifest as :class:`Utterance` records (audio not opened).

    Rows without ``path`` are counted as ``bad_manifest_row``; a missing ``transcription``
    becomes an empty one (skipped later as ``empty_transcript``).
    """
    manifest = Path(manifest)
    base = manifest.parent
    utterances = []
    for i, row in enumerate(_read_rows(manifest)):
        rel = (row.get("path") or "").strip()
        if not rel:
            if skip_counter is not None:
                skip_counter.add(skips.BAD_MANIFEST_ROW, f"{manifest}:{i + 2}", language, "no path")
            continue
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        key = (row.get("key") or "").strip() or f"{language}/{split}/{rel}"
        speaker = row.get("speaker")
        utterances.append(
            Utterance(
                key=key,
                language=language,
                split=split,
                transcription=(row.get("transcription") or "").strip(),
                duration=_as_float(row.get("duration")),
                speaker=str(speaker) if speaker not in (None, "") else None,
                path=str(path),
                raw_transcription=row.get("raw_transcription") or None,
                language_name=row.get("language") or None,
            )
        )
    return utterances


def load_local_corpus(
    root: str | Path,
    splits: list[str] | None = None,
    languages: list[str] | None = None,
    skip_counter: SkipCounter | None = None,
) -> list[Utterance]:
    """Every utterance of the chosen splits and languages of a local corpus folder.

    Args:
        root: the corpus folder (``ROOT/{lang}/{split}.tsv``).
        splits: split names (``None``: all found); ``dev`` means ``validation``.
        languages: language folder names (``None``: all found).
    Returns:
        records in manifest order, languages and splits sorted; duplicate keys dropped
        and counted as ``duplicate_key``.
    """
    found = find_manifests(root)
    wanted_splits = None if splits is None else {canonical_split(s) for s in splits}
    seen: set[str] = set()
    out: list[Utterance] = []
    for lang in sorted(found):
        if languages is not None and lang not in languages:
            continue
        for split in sorted(found[lang]):
            if wanted_splits is not None and split not in wanted_splits:
                continue
            for utt in read_manifest(found[lang][split], lang, split, skip_counter):
                if utt.key in seen:
                    if skip_counter is not None:
                        skip_counter.add(skips.DUPLICATE_KEY, utt.key, lang)
                    continue
                seen.add(utt.key)
                out.append(utt)
    return out
