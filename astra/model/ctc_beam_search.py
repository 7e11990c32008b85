"""CTC prefix beam search, optionally with n-gram LM shallow fusion (the CTC-only decoder).

Label-synchronous, batched over utterances and hypotheses: step i extends each of the
``beam`` live hypotheses h of an utterance by one token c and scores ``psi(h + c)``, the CTC
prefix probability of :class:`~astra.model.ctc_prefix_score.CtcPrefixScorer` (all paths
whose labels start with h + c); a hypothesis ends with ``log P_ctc(h)``, the probability of
h as the complete output. With an LM, ``lm_weight log P_LM(c | h) + length_bonus`` per token
and ``lm_weight log P_LM(</s> | h)`` at the end (:mod:`astra.lm.fusion`). Prefix scores and
LM log-probs only decrease as h grows, so an utterance stops as soon as no live hypothesis
can beat its best finished one. A positive length bonus breaks that bound (a hypothesis can
gain), so then an utterance stops by ESPnet's end detection (``end_detect``): when for
``end_steps`` steps in a row the best hypothesis ending at that step scored more than
``end_margin`` below the best finished one (default: 3 steps, ln 1e10 = 23 nats), or when every
hypothesis is cut. Without it a search with a bonus ran on until the hypotheses ran out of
frames: T' steps, not U.

Distinct hypotheses are distinct label sequences, so unlike a frame-synchronous CTC beam
search (which merges the alignments of a prefix) nothing needs merging, and with a wide
enough beam and every token as a candidate the search is exact (tests/test_ctc_beam_search.py
checks it against enumeration).

Candidates (the pre-beam): a token is tried for an utterance when its CTC posterior reaches
``min_token_prob`` at one of its frames (a token the head never makes likely anywhere cannot
be in a good hypothesis); ``min_token_prob=0``: every token.

Legend: B batch, K beam, N = B * K hypothesis rows, T' frames, V vocabulary, C candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from astra.lm.fusion import BatchLm
from astra.model.ctc_prefix_score import CtcPrefixScorer

MIN_TOKEN_PROB = 1e-4
END_STEPS = 3  # end detection (module doc): steps in a row ...
END_MARGIN = math.log(1e10)  # ... whose best ending is this far below the best finished one


def utterance_candidates(log_probs: Tensor, lengths: Tensor, blank_id: int, min_token_prob: float) -> Tensor:
    """``[B, C]`` the candidate tokens of each utterance (module doc), padded with
    ``blank_id`` (which the prefix scorer scores ``-inf``); C >= 1.

    Args:
        log_probs: ``[B, T', V]`` CTC log-probabilities; lengths ``[B]`` valid frames.
    """
    frames = log_probs.size(1)
    valid = torch.arange(frames, device=log_probs.device)[None, :] < lengths.to(log_probs.device)[:, None]
    peak = log_probs.masked_fill(~valid[:, :, None], float("-inf")).amax(dim=1)  # [B, V]
    if min_token_prob > 0:
        keep = peak >= math.log(min_token_prob)
    else:
        keep = torch.ones_like(peak, dtype=torch.bool)
    keep[:, blank_id] = False
    size = max(int(keep.sum(dim=1).max()), 1)
    index = peak.masked_fill(~keep, float("-inf")).topk(size, dim=1).indices
    return torch.where(keep.gather(1, index), index, blank_id)


@dataclass
class CtcHypothesis:
    """A finished hypothesis of :func:`ctc_beam_nbest`: token ids (no blank), ``log P_ctc``
    of the ids as the complete output, and the LM part of its search score (``lm_weight
    log P_LM`` + length bonuses + the ``</s>`` term; 0 without an LM)."""

    tokens: list[int]
    ctc_score: float
    lm_score: float

    @property
    def score(self) -> float:
        """The search score (CTC + LM)."""
        return self.ctc_score + self.lm_score


class _Finished:
    """The ``nbest`` best finished hypotheses of each of ``batch`` utterances (tensors, best
    first; -inf scores where fewer were found)."""

    def __init__(self, batch: int, nbest: int, max_len: int, device) -> None:
        self.scores = torch.full((batch, nbest), float("-inf"), device=device)  # search scores, sorted
        self.parts = torch.zeros(batch, nbest, 2, device=device)  # (ctc, lm) of each
        self.tokens = torch.zeros(batch, nbest, max_len, dtype=torch.long, device=device)
        self.lens = torch.zeros(batch, nbest, dtype=torch.long, device=device)

    @property
    def bound(self) -> Tensor:
        """``[B]`` the score a new hypothesis must beat to enter (the n-th best; -inf until full)."""
        return self.scores[:, -1]

    @property
    def best(self) -> Tensor:
        return self.scores[:, 0]

    def offer(self, live: Tensor, ends: Tensor, ctc: Tensor, lm: Tensor, history: Tensor) -> None:
        """Merge in the hypotheses ending here (``ends [B, K]`` their scores, ``ctc``/``lm``
        its two parts, ``history [B, K, i]`` their ids) of the ``live [B]`` utterances."""
        batch, beam, length = history.shape
        ends = ends.masked_fill(~live[:, None], float("-inf"))
        nbest = self.scores.size(1)
        scores = torch.cat([self.scores, ends], dim=1)  # [B, N + K]
        parts = torch.cat([self.parts, torch.stack([ctc, lm], dim=2)], dim=1)
        new = torch.zeros(batch, beam, self.tokens.size(2), dtype=torch.long, device=history.device)
        new[:, :, :length] = history
        tokens = torch.cat([self.tokens, new], dim=1)
        lens = torch.cat([self.lens, self.lens.new_full((batch, beam), length)], dim=1)
        self.scores, index = scores.topk(nbest, dim=1)
        self.parts = parts.gather(1, index[:, :, None].expand(-1, -1, 2))
        self.tokens = tokens.gather(1, index[:, :, None].expand(-1, -1, tokens.size(2)))
        self.lens = lens.gather(1, index)

    def hypotheses(self) -> list[list[CtcHypothesis]]:
        found = self.scores.isfinite().tolist()
        tokens, lens, parts = self.tokens.tolist(), self.lens.tolist(), self.parts.tolist()
        return [
            [CtcHypothesis(tokens[b][n][: lens[b][n]], *parts[b][n]) for n in range(len(row)) if row[n]]
            for b, row in enumerate(found)
        ]


@torch.no_grad()
def ctc_beam_search(
    log_probs: Tensor, lengths: Tensor, blank_id: int, beam: int = 4, lm: BatchLm | None = None,
    min_token_prob: float = MIN_TOKEN_PROB, end_steps: int = END_STEPS, end_margin: float = END_MARGIN,
) -> tuple[list[list[int]], Tensor]:
    """Batched CTC prefix beam search (module doc): the best hypothesis of each utterance.

    Args:
        log_probs: ``[B, T', V]`` CTC log-probabilities (blank ``blank_id``); lengths ``[B]``.
        lm: shallow fusion bound to the batch (utterance b scored with its language's LM).
        min_token_prob: posterior a token must reach at some frame to be a candidate.
        end_steps, end_margin: the end detection of a search with a positive length bonus
            (module doc); ``end_margin=inf`` searches until every hypothesis is cut.

    Returns:
        ``(hyps, scores [B])``: the best finished hypothesis of each utterance (token ids,
        no blank; ``[]`` and -inf for an utterance without frames) and its score
        (``log P_ctc`` + the LM terms).
    """
    nbest = ctc_beam_nbest(log_probs, lengths, blank_id, beam, 1, lm, min_token_prob, end_steps, end_margin)
    hyps = [found[0].tokens if found else [] for found in nbest]
    scores = torch.tensor([found[0].score if found else float("-inf") for found in nbest], device=log_probs.device)
    return hyps, scores


@torch.no_grad()
def ctc_beam_nbest(
    log_probs: Tensor, lengths: Tensor, blank_id: int, beam: int = 4, nbest: int = 4, lm: BatchLm | None = None,
    min_token_prob: float = MIN_TOKEN_PROB, end_steps: int = END_STEPS, end_margin: float = END_MARGIN,
) -> list[list[CtcHypothesis]]:
    """Batched CTC prefix beam search keeping the ``nbest`` best finished hypotheses of each
    utterance (best first; fewer where fewer were found; none for an utterance without
    frames). Arguments as :func:`ctc_beam_search`; the search runs until no live hypothesis
    can beat the ``nbest``-th finished one (or by end detection with a positive bonus)."""
    if beam < 1 or nbest < 1:
        raise ValueError(f"beam and nbest must be >= 1, got {beam} and {nbest}")
    if not 0.0 <= min_token_prob < 1.0:
        raise ValueError(f"min_token_prob must be in [0, 1), got {min_token_prob}")
    if end_steps < 1 or not end_margin >= 0:
        raise ValueError(f"end_steps must be >= 1 and end_margin >= 0, got {end_steps} and {end_margin}")
    batch, frames, _ = log_probs.shape
    device = log_probs.device
    lengths = lengths.to(device)
    rows = torch.arange(batch, device=device).repeat_interleave(beam)  # [N]
    scorer = CtcPrefixScorer(log_probs, lengths, blank_id, rows)
    state = scorer.initial_state()
    tokens = utterance_candidates(log_probs.float(), lengths, blank_id, min_token_prob)[rows]  # [N, C]
    width = tokens.size(1)
    scores = torch.full((batch, beam), float("-inf"), device=device)  # search score of the live ones
    scores[:, 0] = 0.0  # one live (empty) hypothesis per utterance
    lm_scores = torch.zeros(batch, beam, device=device)  # the LM part of ``scores``
    lm_states = None if lm is None else lm.initial_states(beam)
    history = torch.zeros(batch, beam, 0, dtype=torch.long, device=device)
    finished = _Finished(batch, nbest, frames + 1, device)
    live = lengths > 0
    monotone = lm is None or lm.monotone
    far_steps = torch.zeros(batch, dtype=torch.long, device=device)  # end detection: steps in a row far below
    batch_rows = torch.arange(batch, device=device)[:, None]
    for _ in range(frames + 1):  # a hypothesis has at most T' tokens
        dead = scores.isneginf()
        # the hypotheses ending here: log P_ctc(h) (+ LM </s>)
        end_ctc = state.full_score().view(batch, beam)
        end_lm = lm_scores if lm is None else lm_scores + lm.end_scores(lm_states).view(batch, beam)
        ends = (end_ctc + end_lm).masked_fill(dead, float("-inf"))
        finished.offer(live, ends, end_ctc, end_lm, history)
        if not monotone:
            far_steps = torch.where(ends.amax(dim=1) < finished.best - end_margin, far_steps + 1, 0)
            live = live & (far_steps < end_steps)
        # the extensions h + c: psi(h + c) (+ LM c)
        ext_ctc = scorer.scores(state, tokens)  # [N, C]
        ext_lm = lm_scores.view(-1, 1).expand_as(ext_ctc)
        if lm is not None:
            step, next_lm = lm.candidate_scores(lm_states, tokens)
            ext_lm = ext_lm + step
        total = (ext_ctc + ext_lm).masked_fill(dead.view(-1, 1), float("-inf")).view(batch, -1)
        k = min(beam, total.size(1))
        top_scores, top_index = total.topk(k, dim=1)  # [B, k]
        if k < beam:  # fewer extensions than the beam: the other rows are dead
            top_scores = torch.cat([top_scores, top_scores.new_full((batch, beam - k), float("-inf"))], dim=1)
            top_index = torch.cat([top_index, top_index[:, :1].expand(batch, beam - k)], dim=1)
        live = live & (top_scores[:, 0] > (finished.bound if monotone else float("-inf")))
        if not bool(live.any()):
            break
        parents = top_index // width
        chosen = tokens.view(batch, -1).gather(1, top_index)  # [B, K]
        history = torch.cat([history[batch_rows, parents], chosen[:, :, None]], dim=2)
        scores = top_scores
        lm_scores = ext_lm.reshape(batch, -1).gather(1, top_index)
        state = scorer.extend(state, (batch_rows * beam + parents).flatten(), chosen.flatten())
        if lm is not None:
            lm_states = next_lm.view(batch, -1).gather(1, top_index).flatten()
    return finished.hypotheses()
