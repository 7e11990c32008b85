"""Step -> value schedules: learning rate, loss-weight ramp factor, identity-attention warm-up.

Every schedule is a pure function of the optimizer step (0-based), so a resumed run gets
exactly the values of an uninterrupted one from the step counter alone. The weights that
the ramps scale are looked up in :func:`astra.train.objective.loss_weights`.
"""

from __future__ import annotations

import math

from astra.train.sections import LossConfig, OptimConfig


def learning_rate(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Learning rate of optimizer step ``step``: linear warm-up to ``optim.lr``, then decay."""
    peak = optim.lr
    warm = optim.warmup_steps
    if warm > 0 and step < warm:
        return peak * (step + 1) / warm
    floor = peak * optim.min_lr_ratio
    if optim.decay == "constant":
        return peak
    if optim.decay == "inverse_sqrt":
        return max(floor, peak * math.sqrt(max(warm, 1) / (step + 1)))
    span = max(1, max_steps - warm)
    progress = min(1.0, (step - warm) / span)
    if optim.decay == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    if optim.decay == "cosine":
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"optim.decay={optim.decay!r} is unknown")


def ramp_factor(step: int, start: int, steps: int) -> float:
    """0 before ``start``, then linear to 1 over ``steps`` (1 at once when steps == 0)."""
    if step < start:
        return 0.0
    if steps <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / steps)


def identity_attention(step: int, losses: LossConfig) -> bool:
    """Whether self-attention is fixed to identity at ``step`` (the warm-up of "The Conformer
    Encoder May Reverse the Time Dimension", arXiv:2410.00680)."""
    return step < losses.identity_attention_steps
