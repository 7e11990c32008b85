"""The training objective: which losses run, with which weights, summed into one scalar.

- :func:`loss_weights` is the one loss-weight lookup: the configured weight of each loss
  times its ramp at a step (training), or the configured, un-ramped weight (``step=None``,
  validation); a loss the config has no weight for is an error in both.
- :func:`needed_losses` / :func:`objective_needs`: the losses with a configured weight > 0,
  the only ones the model computes (a loss whose weight is 0 is not computed).
- :class:`Objective`: ``objective(model, batch, step)`` -> weighted fp32 loss of ``model(batch)``
  (``model``: the model as prepared by Accelerate, DDP-wrapped with several processes).
- :class:`IdentityAttention`: the identity-attention warm-up of "The Conformer Encoder May
  Reverse the Time Dimension" (arXiv:2410.00680), switched on the model by step.

To change how losses are weighted, ramped or skipped, this is the file to open; the
schedules themselves (learning rate, ramp shape) are pure functions in
:mod:`astra.train.schedules`.
"""

from __future__ import annotations

import logging

import torch
from torch.profiler import record_function

from astra.errors import TrainingError
from astra.train.schedules import identity_attention, ramp_factor
from astra.train.sections import LossConfig

log = logging.getLogger(__name__)


def loss_weights(
    losses: LossConfig, names: list[str] | tuple[str, ...], step: int | None = None
) -> dict[str, float]:
    """Weight of each loss in ``names``: its configured weight times its ramp at ``step``
    (0-based optimizer step), or the configured weight alone when ``step`` is None.

    Training weights its losses with the ramped values; validation reports ``loss`` with the
    un-ramped ones (``step=None``), so validation losses stay comparable across steps.

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
        ramp = losses.ramps.get(name) if step is not None else None
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
    return {name for name, weight in loss_weights(losses, names).items() if weight > 0}


def ramped_weight_scalars(losses: LossConfig, step: int) -> dict[str, float]:
    """``weight/<name>`` of every ramped loss at ``step``, for the training log."""
    return {f"weight/{n}": w for n, w in loss_weights(losses, sorted(losses.ramps), step).items()}


def objective_needs(model: torch.nn.Module, losses_cfg: LossConfig) -> dict[str, set[str]] | None:
    """Per batch kind (``speech``, ``text``), the model's losses that the objective uses
    (:func:`needed_losses`); the model computes only those. ``None`` for a model without
    ``loss_names(kind)`` (it then computes all of its losses)."""
    names_of = getattr(model, "loss_names", None)
    if not callable(names_of):
        return None
    try:
        return {kind: needed_losses(losses_cfg, names_of(kind)) for kind in ("speech", "text")}
    except ValueError as e:
        raise TrainingError(str(e)) from None


def batch_kind(batch: dict) -> str:
    """``"speech"`` or ``"text"`` (a batch without ``kind`` is speech)."""
    kind = batch.get("kind", "speech")
    if kind not in ("speech", "text"):
        raise ValueError(f"batch kind {kind!r} is neither 'speech' nor 'text'")
    return kind


class Objective:
    """``objective(model, batch, step) -> (total, losses, counts)``: the weighted loss of
    ``model(batch, needed=...)`` at optimizer step ``step`` (0-based; its ramped weights).

    ``total`` is the fp32 scalar to back-propagate (only losses with a positive weight at
    ``step`` enter the graph; a batch with nothing to compute gives the model's
    ``idle_loss``, a 0 that still joins the gradient all-reduce), ``losses`` the unweighted
    values (detached, fp32), ``counts`` the model's counts. ``needed`` (see
    :func:`objective_needs`) is passed to the model, so losses whose weight is 0 are not
    computed; ``None``: all are.
    """

    def __init__(self, losses_cfg: LossConfig, needed: dict[str, set[str]] | None = None):
        self.losses_cfg = losses_cfg
        self.needed = needed

    def __call__(self, model: torch.nn.Module, batch: dict, step: int):
        kind = batch_kind(batch)
        options = {} if self.needed is None else {"needed": self.needed[kind]}
        with record_function(f"astra:{kind}_batch"):
            out = model(batch, **options)
        if not out.losses and getattr(out, "idle_loss", None) is not None:
            return out.idle_loss, {}, {}
        total = self.weighted_sum(out.losses, step)
        detached = {k: v.detach().float() for k, v in out.losses.items()}
        return total, detached, dict(out.counts)

    def weighted_sum(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor | None:
        """fp32 sum of weight x loss over the losses with a positive weight at ``step``;
        zeros (still in the graph) when every weight is 0 at this step; None for no loss."""
        try:
            weights = loss_weights(self.losses_cfg, list(losses), step)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        terms = [weights[name] * value.float() for name, value in losses.items() if weights[name] > 0]
        if terms:
            return sum(terms[1:], terms[0])
        if losses:
            # every weight is 0 at this step (e.g. text losses still ramping in): back-propagate
            # zeros so all processes take part in the gradient all-reduce
            return sum(0.0 * v.float() for v in losses.values())
        return None


class IdentityAttention:
    """Applies the identity-attention warm-up (``losses.identity_attention_steps``) of "The
    Conformer Encoder May Reverse the Time Dimension" (arXiv:2410.00680) to a model with
    ``set_identity_attention(enabled)``; the switch is a pure function of the step, so a
    resumed run re-applies it."""

    def __init__(self, model: torch.nn.Module, losses: LossConfig):
        self.setter = getattr(model, "set_identity_attention", None)
        self.losses = losses
        self.enabled: bool | None = None  # None: not applied yet

    def apply(self, step: int) -> None:
        enabled = identity_attention(step, self.losses)
        if callable(self.setter) and enabled != self.enabled:
            self.setter(enabled)
            if self.enabled is not None or enabled:
                log.info("identity attention %s at step %d", "on" if enabled else "off", step)
        self.enabled = enabled
