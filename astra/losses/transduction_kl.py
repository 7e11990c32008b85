"""Lattice-guided self-transduction: an astra extension, not from a paper.

It builds on the Aligner of "Aligner-Encoders: Self-Attention Transformers Can Be
Self-Transducers" (arXiv:2502.05232).

Legend: B batch, H heads, T' encoder frames, U tokens.

The RNN-T alignment head's emit-arc occupancy ``gamma[b, u, t]`` (k2's ``px_grad``: the
posterior of emitting token u+1 at frame t; each valid row sums to 1) says which audio frames
carry token u. An Aligner must move that information to output position u, so the attention
row u of its transducing layer should look at those frames. The loss is

    KL(gamma[b, u, :] || A[b, u, :]),   A = head-averaged attention weights,

summed over the valid tokens u < min(U_b, T'_b); gamma is a constant.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astra.losses.reduction import check_reduction, reduce_per_utterance


def lattice_attention_kl(
    attention: Tensor,
    occupancy: Tensor,
    token_lens: Tensor,
    frame_lens: Tensor,
    reduction: str = "mean",
    eps: float = 1e-8,
) -> Tensor:
    """KL from the lattice occupancy to the attention rows of the first U query positions.

    Args:
        attention: ``[B, H, T', T']`` softmax weights (rows = queries) of one layer.
        occupancy: ``[B, U, T'']`` emit occupancy with T'' >= T' (k2's ``px_grad`` of the
            regular lattice has T'+1 columns; extra columns are ignored); detached here.
        token_lens: ``[B]`` U_b; frame_lens: ``[B]`` T'_b.
        reduction: ``"mean"`` (per scored token), ``"sum"``, ``"none"`` (``[B]``).
    Returns:
        The loss (float32).
    """
    check_reduction("lattice_attention_kl", reduction)
    if attention.dim() != 4 or occupancy.dim() != 3:
        raise ValueError(
            f"lattice_attention_kl: attention must be [B, H, T', T'] and occupancy [B, U, T'], got "
            f"{tuple(attention.shape)} and {tuple(occupancy.shape)}"
        )
    batch = attention.size(0)
    if occupancy.size(0) != batch or tuple(token_lens.shape) != (batch,) or tuple(frame_lens.shape) != (batch,):
        raise ValueError(
            f"lattice_attention_kl: batch sizes differ: attention {tuple(attention.shape)}, occupancy "
            f"{tuple(occupancy.shape)}, token_lens {tuple(token_lens.shape)}, frame_lens {tuple(frame_lens.shape)}"
        )
    frames = attention.size(-1)
    if occupancy.size(2) < frames:
        raise ValueError(f"lattice_attention_kl: occupancy has {occupancy.size(2)} frames < {frames}")
    rows = min(occupancy.size(1), attention.size(2))
    gamma = occupancy.detach().float()[:, :rows, :frames]
    valid_t = torch.arange(frames, device=gamma.device)[None, None, :] < frame_lens[:, None, None]
    gamma = gamma.masked_fill(~valid_t, 0.0)
    gamma = gamma / gamma.sum(dim=-1, keepdim=True).clamp_min(eps)
    attn = attention.float().mean(dim=1)[:, :rows]  # [B, rows, T']
    terms = torch.where(gamma > 0, gamma * (gamma.clamp_min(eps).log() - attn.clamp_min(eps).log()), 0.0)
    per_row = terms.sum(dim=-1)  # [B, rows]
    limit = torch.minimum(token_lens, frame_lens)
    valid_u = torch.arange(rows, device=gamma.device)[None, :] < limit[:, None]
    return reduce_per_utterance((per_row * valid_u).sum(dim=1), reduction, valid_u.sum())
