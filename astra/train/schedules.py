"""Step -> value schedules: learning rate, loss-weight ramps, identity-attention warm-up.

Every schedule is a pure function of the optimizer step (0-based), so a resumed run gets
exactly the values of an uninterrupted one from the step counter alone.
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


def loss_weights(step: int, losses: LossConfig, names: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Effective weight of each loss in ``names`` at ``step`` (configured weight x ramp).

    Raises ``ValueError`` for a loss the config has no weight for, so a new model loss is
    never silently dropped from (or added to) the objective.
    """
    weights = {}
    for name in names:
        try:
            base = losses.weight(name)
        except (KeyError, AttributeError):
            raise ValueError(
                f"the model returned loss '{name}' but the config has no weight for it: "
                f"set losses.other.{name}=<weight> (0: not computed)"
            ) from None
        ramp = losses.ramps.get(name)
        factor = 1.0
        if ramp is not None:
            factor = ramp_factor(step, ramp.start, ramp.steps)
            if ramp.decay_steps > 0:
                factor *= 1.0 - ramp_factor(step, ramp.decay_start, ramp.decay_steps)
        weights[name] = base * factor
    return weights


def needed_losses(losses: LossConfig, names: list[str] | tuple[str, ...]) -> set[str]:
    """The losses of ``names`` that the objective uses: those with a configured weight > 0
    (a ramp only scales a weight by a factor in [0, 1], so a loss that ramps up from 0 is
    needed). Raises ``ValueError`` like :func:`loss_weights` for a loss without a weight."""
    weights = loss_weights(0, losses, names)  # checks that every name has a weight
    return {name for name in weights if losses.weight(name) > 0}


def identity_attention(step: int, losses: LossConfig) -> bool:
    """Whether self-attention is fixed to identity at ``step`` (seed 003 warm-up)."""
    return step < losses.identity_attention_steps
