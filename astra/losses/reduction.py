"""The reductions every loss of :mod:`astra.losses` offers (legend: B batch).

Each loss first computes a per-utterance sum ``[B]`` and then reduces it: ``"none"`` keeps
``[B]``, ``"sum"`` adds it up, ``"mean"`` divides that sum by a count (tokens or frames, as
the loss documents).
"""

from __future__ import annotations

from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(loss_name: str, reduction: str) -> None:
    """Raise ``ValueError`` naming ``loss_name`` unless ``reduction`` is in ``REDUCTIONS``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{loss_name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_per_utterance(per_utt: Tensor, reduction: str, count: Tensor) -> Tensor:
    """``per_utt [B]`` -> itself (``"none"``), its sum, or its sum / ``count`` (``"mean"``,
    ``count`` clamped at 1)."""
    if reduction == "none":
        return per_utt
    total = per_utt.sum()
    if reduction == "sum":
        return total
    return total / count.clamp_min(1).to(total.dtype)
