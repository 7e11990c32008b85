"""Aligner rescoring of the CTC beam's n-best (``ctc_beam_rescore``).

Legend: B batch, N hypotheses (all utterances' n-best lists, flattened), U tokens.

The CTC prefix beam search (:func:`astra.model.ctc_beam_search.ctc_beam_nbest`, with LM
shallow fusion) proposes the ``beam`` best hypotheses h of each utterance; the Aligner
decoder then scores each of them teacher-forced, ``log P_aligner(h, <eos> | x)``, and the
hypothesis with the best

    (1 - w) log P_aligner(h) + w log P_ctc(h) + LM terms(h)

wins (``w``: the ``--ctc-weight``; 1 gives back the CTC beam's own choice). This is the
second pass of "attention rescoring" (WeNet, "Unified Streaming and Non-streaming Two-pass
End-to-end Model for Speech Recognition", arXiv:2012.05481) with the Aligner as the
rescoring decoder: the search is the CTC head's, whose hypotheses keep their length
(unlike the joint Aligner + CTC search, which ends hypotheses where the Aligner runs out of
frames), and the Aligner decoder, trained on the unpaired text as well, reorders them.

With CTC compression the Aligner reads the upper layers run on the frames merged along
each hypothesis' own CTC forced alignment (``AstraModel.aligner_log_likelihoods``), so every
hypothesis gets its U + 1 frames, as the reference does in training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astra.model.ctc_beam_search import CtcHypothesis


def flatten_nbest(nbest: list[list[CtcHypothesis]], device) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows [N], tokens [N, U] (0-padded, U >= 1), token_lens [N])``: every hypothesis of
    every utterance; ``rows`` the utterance each comes from."""
    flat = [(b, h.tokens) for b, found in enumerate(nbest) for h in found]
    width = max([len(t) for _, t in flat] + [1])
    tokens = torch.zeros(len(flat), width, dtype=torch.long)
    for i, (_, ids) in enumerate(flat):
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    rows = torch.tensor([b for b, _ in flat], dtype=torch.long)
    lens = torch.tensor([len(t) for _, t in flat], dtype=torch.long)
    return rows.to(device), tokens.to(device), lens.to(device)


def pick_rescored(nbest: list[list[CtcHypothesis]], aligner_scores: list[float], ctc_weight: float) -> list[list[int]]:
    """The best hypothesis of each utterance under the module doc's score.

    Args:
        nbest: per utterance its CTC beam hypotheses (``ctc_score``, ``lm_score``).
        aligner_scores: ``log P_aligner`` of every hypothesis, flattened in ``nbest`` order
            (``-inf``: the Aligner cannot read it; with ``ctc_weight`` 1 it is not used).
        ctc_weight: ``w`` in [0, 1].

    Returns:
        token ids per utterance (``[]`` for an utterance without hypotheses).
    """
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    if len(aligner_scores) != sum(len(found) for found in nbest):
        raise ValueError(f"{len(aligner_scores)} Aligner scores for {sum(len(f) for f in nbest)} hypotheses")
    out, start = [], 0
    for found in nbest:
        aligner = aligner_scores[start : start + len(found)]
        start += len(found)
        if ctc_weight == 1.0:  # the CTC beam's own order (0 * -inf would be nan)
            aligner = [0.0] * len(found)
        scores = [(1.0 - ctc_weight) * a + ctc_weight * h.ctc_score + h.lm_score
                  for h, a in zip(found, aligner, strict=True)]
        # every score -inf (the Aligner can read none of them): the CTC beam's best
        best = max(range(len(found)), key=lambda i: scores[i]) if any(s > float("-inf") for s in scores) else 0
        out.append(found[best].tokens if found else [])
    return out
