"""Target preparation: the one way a transcript becomes the token ids a model is trained on
and scored against — normalised (``data.normalize_transcripts``: :func:`astra.text_norm.normalize_text`,
else stripped), tokenized, and led by the ``<lang:xx>`` id when ``data.language_tags``.

Used by the datasets, ``astra data check``, ``astra plot-attention --text`` and the tiny recipe's
text-only scores, so all of them see the targets training saw. Legend: U tokens.
"""

from __future__ import annotations

from astra.data.config import DataConfig
from astra.text_norm import normalize_text


def normalize_target(text: str, cfg: DataConfig) -> str:
    """The target text of a transcript: normalised if ``cfg.normalize_transcripts``, else stripped."""
    return normalize_text(text) if cfg.normalize_transcripts else text.strip()


def encode_target(text: str, language: str, tokenizer, cfg: DataConfig) -> list[int]:
    """Token ids (U) of a target text, with the ``<lang:xx>`` id first if ``cfg.language_tags``
    (``tokenizer.language_id`` raises ``ValueError`` for a language without a tag)."""
    ids = tokenizer.encode(text)
    if cfg.language_tags:
        ids = [tokenizer.language_id(language)] + ids
    return ids


def prepare_target(text: str, language: str, tokenizer, cfg: DataConfig) -> tuple[str, list[int]]:
    """``(target text, token ids)`` of a raw transcript: :func:`normalize_target` then
    :func:`encode_target`."""
    target = normalize_target(text, cfg)
    return target, encode_target(target, language, tokenizer, cfg)
