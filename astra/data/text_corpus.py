"""Unpaired text per language from a Hub text corpus (default ``wikimedia/wikipedia``) via ``datasets``.

For each language: stream the corpus config's ``text`` column (documents), split it into
sentences (:func:`split_sentences`), stop after ``max_sentences``, write the raw sentences,
then pass them through :func:`astra.data.unpaired_text.load_unpaired_text` (the pipeline's own
filter: normalised as for scoring, empty and repeated lines dropped, every sentence equal to a
dev/test transcript removed) and write what is kept, one sentence a line. The Hub and a local
copy go through the same ``datasets.load_dataset`` call: a repo id and config name, or the
``parquet`` builder with ``data_files``.

A mapping table (``recipes/fleurs/text_corpus.tsv``) gives the corpus config of each FLEURS
config (``fleurs_config<TAB>wikipedia<TAB>note``; ``-`` where the corpus has no edition).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from astra.data import skips
from astra.data.unpaired_text import load_unpaired_text

log = logging.getLogger(__name__)

WIKIPEDIA_REPO = "wikimedia/wikipedia"
WIKIPEDIA_DUMP = "20231101"
NO_EDITION = "-"

# a sentence ends at . ! ? (and their Arabic, Devanagari, Armenian, Ethiopic, Burmese, Khmer
# forms) followed by white space, or at a CJK full stop / exclamation / question mark
_SENTENCE_END = re.compile(r"(?<=[.!?؟।॥։።။។])\s+|(?<=[。！？])")
_MIN_CHARS = 2


def split_sentences(text: str) -> list[str]:
    """Sentences of a document: split at line breaks and sentence-final punctuation; stripped,
    empty pieces dropped (``"A b. C d!\\nE"`` -> ``["A b.", "C d!", "E"]``)."""
    out = []
    for line in text.splitlines():
        out.extend(s.strip() for s in _SENTENCE_END.split(line) if s and s.strip())
    return out


def read_corpus_map(path: str | Path) -> dict[str, str | None]:
    """``{fleurs_config: corpus language code or None}`` from a mapping tsv (header line first,
    ``#`` comments allowed).

    Raises:
        ValueError: a row without two columns, or a config listed twice.
    """
    out: dict[str, str | None] = {}
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    for i, line in enumerate(rows[1:], 2):
        cols = line.split("\t")
        if len(cols) < 2 or not cols[0].strip() or not cols[1].strip():
            raise ValueError(f"{path}: row {i} {line!r}: expected fleurs_config<TAB>code[<TAB>note]")
        config, code = cols[0].strip(), cols[1].strip()
        if config in out:
            raise ValueError(f"{path}: {config} listed twice")
        out[config] = None if code == NO_EDITION else code
    return out


def open_text_corpus(corpus: str, config: str | None = None, data_files=None, cache_dir: str | None = None):
    """A streaming ``datasets.IterableDataset`` of one corpus config (split ``train``).

    ``corpus`` is a Hub repo id (with ``config``, e.g. ``20231101.hi``) or a ``datasets``
    builder name such as ``parquet`` with ``data_files`` (a local copy).

    Raises:
        ValueError: the corpus cannot be opened or has no ``text`` column.
    """
    import datasets

    try:
        ds = datasets.load_dataset(corpus, config, data_files=data_files, split="train", streaming=True,
                                   cache_dir=cache_dir)
    except (OSError, ValueError, ConnectionError) as e:
        where = data_files if data_files is not None else f"{corpus} ({config})"
        raise ValueError(f"cannot read text corpus {where}: {e}") from e
    columns = ds.column_names or list((ds.features or {}).keys())
    if columns and "text" not in columns:
        raise ValueError(f"text corpus {corpus} ({config}) has no 'text' column (columns: {columns})")
    return ds


def first_sentences(documents, max_sentences: int) -> tuple[list[str], int]:
    """``(sentences, documents read)``: the first ``max_sentences`` sentences of ``documents``
    (rows with a ``text`` field), in order."""
    out: list[str] = []
    n_docs = 0
    for row in documents:
        n_docs += 1
        for sentence in split_sentences(row.get("text") or ""):
            if len(sentence) >= _MIN_CHARS:
                out.append(sentence)
                if len(out) >= max_sentences:
                    return out, n_docs
    return out, n_docs


@dataclass
class LanguageText:
    """What :func:`build_language_text` wrote for one language."""

    language: str
    documents: int
    sentences: int  # raw sentences read
    kept: int
    removed_overlap: int
    path: Path

    def line(self) -> str:
        return (f"{self.language}: {self.documents} documents, {self.sentences} sentences, kept {self.kept} "
                f"({self.removed_overlap} equal to a dev/test transcript removed) -> {self.path}")


def build_language_text(
    language: str,
    documents,
    max_sentences: int,
    exclude: set[str],
    out_dir: str | Path,
) -> LanguageText:
    """Write ``out_dir/{language}.raw.txt`` (sentences as read) and ``out_dir/{language}.txt``
    (normalised, deduplicated, dev/test transcripts in ``exclude`` removed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sentences, n_docs = first_sentences(documents, max_sentences)
    raw = out_dir / f"{language}.raw.txt"
    raw.write_text("".join(s.replace("\n", " ") + "\n" for s in sentences), encoding="utf-8")
    text = load_unpaired_text({language: [str(raw)]}, exclude=exclude)
    kept = text.sentences.get(language, [])
    out = out_dir / f"{language}.txt"
    tmp = out.with_suffix(".txt.tmp")
    tmp.write_text("".join(s + "\n" for s in kept), encoding="utf-8")
    tmp.replace(out)
    removed = text.skips.by_language.get(language, {}).get(skips.EVAL_OVERLAP, 0)
    return LanguageText(language, n_docs, len(sentences), len(kept), removed, out)
