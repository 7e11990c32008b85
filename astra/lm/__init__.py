"""n-gram language models over SentencePiece pieces: build (modified Kneser-Ney -> ARPA),
query on tensors, and shallow fusion into beam search (docs/evaluation.md)."""

from __future__ import annotations

from astra.lm.config import LmFusionConfig


def build_fusion(lm_dir, tokenizer, weight: float, length_bonus: float = 0.0, ilm_weight: float = 0.0,
                 languages=None, candidates: int | None = None):
    """:class:`~astra.lm.fusion.LmFusion` of the LM folder ``lm_dir`` for ``tokenizer``
    (``ValueError`` naming the problem: see :func:`astra.lm.lm_dir.load_lm`)."""
    from astra.lm.fusion import LmFusion
    from astra.lm.lm_dir import load_lm

    scorer = load_lm(lm_dir, tokenizer, languages)
    return LmFusion(
        scorer=scorer, weight=weight, eos_id=tokenizer.eos_id, length_bonus=length_bonus, ilm_weight=ilm_weight,
        neutral_ids=(tokenizer.blank_id, tokenizer.sos_id), tag_ids=tuple(tokenizer.language_ids.values()),
        candidates=candidates,
    )


__all__ = ["LmFusionConfig", "build_fusion"]
