"""Aligner-Encoder loss: frame-wise cross entropy on the first U+1 encoder frames.

From "Aligner-Encoders: Self-Attention Transformers Can Be Self-Transducers"
(arXiv:2502.05232).

Legend: B batch, T' encoder frames, L logit frames (>= the longest kept target), U tokens,
V vocabulary. Targets are y_1..y_U followed by ``<eos>`` (length U+1, "EOS counts in U").
Frame i (0-based) is scored against target i for i < U+1 only: later frames get neither loss
nor gradient. An example whose target is longer than its encoder output (U+1 > T') cannot be
learned; it is dropped from the loss and reported in the returned ``kept`` mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from astra.losses.reduction import check_reduction, reduce_per_utterance


def aligner_loss(
    logits: Tensor,
    targets: Tensor,
    target_lens: Tensor,
    frame_lens: Tensor,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    position_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Masked cross entropy of the Aligner.

    Args:
        logits: ``[B, L, V]`` joint outputs for encoder frames 0..L-1 (any float dtype; the
            loss is computed in float32).
        targets: ``[B, L']`` int64 targets with ``<eos>`` appended, padded (any value).
        target_lens: ``[B]`` target lengths U+1 (including ``<eos>``), each >= 1.
        frame_lens: ``[B]`` valid encoder frames T'.
        label_smoothing: as in :func:`torch.nn.functional.cross_entropy`.
        reduction: ``"mean"`` (per kept target token), ``"sum"``, or ``"none"`` (``[B]``,
            0 for dropped examples).
        position_weights: optional ``[B, L'']`` (``L'' >= `` the longest kept target) float
            weight of each target position's cross entropy (e.g. 1 on masked input tokens,
            0 elsewhere: the unpaired-text loss); ``"mean"`` then divides by the summed
            weights of the scored positions instead of their number.
    Returns:
        ``(loss, kept)``: the loss and a ``[B]`` bool mask of examples that were scored
        (``target_lens <= frame_lens``). With no kept example the loss is 0 (still attached
        to ``logits`` so ``backward`` works).
    Raises:
        ValueError: on a reduction name, a target length < 1, or ``L`` shorter than a kept
            target.
    """
    check_reduction("aligner_loss", reduction)
    if logits.dim() != 3 or targets.dim() != 2:
        raise ValueError(
            f"aligner_loss: logits must be [B, L, V] and targets [B, L'], got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    batch = logits.size(0)
    if targets.size(0) != batch or tuple(target_lens.shape) != (batch,) or tuple(frame_lens.shape) != (batch,):
        raise ValueError(
            f"aligner_loss: batch sizes differ: logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, "
            f"target_lens {tuple(target_lens.shape)}, frame_lens {tuple(frame_lens.shape)} (want [B={batch}])"
        )
    if (target_lens < 1).any():
        raise ValueError("aligner_loss: every target needs at least <eos> (target_lens >= 1)")
    kept = target_lens <= frame_lens
    length = logits.size(1)
    if kept.any() and int(target_lens[kept].max()) > min(length, targets.size(1)):
        raise ValueError(
            f"aligner_loss: {length} logit frames / {targets.size(1)} target columns do not cover the "
            f"longest kept target ({int(target_lens[kept].max())})"
        )
    positions = torch.arange(length, device=logits.device)
    mask = (positions[None, :] < target_lens[:, None]) & kept[:, None]  # [B, L]
    padded = torch.zeros(targets.size(0), length, dtype=torch.long, device=targets.device)
    width = min(length, targets.size(1))
    padded[:, :width] = targets[:, :width]
    padded = padded.masked_fill(~mask, -100)
    per_frame = F.cross_entropy(
        logits.float().transpose(1, 2), padded, ignore_index=-100, label_smoothing=label_smoothing, reduction="none"
    )  # [B, L], 0 where ignored
    if position_weights is None:
        return reduce_per_utterance(per_frame.sum(dim=1), reduction, mask.sum()), kept
    if position_weights.dim() != 2 or position_weights.size(0) != batch:
        raise ValueError(f"aligner_loss: position_weights must be [B={batch}, L], got {tuple(position_weights.shape)}")
    weights = torch.zeros(batch, length, dtype=per_frame.dtype, device=per_frame.device)
    cols = min(length, position_weights.size(1))
    weights[:, :cols] = position_weights[:, :cols].to(per_frame.dtype)
    weights = weights * mask
    return reduce_per_utterance((per_frame * weights).sum(dim=1), reduction, weights.sum()), kept
