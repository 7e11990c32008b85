"""Jobs that run every N optimizer steps to watch a run: validation, attention plots,
alignment statistics.

Each job has ``every`` (0 = never) and ``__call__(step) -> bool``, True when the step should
be saved (a new best validation metric). Every process calls every due job, in the order
the trainer lists them (validation and the plot's barrier are collectives).

To change what validation measures, open :mod:`astra.train.validation`; to change when and
how it runs during training, this file.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from astra.data.batch_ops import to_device
from astra.train.state import TrainerState
from astra.train.validation import ValidationData

log = logging.getLogger(__name__)


class PeriodicJob:
    """Base of the jobs: ``due(step)`` every ``every`` steps (never when 0)."""

    every: int = 0

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def __call__(self, step: int) -> bool:
        raise NotImplementedError


class Validation(PeriodicJob):
    """Validation loss and per-language WER (``valid/...`` scalars); tracks the best metric
    (``run.best_metric``) in ``state`` and asks for a checkpoint at a new best (when
    ``run.keep_best`` > 0). Each process validates its own shard; the main process merges."""

    def __init__(self, cfg, accelerator, model, data: ValidationData, tokenizer, state: TrainerState,
                 reporter, train_module: torch.nn.Module):
        self.every = cfg.run.validate_every
        self.cfg, self.accelerator, self.model, self.data = cfg, accelerator, model, data
        self.tokenizer, self.state, self.reporter = tokenizer, state, reporter
        self.train_module = train_module  # put back in train mode afterwards

    def __call__(self, step: int) -> bool:
        from accelerate.utils import broadcast_object_list

        acc = self.accelerator
        result = self.validate(step)
        flag = [False, None]
        if acc.is_main_process and result:
            key = "loss" if self.cfg.run.best_metric == "valid_loss" else "wer_macro"
            metric = result.get(key)
            if metric is not None and math.isfinite(metric):
                best = self.state.best_metric
                flag = [best is None or metric < best, metric]
                self.state.valid = result
        if acc.num_processes > 1:
            broadcast_object_list(flag, from_process=0)
        is_best, metric = flag
        self.state.metric = metric
        if is_best:
            self.state.best_metric = metric
        self.train_module.train()
        return bool(is_best) and self.cfg.run.keep_best > 0

    def validate(self, step: int) -> dict[str, float] | None:
        """The merged validation result on the main process (None elsewhere / without data)."""
        from accelerate.utils import gather_object

        from astra.train.validation import summarize_validation, validate_shard

        acc = self.accelerator
        if not self.data.available:
            return None
        shard = validate_shard(
            self.model, (to_device(b, acc.device) for b in self.data.batches()), self.cfg.losses,
            self.tokenizer, decode_method=self.cfg.run.decode_method, autocast=acc.autocast,
        )
        shards = gather_object([shard]) if acc.num_processes > 1 else [shard]
        if not acc.is_main_process:
            return None
        result = summarize_validation(shards)
        self.reporter.scalars(step, result, prefix="valid/")
        if result:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.items()))
            log.info("step %d validation: %s", step, shown)
        else:
            log.warning("step %d: no validation batch", step)
        return result


class AttentionPlots(PeriodicJob):
    """A PNG of the per-layer attention of the first validation utterance
    (``<out_dir>/plots/attention_step<N>.png``), drawn by the main process."""

    def __init__(self, cfg, accelerator, model, data: ValidationData):
        self.every = cfg.run.plot_every
        self.out_dir = Path(cfg.run.out_dir)
        self.accelerator, self.model, self.data = accelerator, model, data

    def __call__(self, step: int) -> bool:
        if self.accelerator.is_main_process:
            self.plot(step)
        self.accelerator.wait_for_everyone()
        return False

    def plot(self, step: int) -> None:
        if not hasattr(self.model, "attention_maps"):
            return
        from astra.train.attention_plot import plot_attention

        batch = self.data.first_batch()
        if batch is None:
            return
        path = self.out_dir / "plots" / f"attention_step{step:08d}.png"
        plot_attention(self.model, to_device(batch, self.accelerator.device), path, title=f"step {step}")
        log.info("attention plot: %s", path)


class AlignmentStatistics(PeriodicJob):
    """Alignment statistics (:mod:`astra.analysis.attention_stats`) of the first validation
    batch, else of the last training speech batch, as ``alignment/...`` scalars; a warning
    when a layer reverses time. Main process only."""

    def __init__(self, cfg, accelerator, model, data: ValidationData, batches, reporter):
        self.every = cfg.run.alignment_every
        self.accelerator, self.model, self.data = accelerator, model, data
        self.batches = batches  # astra.train.batches.TrainBatches: its last speech batch
        self.reporter = reporter

    def __call__(self, step: int) -> bool:
        if self.accelerator.is_main_process and hasattr(self.model, "attention_maps"):
            self.report(step)
        return False

    def report(self, step: int) -> None:
        from astra.analysis.attention_stats import flatten_report, model_alignment_report

        batch = self.data.first_batch()
        if batch is None:
            batch = self.batches.last_speech_batch
        if batch is None:
            log.warning("step %d: no speech batch for the alignment statistics", step)
            return
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                report = model_alignment_report(
                    self.model, to_device(batch, self.accelerator.device), warn=False
                )
        except ValueError as e:
            log.warning("step %d: alignment statistics skipped: %s", step, e)
            return
        self.reporter.scalars(step, flatten_report(report))
        if report["reversal_alarm"]:
            layers = report["layers"]
            log.warning(
                "step %d: reversal alarm: self-attention reverses time in layer(s) %s "
                "(reversal %s); see docs/alignment.md (remedies: InterCTC, "
                "losses.identity_attention_steps)",
                step,
                ", ".join(report["reversed_layers"]),
                ", ".join(f"{layers[n]['reversal']:.2f}" for n in report["reversed_layers"]),
            )
