"""Shallow fusion of an n-gram LM into beam search: the scorer object the searches take.

A hypothesis' score becomes ``model + lm_weight * log P_LM(piece | history)
+ length_bonus * pieces``, with ``lm_weight * log P_LM(</s> | history)`` added where it
ends (the Aligner's ``<eos>``, the end of the audio for RNN-T). ``ilm_weight`` (Aligner
only) subtracts ``ilm_weight * log P_ILM(piece | history)``, the Aligner decoder run on
zeroed encoder frames (internal-LM estimation as done for attention decoders: "Internal
Language Model Estimation for Domain-Adaptive End-to-End Speech Recognition",
arXiv:2011.01991). Legend: B batch, K beam, N = B * K rows, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from astra.lm.ngram_scorer import NgramScorer


@dataclass
class LmFusion:
    """An :class:`NgramScorer` (one LM per language) with the fusion weights.

    ``neutral_ids``: tokens the LM does not see (score 0, state kept), e.g. ``<blank>`` and
    ``<sos>``; ``tag_ids``: ``<lang:xx>`` tags, free (0) in the ``<s>`` state and ``-inf``
    after it (a tag only comes first); ``eos_id``: the column carrying ``</s>``.
    """

    scorer: NgramScorer
    weight: float
    eos_id: int
    length_bonus: float = 0.0
    ilm_weight: float = 0.0
    neutral_ids: tuple[int, ...] = ()
    tag_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"LM weight must be >= 0, got {self.weight}")
        if self.ilm_weight < 0:
            raise ValueError(f"ILM weight must be >= 0, got {self.ilm_weight}")

    @property
    def monotone(self) -> bool:
        """Whether fused scores only decrease as a hypothesis grows (no bonus, no ILM term)."""
        return self.length_bonus <= 0 and self.ilm_weight == 0

    def for_batch(self, languages: Sequence[str], device) -> BatchLm:
        """The fusion bound to a batch: utterance b is scored with the LM of ``languages[b]``.
        Raises ``ValueError`` for a language without an LM."""
        if self.scorer.device != torch.device(device):
            self.scorer.to(device)
        return BatchLm(self, self.scorer.start(list(languages)))


@dataclass
class BatchLm:
    """:class:`LmFusion` for one batch; ``starts [B]`` are the utterances' ``<s>`` states."""

    fusion: LmFusion
    starts: Tensor

    @property
    def ilm_weight(self) -> float:
        return self.fusion.ilm_weight

    @property
    def monotone(self) -> bool:
        return self.fusion.monotone

    def initial_states(self, repeat: int = 1) -> Tensor:
        """``[B * repeat]`` states, rows ``b * repeat + k``."""
        return self.starts.repeat_interleave(repeat)

    def token_scores(self, states: Tensor) -> Tensor:
        """``[N, V]`` fused LM scores of every next token: ``weight * ln P + length_bonus``;
        the ``eos_id`` column is ``weight * ln P(</s>)`` (no bonus)."""
        f = self.fusion
        if f.weight == 0:  # no LM term (0 * -inf would be NaN): only the bonus
            out = torch.full((states.numel(), f.scorer.vocab_size), f.length_bonus, device=states.device)
            out[:, f.eos_id] = 0.0
            if f.neutral_ids:
                out[:, list(f.neutral_ids)] = 0.0
            return out
        lm = f.scorer.score_all(states)
        end = lm[:, f.eos_id].clone()
        out = f.weight * lm + f.length_bonus
        out[:, f.eos_id] = f.weight * end
        if f.neutral_ids:
            out[:, list(f.neutral_ids)] = 0.0
        if f.tag_ids:
            at_start = (states[:, None] == self.starts[None, :]).any(dim=1)
            tags = torch.where(at_start, 0.0, float("-inf"))
            out[:, list(f.tag_ids)] = tags[:, None]
        return out

    def end_scores(self, states: Tensor) -> Tensor:
        """``[N]``: ``weight * ln P(</s> | state)``."""
        f = self.fusion
        if f.weight == 0:
            return torch.zeros(states.numel(), device=states.device)
        eos = torch.full((states.numel(), 1), f.eos_id, dtype=torch.long, device=states.device)
        return f.weight * f.scorer.score_tokens(states, eos)[0][:, 0]

    def advance(self, states: Tensor, tokens: Tensor) -> Tensor:
        """``[N]`` states after ``tokens [N]`` (a token the LM does not know keeps the state)."""
        return self.fusion.scorer.score_tokens(states, tokens[:, None])[1][:, 0]
