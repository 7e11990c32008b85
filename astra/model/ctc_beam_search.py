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


@torch.no_grad()
def ctc_beam_search(
    log_probs: Tensor, lengths: Tensor, blank_id: int, beam: int = 4, lm: BatchLm | None = None,
    min_token_prob: float = MIN_TOKEN_PROB, end_steps: int = END_STEPS, end_margin: float = END_MARGIN,
) -> tuple[list[list[int]], Tensor]:
    """Batched CTC prefix beam search (module doc).

    Args:
        log_probs: ``[B, T', V]`` CTC log-probabilities (blank ``blank_id``); lengths ``[B]``.
        lm: shallow fusion bound to the batch (utterance b scored with its language's LM).
        min_token_prob: posterior a token must reach at some frame to be a candidate.
        end_steps, end_margin: the end detection of a search with a positive length bonus
            (module doc); ``end_margin=inf`` searches until every hypothesis is cut.

    Returns:
        ``(hyps, scores [B])``: the best finished hypothesis of each utterance (token ids,
        no blank) and its score (``log P_ctc`` + the LM terms).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
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
    best_scores = torch.full((batch,), float("-inf"), device=device)
    best: list[list[int]] = [[] for _ in range(batch)]
    live = lengths > 0
    monotone = lm is None or lm.monotone
    far_steps = torch.zeros(batch, dtype=torch.long, device=device)  # end detection: steps in a row far below
    batch_rows = torch.arange(batch, device=device)[:, None]
    for _ in range(frames + 1):  # a hypothesis has at most T' tokens
        dead = scores.isneginf()
        # the hypotheses ending here: log P_ctc(h) (+ LM </s>)
        ends = state.full_score().view(batch, beam) + lm_scores
        if lm is not None:
            ends = ends + lm.end_scores(lm_states).view(batch, beam)
        end_best, end_k = ends.masked_fill(dead, float("-inf")).max(dim=1)
        better = live & (end_best > best_scores)
        for b in torch.nonzero(better).flatten().tolist():
            best[b] = history[b, int(end_k[b])].tolist()
        best_scores = torch.where(better, end_best, best_scores)
        if not monotone:
            far_steps = torch.where(end_best < best_scores - end_margin, far_steps + 1, 0)
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
        live = live & (top_scores[:, 0] > (best_scores if monotone else float("-inf")))
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
    return best, best_scores

