"""The text a tokenizer is trained on: training transcripts plus deduplicated unpaired text."""

from __future__ import annotations

from astra.data.config import DataConfig
from astra.data.corpus import load_utterances
from astra.data.targets import normalize_target
from astra.data.unpaired_text import load_unpaired_text
from astra.text_norm import normalize_text


def collect_training_text(cfg: DataConfig) -> tuple[dict[str, list[str]], str]:
    """``({language: [sentence, ...]}, report)`` from ``cfg.train_splits`` transcripts (as
    training targets: normalised if ``cfg.normalize_transcripts``) and ``cfg.unpaired_text``
    (normalised; lines occurring in ``cfg.dedup_splits`` transcripts removed and counted)."""
    sentences: dict[str, list[str]] = {}
    lines = []
    has_speech = bool(cfg.corpora or cfg.fleurs)
    if has_speech:
        for utt in load_utterances(cfg, cfg.train_splits):
            text = normalize_target(utt.transcription, cfg)
            if text:
                sentences.setdefault(utt.language, []).append(text)
        for lang in sorted(sentences):
            lines.append(f"{lang}: {len(sentences[lang])} transcripts ({', '.join(cfg.train_splits)})")
    if cfg.unpaired_text:
        exclude: set[str] = set()
        if has_speech and cfg.dedup_splits:
            exclude = {normalize_text(u.transcription) for u in load_utterances(cfg, cfg.dedup_splits)}
        unpaired = load_unpaired_text(cfg.unpaired_text, exclude=exclude, languages=cfg.languages or None)
        for lang, kept in unpaired.sentences.items():
            sentences.setdefault(lang, []).extend(kept)
        lines.append(unpaired.report())
    if not any(sentences.values()):
        where = [*cfg.corpora, *cfg.fleurs, *cfg.unpaired_text]
        raise ValueError(
            f"no training text for the tokenizer in {', '.join(where)} (splits "
            f"{', '.join(cfg.train_splits)}, languages {', '.join(cfg.languages) or 'all'})"
        )
    return sentences, "\n".join(lines)
