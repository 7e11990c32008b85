"""CTC forced alignment (Viterbi): the best CTC path of each reference, batched on the device.

Legend: B batch, T' frames, V vocabulary, U tokens, S = 2U + 1 states (blank, y_1, blank, ...,
y_U, blank).

CTC compression (:mod:`astra.model.ctc_compress`) reads these labels in training, so every
utterance is merged into exactly its U tokens (and the end frame), whatever the greedy CTC
output would drop. Written here rather than taken from a library: torchaudio's
``forced_align`` is deprecated (removed after 2.9) and aligns one utterance per call on the
CPU, and k2 is an optional backend of astra; this is a batched recursion over T' steps in
plain torch on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor

_NEG = float("-inf")


def ctc_forced_align(
    log_probs: Tensor, lengths: Tensor, tokens: Tensor, token_lens: Tensor, blank_id: int,
) -> tuple[Tensor, Tensor]:
    """The highest-scoring CTC path of each reference.

    Args:
        log_probs: ``[B, T', V]`` frame log-probabilities (no gradient is taken).
        lengths: ``[B]`` valid frames.
        tokens: ``[B, U]`` references (padding ignored; no blank inside).
        token_lens: ``[B]`` valid tokens.
        blank_id: the CTC blank.

    Returns:
        ``(labels [B, T'], feasible [B])``: each frame's label on the best path (the blank or
        the token it emits; ``blank_id`` on padding), and whether a path exists (a reference
        needs U plus its number of repeated neighbours frames). An infeasible row is all blank.
    """
    batch, width, _ = log_probs.shape
    device = log_probs.device
    max_u = tokens.size(1)
    states = 2 * max_u + 1
    with torch.no_grad():
        ext = torch.full((batch, states), blank_id, dtype=torch.long, device=device)
        ext[:, 1::2] = tokens
        # a token state may also be entered from two states back unless it repeats that token
        skip = torch.zeros(batch, states, dtype=torch.bool, device=device)
        skip[:, 3::2] = tokens[:, 1:] != tokens[:, :-1]
        emit = log_probs.detach().float().gather(2, ext[:, None, :].expand(batch, width, states))  # [B, T', S]
        score = torch.full((batch, states), _NEG, device=device)
        score[:, :2] = emit[:, 0, :2]
        moves = torch.zeros(width, batch, states, dtype=torch.uint8, device=device)  # 0 stay, 1 or 2 back
        for t in range(1, width):
            one = torch.cat([score.new_full((batch, 1), _NEG), score[:, :-1]], dim=1)
            two = torch.cat([score.new_full((batch, 2), _NEG), score[:, :-2]], dim=1).masked_fill(~skip, _NEG)
            best, move = torch.stack([score, one, two]).max(dim=0)
            active = (t < lengths)[:, None]  # frozen past each row's last frame
            score = torch.where(active, best + emit[:, t], score)
            moves[t] = torch.where(active, move, 0).to(torch.uint8)
        rows = torch.arange(batch, device=device)
        last, before = score[rows, 2 * token_lens], score[rows, (2 * token_lens - 1).clamp(min=0)]
        state = torch.where((before > last) & (token_lens > 0), 2 * token_lens - 1, 2 * token_lens)
        feasible = torch.maximum(last, torch.where(token_lens > 0, before, last)) > _NEG
        labels = torch.full((batch, width), blank_id, dtype=torch.long, device=device)
        for t in range(width - 1, -1, -1):
            inside = t < lengths
            labels[:, t] = torch.where(inside, ext[rows, state], blank_id)
            state = torch.where(inside, state - moves[t, rows, state].long(), state)
        labels[~feasible] = blank_id
    return labels, feasible
