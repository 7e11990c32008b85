"""One optimizer step: accumulate micro-batches, skip a non-finite step, clip, step AdamW.

A step takes ``optim.grad_accum_steps`` micro-batches per process (``optim.text_batches``:
a text batch takes a speech batch's place, or comes on top), back-propagates each weighted
loss (:class:`astra.train.objective.Objective` of the prepared model) with the gradient all-reduce only on the
last, clips the global norm and steps with the scheduled learning rate. A non-finite loss
(on any process) or gradient norm skips the step; ``run.max_nonfinite`` in a row stop the
run. To change the text/speech mixing inside a step, this is the file to open (the mix of
the stream itself: :mod:`astra.data.samplers`).
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch
from torch.profiler import record_function

from astra.errors import TrainingError
from astra.train.objective import IdentityAttention
from astra.train.schedules import learning_rate

log = logging.getLogger(__name__)


def any_process(accelerator, flag: bool) -> bool:
    """True if ``flag`` is true on any process (a collective when world size > 1)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


class OptimizerStep:
    """``step_runner(step) -> {"lr": ..., "grad_norm": ...}`` runs optimizer step ``step``
    (0-based): ``objective(wrapped, batch, step)`` (:class:`astra.train.objective.Objective`)
    on ``wrapped`` (``model`` as prepared by Accelerate: DDP with several processes), drawing
    micro-batches from ``batches`` and adding them to ``window``
    (:class:`astra.train.report.LogWindow`); non-finite steps are counted in ``state``
    (:class:`astra.train.state.TrainerState`)."""

    def __init__(self, cfg, accelerator, model, wrapped, objective, optimizer, batches, window, state):
        self.cfg = cfg
        self.accelerator = accelerator
        self.model = model
        self.wrapped = wrapped
        self.objective = objective
        self.optimizer = optimizer
        self.batches = batches
        self.window = window
        self.state = state
        self.identity = IdentityAttention(self.model, cfg.losses)

    def __call__(self, step: int) -> dict[str, float]:
        self.identity.apply(step)
        lr = learning_rate(step, self.cfg.optim, self.cfg.run.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        info: dict[str, float] = {"lr": lr}
        nonfinite_losses = self._accumulate_gradients(step)
        if nonfinite_losses is not None:
            self.optimizer.zero_grad(set_to_none=True)
            self._count_nonfinite(step, f"loss {nonfinite_losses}")
            return info
        info["grad_norm"] = grad_norm = self._clip_gradients()
        if not math.isfinite(grad_norm) and self.cfg.run.mixed_precision != "fp16":
            self.optimizer.zero_grad(set_to_none=True)
            self._count_nonfinite(step, f"gradient norm {grad_norm}")
            return info
        with record_function("astra:optimizer"):
            self.optimizer.step()
        if self.cfg.run.mixed_precision == "fp16" and self.accelerator.optimizer_step_was_skipped:
            self.window.count("counts/fp16_overflow_skips")
        self.state.nonfinite_in_a_row = 0
        self.window.mean("grad_norm", grad_norm if math.isfinite(grad_norm) else 0.0)
        return info

    def _accumulate_gradients(self, step: int) -> dict[str, float] | None:
        """Forward + backward of this step's micro-batches; the unweighted losses of the
        first non-finite one (on any process: the step is then abandoned), else None."""
        acc = self.accelerator
        accum = self.cfg.optim.grad_accum_steps
        add_text = self.cfg.optim.text_batches == "add"
        micro = speech = 0
        last = False
        while not last:
            with record_function("astra:data"):
                batch = next(self.batches)
            is_speech = batch.get("kind", "speech") == "speech"
            micro += 1
            speech += is_speech
            # "add": the step ends with its accum-th speech batch (text batches ride along)
            last = speech == accum if add_text else micro == accum
            with contextlib.nullcontext() if last else acc.no_sync(self.wrapped):
                with acc.autocast():
                    total, losses, counts = self.objective(self.wrapped, batch, step)
                if total is None:
                    raise TrainingError(
                        f"step {step}: the model returned no loss for a {batch.get('kind')} batch; "
                        "check the model config (heads enabled)"
                    )
                if any_process(acc, not bool(torch.isfinite(total).item())):
                    return {k: float(v) for k, v in losses.items()}
                with record_function("astra:backward"):
                    acc.backward(total / accum)
            self.window.add_micro_batch(batch, total, losses, counts)
        return None

    def _clip_gradients(self) -> float:
        """Clip the global gradient norm to ``optim.max_grad_norm`` (0: no clipping); the
        norm before clipping."""
        max_norm = self.cfg.optim.max_grad_norm if self.cfg.optim.max_grad_norm > 0 else math.inf
        params = [p for p in self.model.parameters() if p.requires_grad]
        with record_function("astra:optimizer"):
            return float(self.accelerator.clip_grad_norm_(params, max_norm))

    def _count_nonfinite(self, step: int, what: str) -> None:
        state = self.state
        state.nonfinite_total += 1
        state.nonfinite_in_a_row += 1
        self.window.count("counts/nonfinite_skipped")
        log.warning(
            "step %d skipped: non-finite %s (%d in a row, %d in all)",
            step, what, state.nonfinite_in_a_row, state.nonfinite_total,
        )
        limit = self.cfg.run.max_nonfinite
        if state.nonfinite_in_a_row >= limit:
            raise TrainingError(
                f"stopping: the loss or gradient was non-finite for {limit} steps in a row "
                f"(last at step {step}: {what}); lower optim.lr, raise optim.warmup_steps, "
                "check the data, or use run.mixed_precision=no / bf16"
            )
