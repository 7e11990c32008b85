"""Consistency of the Aligner's token-synchronous frames: speech frame u against text frame u.

Legend: B batch, L frames of the speech path's top layer (T', or fewer with CTC compression),
U tokens, D model dim.

The Aligner decoder reads frame u of the shared encoder's output for token u, on the speech
path (whose self-attention moved token u's evidence there: "Aligner-Encoders: Self-Attention
Transformers Can Be Self-Transducers", arXiv:2502.05232) and on the text path (which reads
``y_1..y_U, <eos>``, one frame per token). So at the top the two paths are aligned for free,
and their frames can be compared position by position, without the RNN-T lattice that ASTRA's
consistency needs below the self-transducing layers ("ASTRA: Aligning Speech and Text
Representations for ASR without Sampling", arXiv:2406.06664)::

    loss = sum_b sum_{u <= U_b} c(H[b, u], G[b, u]) / sum_b (U_b + 1)
    c(h, g) = mean_d |h_d - g_d|          (distance="mae")
            = mean_d (h_d - g_d) ** 2     (distance="mse")

``H`` the speech path's top frames, ``G`` the text path's (the last compared position is
``<eos>``'s). Utterances with fewer frames than U + 1 are left out, as the Aligner's loss
leaves them out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astra.losses.consistency_choices import CONSISTENCY_DISTANCES


def aligned_consistency(
    speech: Tensor, speech_lens: Tensor, text: Tensor, text_lens: Tensor, distance: str = "mae"
) -> tuple[Tensor, Tensor]:
    """Summed position-wise cost between ``speech [B, L, D]`` (``speech_lens [B]``) and
    ``text [B, U+1, D]`` (``text_lens [B]`` = U_b + 1), and the number of compared positions.

    Returns ``(loss, count)``: the scalar sum of ``c(speech[b, u], text[b, u])`` over
    ``u < text_lens[b]`` for the utterances with ``text_lens[b] <= speech_lens[b]``
    (differentiable in both inputs; detach one side to make it a target), and that number of
    positions as a 0-dim int64 tensor.
    """
    if distance not in CONSISTENCY_DISTANCES:
        raise ValueError(f"distance must be one of {CONSISTENCY_DISTANCES}, got {distance!r}")
    if speech.dim() != 3 or text.dim() != 3 or speech.size(-1) != text.size(-1) or speech.size(0) != text.size(0):
        raise ValueError(f"speech [B, L, D] and text [B, U+1, D] must agree in B and D: got "
                         f"{tuple(speech.shape)} and {tuple(text.shape)}")
    width = text.size(1)
    kept = text_lens <= speech_lens
    valid = (torch.arange(width, device=text.device)[None, :] < text_lens[:, None]) & kept[:, None]  # [B, U+1]
    frames = speech[:, :width]
    if frames.size(1) < width:  # a batch whose longest transcript is longer than its frames
        frames = torch.nn.functional.pad(frames, (0, 0, 0, width - frames.size(1)))
    diff = frames - text
    cost = diff.abs().mean(-1) if distance == "mae" else diff.pow(2).mean(-1)  # [B, U+1]
    return torch.where(valid, cost, cost.new_zeros(())).sum(), valid.sum()
