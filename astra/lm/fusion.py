"""Shallow fusion of an n-gram LM into beam search: the scorer object the searches take.

A hypothesis' score becomes ``model + lm_weight * log P_LM(piece | history)
+ length_bonus * pieces``, with ``lm_weight * log P_LM(</s> | history)`` added where it
ends (the Aligner's ``<eos>``, the end of the audio for RNN-T). ``ilm_weight`` (Aligner
only) subtracts ``ilm_weight * log P_ILM(piece | history)``, the Aligner decoder run on
zeroed encoder frames (internal-LM estimation as done for attention decoders: "Internal
Language Model Estimation for Domain-Adaptive End-to-End Speech Recognition",
arXiv:2011.01991).

The LM only re-ranks what the model proposes (the pre-beam, as ESPnet's ``pre_beam``): per
hypothesis and step it scores the ``ceil(2 * beam)`` tokens the model finds most likely
(``LmFusion.candidates`` to change it; with CTC the CTC pre-beam's tokens) plus ``</s>``;
every other token is dropped. So a token the model ranks below the pre-beam is never
emitted, even if the LM likes it: at ``candidates >= V`` the search equals scoring every
token. Legend: B batch, K beam, N = B * K rows, C candidates per row, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from astra.lm.ngram_scorer import NgramScorer

LM_CANDIDATES_PER_BEAM = 2.0  # default pre-beam: tokens the LM scores per hypothesis, x beam


@dataclass
class LmFusion:
    """An :class:`NgramScorer` (one LM per language) with the fusion weights.

    ``neutral_ids``: tokens the LM does not see (score 0, state kept), e.g. ``<blank>`` and
    ``<sos>``; ``tag_ids``: ``<lang:xx>`` tags, free (0) in the ``<s>`` state and ``-inf``
    after it (a tag only comes first); ``eos_id``: the token carrying ``</s>``.
    ``candidates``: the pre-beam, see :meth:`pre_beam` and the module doc.
    """

    scorer: NgramScorer
    weight: float
    eos_id: int
    length_bonus: float = 0.0
    ilm_weight: float = 0.0
    neutral_ids: tuple[int, ...] = ()
    tag_ids: tuple[int, ...] = field(default_factory=tuple)
    candidates: int | None = None

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"LM weight must be >= 0, got {self.weight}")
        if self.ilm_weight < 0:
            raise ValueError(f"ILM weight must be >= 0, got {self.ilm_weight}")
        if self.candidates is not None and self.candidates < 1:
            raise ValueError(f"LM candidates must be >= 1, got {self.candidates}")

    def pre_beam(self, beam: int) -> int:
        """Tokens per hypothesis the LM scores in a beam of ``beam``: ``candidates``, default
        ``ceil(LM_CANDIDATES_PER_BEAM * beam)``."""
        return self.candidates if self.candidates is not None else math.ceil(LM_CANDIDATES_PER_BEAM * beam)

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

    def __post_init__(self):
        def mask(values):  # [V] True at ``values`` (a lookup per candidate is cheaper than ``isin``)
            if not values:
                return None
            out = torch.zeros(self.fusion.scorer.vocab_size, dtype=torch.bool, device=self.starts.device)
            out[list(values)] = True
            return out

        self._neutral, self._tags = mask(self.fusion.neutral_ids), mask(self.fusion.tag_ids)

    @property
    def ilm_weight(self) -> float:
        return self.fusion.ilm_weight

    @property
    def monotone(self) -> bool:
        return self.fusion.monotone

    @property
    def weight(self) -> float:
        return self.fusion.weight

    @property
    def eos_id(self) -> int:
        return self.fusion.eos_id

    def pre_beam(self, beam: int) -> int:
        return self.fusion.pre_beam(beam)

    def initial_states(self, repeat: int = 1) -> Tensor:
        """``[B * repeat]`` states, rows ``b * repeat + k``."""
        return self.starts.repeat_interleave(repeat)

    def candidate_scores(self, states: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(fused [N, C], next states [N, C])`` of the candidate tokens ``tokens [N, C]``
        after ``states [N]`` (one lookup each, :meth:`NgramScorer.score_tokens`).

        ``fused = weight * ln P(token | state) + length_bonus``; at ``eos_id`` ``weight * ln
        P(</s> | state)`` (no bonus); a neutral id scores 0 and keeps the state; a language
        tag scores 0 in an ``<s>`` state and ``-inf`` after it (0 everywhere at weight 0)."""
        f = self.fusion
        lnp, nxt = f.scorer.score_tokens(states, tokens)
        if f.weight == 0:  # no LM term (0 * -inf would be NaN): only the bonus
            fused = torch.zeros(tokens.shape, device=tokens.device)
        else:
            fused = lnp.mul_(f.weight)
        if f.length_bonus:
            fused = fused.add_((tokens != f.eos_id) * f.length_bonus)
        if self._neutral is not None:
            neutral = self._neutral[tokens]
            fused = fused.masked_fill(neutral, 0.0)
            nxt = torch.where(neutral, states[:, None], nxt)
        if self._tags is not None:
            tag = self._tags[tokens]
            at_start = (states[:, None] == self.starts[None, :]).any(dim=1)
            tag_score = 0.0 if f.weight == 0 else torch.where(at_start, 0.0, float("-inf"))[:, None]
            fused = torch.where(tag, tag_score, fused)
        return fused, nxt

    def end_scores(self, states: Tensor) -> Tensor:
        """``[N]``: ``weight * ln P(</s> | state)``."""
        f = self.fusion
        if f.weight == 0:
            return torch.zeros(states.numel(), device=states.device)
        eos = torch.full((states.numel(), 1), f.eos_id, dtype=torch.long, device=states.device)
        return f.weight * f.scorer.score_tokens(states, eos)[0][:, 0]
