"""Build the per-language n-gram LMs of an LM folder (``astra lm train``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from astra.lm.arpa import write_arpa
from astra.lm.kneser_ney import UNK, estimate
from astra.lm.lm_dir import FORMAT, MANIFEST, file_sha256, piece_ids

DEFAULT_ORDER = 6


def sentence_pieces(tokenizer, sentences: Sequence[str]) -> list[list[str]]:
    """Each sentence as the tokenizer's piece strings (``<unk>`` for unknown ids)."""
    pieces = piece_ids(tokenizer)
    return [[pieces.get(i, UNK) for i in tokenizer.encode(s)] for s in sentences]


def train_lm(sentences: Mapping[str, Sequence[str]], tokenizer, out_dir: str | Path,
             order: int = DEFAULT_ORDER) -> dict:
    """Write ``{lang}.arpa`` (modified Kneser-Ney over pieces, :mod:`astra.lm.kneser_ney`)
    per language and ``manifest.json`` into ``out_dir``; returns the manifest.

    Raises ``ValueError`` for an order < 1 or a language without sentences."""
    if order < 1:
        raise ValueError(f"--order must be >= 1, got {order}")
    empty = [lang for lang, s in sentences.items() if not s]
    if empty or not sentences:
        raise ValueError(f"no text for language(s) {', '.join(empty) or '(none given)'}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("scorer-*.pt"):  # scorer caches of the files this call replaces
        stale.unlink()
    vocabulary = list(piece_ids(tokenizer).values())
    languages = {}
    for lang in sorted(sentences):
        pieces = sentence_pieces(tokenizer, sentences[lang])
        model = estimate(pieces, order, vocabulary)
        arpa = f"{lang}.arpa"
        write_arpa(model, out_dir / arpa)
        languages[lang] = {
            "arpa": arpa, "sentences": len(pieces), "pieces": sum(len(p) for p in pieces),
            "ngrams": model.counts, "discounts": [list(d) for d in model.discounts],
        }
    manifest = {
        "format": FORMAT, "tokenizer_sha256": file_sha256(tokenizer.model_path),
        "tokenizer": str(tokenizer.model_path), "order": order, "words": "pieces",
        "smoothing": "interpolated modified Kneser-Ney", "languages": languages,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest
