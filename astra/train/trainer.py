"""The Accelerate training loop shared by ``astra pretrain`` and ``astra finetune``.

:class:`Trainer` sets a run up and then loops over optimizer steps, calling parts that have
one job each (which file to open to change what: docs/training.md, "The parts of a run"):

- :mod:`astra.train.setup`: Accelerate, ``--init`` weights, freezing, CMVN, the optimizer;
- :mod:`astra.train.batches`: this process's batches, epoch after epoch (the stream shards
  itself by rank, mixes text in and concatenates utterances: :mod:`astra.data.stream`);
- :mod:`astra.train.objective`: loss weights and ramps, which losses run, the weighted sum;
- :mod:`astra.train.step`: one optimizer step (accumulation, non-finite skips, clipping);
- :mod:`astra.train.report`: log windows merged over processes, TensorBoard, progress bar;
- :mod:`astra.train.hooks`: validation, attention plots, alignment statistics every N steps;
- :mod:`astra.train.state`: the saved counters and the run's checkpoints (exact resume).

An empty batch (B = 0) is a counted step of zero contribution, so every process keeps taking
part in each gradient all-reduce. SIGINT / SIGTERM save a checkpoint before exiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from astra.config import save_config
from astra.errors import TrainingError
from astra.train import setup
from astra.train.batches import TrainBatches
from astra.train.hooks import AlignmentStatistics, AttentionPlots, Validation
from astra.train.objective import Objective, objective_needs, ramped_weight_scalars
from astra.train.report import LogWindow, Reporter, data_skip_scalars
from astra.train.signals import StopRequest
from astra.train.state import RunCheckpoints, TrainerState, resume_point
from astra.train.step import OptimizerStep, any_process
from astra.train.validation import ValidationData

__all__ = ["Trainer", "TrainerState", "TrainingError", "TrainingParts"]

log = logging.getLogger(__name__)


@dataclass
class TrainingParts:
    """What the trainer trains on, built once the process rank is known.

    ``model`` follows the ``AstraModel`` API (``forward_speech``/``forward_text`` returning
    ``.losses``/``.counts``; optional ``loss_names``, ``set_identity_attention``,
    ``set_feature_stats``, ``decode``, ``attention_maps``). ``train_stream`` is an iterable
    of batch dicts with ``set_epoch``, ``state_dict`` and ``load_state_dict``.
    ``eval_batches()`` returns this process's shard of the validation speech batches (an
    iterable, re-iterated at every validation); ``feature_stats()`` returns global CMVN
    ``(mean [F], std [F])``.
    """

    model: torch.nn.Module
    train_stream: Any
    tokenizer: Any = None
    tokenizer_path: str | Path | None = None
    eval_batches: Callable[[], list[dict]] | None = None
    feature_stats: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None


class Trainer:
    """Runs one training job; see the module docstring.

    ``cfg`` is a :class:`astra.train.config.TrainConfig` (or any dataclass with ``losses``,
    ``optim``, ``run`` sections and, for fine-tuning, ``finetune``). ``build_parts(cfg, rank,
    world_size)`` makes the model, data stream, tokenizer and validation data.
    ``init`` is a pretrained checkpoint (fine-tuning) loaded unless the run resumes.
    The parts below are made by :meth:`_setup` (None until then).
    """

    def __init__(
        self,
        cfg,
        build_parts: Callable[[Any, int, int], TrainingParts],
        *,
        resume: bool = False,
        init: str | Path | None = None,
    ):
        self.cfg = cfg
        self.build_parts = build_parts
        self.resume = resume
        self.init = Path(init) if init is not None else None
        self.out_dir = Path(cfg.run.out_dir)
        self.state = TrainerState()
        self.window = LogWindow()  # this process's sums since the last log step
        self.stopped_by: str | None = None  # signal (or reason) that stopped the run early
        self.vocabulary_transfer = None  # astra.train.vocabulary.VocabularyTransfer (finetune.tokenizer)
        self.accelerator = None
        self.parts: TrainingParts | None = None
        self.model: torch.nn.Module | None = None
        self.stream = None  # parts.train_stream
        self.objective: Objective | None = None
        self.wrapped = None  # the model as prepared by Accelerate (DDP with several processes)
        self.optimizer = None
        self.batches: TrainBatches | None = None
        self.checkpoints: RunCheckpoints | None = None
        self.reporter: Reporter | None = None
        self.step_runner: OptimizerStep | None = None
        self.jobs: list = []  # periodic jobs (astra.train.hooks), in the order they run
        self._stop: StopRequest | None = None

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        from accelerate.utils import set_seed

        cfg = self.cfg
        if cfg.run.num_threads > 0:
            torch.set_num_threads(cfg.run.num_threads)
        self.accelerator = acc = setup.make_accelerator(cfg.run)
        if not acc.is_main_process:  # one copy of the progress messages is enough
            logging.getLogger("astra").setLevel(logging.WARNING)
        set_seed(cfg.run.seed)
        self.parts = self.build_parts(cfg, acc.process_index, acc.num_processes)
        self.model, self.stream = self.parts.model, self.parts.train_stream
        self.state.world_size = acc.num_processes
        resume_from = resume_point(self.out_dir / "checkpoints", self.resume)
        self._initialise_model(fresh=resume_from is None)
        self.objective = Objective(cfg.losses, objective_needs(self.model, cfg.losses))
        optimizer = setup.make_optimizer(self.model, cfg.optim)
        self.wrapped, self.optimizer = acc.prepare(self.model, optimizer)
        self.batches = TrainBatches(self.stream, acc.device, acc.process_index,
                                    keep_last_speech=cfg.run.alignment_every > 0)
        self.checkpoints = RunCheckpoints(cfg, acc, self.model, self.state, self.batches,
                                          self.parts.tokenizer_path)
        if resume_from is not None:
            self.checkpoints.resume(resume_from)
        self.reporter = Reporter(self.out_dir, acc.is_main_process)
        self.step_runner = OptimizerStep(cfg, acc, self.model, self.wrapped, self.objective, self.optimizer,
                                         self.batches, self.window, self.state)
        self.jobs = self._make_jobs()
        if acc.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")

    def _initialise_model(self, fresh: bool) -> None:
        """``--init`` weights and CMVN statistics for a fresh run (a resumed one restores
        both), and ``finetune.freeze``."""
        ft = getattr(self.cfg, "finetune", None)
        if fresh and self.init is not None:
            self.vocabulary_transfer = setup.load_init(self.model, self.init, ft, self.parts.tokenizer)
        if ft is not None and self.init is not None and ft.freeze:
            setup.freeze_for_finetuning(self.model, ft)
        if fresh and (self.init is None or (ft is not None and ft.reset_feature_stats)):
            setup.set_feature_stats(self.accelerator, self.model, self.parts.feature_stats)

    def _make_jobs(self) -> list:
        cfg, acc, model = self.cfg, self.accelerator, self.model
        data = ValidationData(self.parts.eval_batches, cfg.run.valid_max_batches, acc.num_processes)
        return [
            Validation(cfg, acc, model, data, self.parts.tokenizer, self.state, self.reporter, self.wrapped),
            AttentionPlots(cfg, acc, model, data),
            AlignmentStatistics(cfg, acc, model, data, self.batches, self.reporter),
        ]

    # ------------------------------------------------------------------ main loop
    def run(self) -> Path:
        """Train until ``run.max_steps``; returns the last checkpoint folder."""
        with StopRequest() as stop:
            self._stop = stop
            return self._run()

    def _run(self) -> Path:
        self._setup()
        run = self.cfg.run
        self.reporter.open(run.max_steps, self.state.step)
        self.wrapped.train()
        self.window.restart()
        try:
            while self.state.step < run.max_steps:
                info = self._train_step()
                self.state.step += 1
                if self._after_step(self.state.step, info):
                    break
        except KeyboardInterrupt:
            # a second Ctrl-C: the current step may be half done, keep the last checkpoint
            log.warning("interrupted twice: not saving the half-finished step %d", self.state.step)
            raise
        finally:
            self._close()
        self._log_data_skips()
        return self.checkpoints.last_path

    def _train_step(self) -> dict[str, float]:
        """Optimizer step ``state.step`` (not counted: the caller advances the counter)."""
        return self.step_runner(self.state.step)

    def _after_step(self, step: int, info: dict[str, float]) -> bool:
        """Log, run the due jobs, save; True when the run stops here on request."""
        run = self.cfg.run
        self.state.metric = None
        self.reporter.step_done()
        if step % run.log_every == 0 or step == run.max_steps:
            self._log(step, info)
        wants_save = [job(step) for job in self.jobs if job.due(step)]  # every due job runs
        if step % run.save_every == 0 or any(wants_save) or step == run.max_steps:
            self.checkpoints.save(step)
        if any_process(self.accelerator, self._stop.requested is not None):
            self.stopped_by = self._stop.requested or "a stop request on another process"
            log.warning("stopping at step %d on request (%s)", step, self.stopped_by)
            self.checkpoints.save(step)
            return True
        return False

    def _log(self, step: int, info: dict[str, float]) -> None:
        """The log window's scalars merged over processes (a collective), then reported."""
        scalars = self.window.merge(self.accelerator, self.state.counts)
        scalars["lr"] = info["lr"]
        scalars.update(ramped_weight_scalars(self.cfg.losses, step - 1))
        if self.accelerator.is_main_process:
            scalars.update(data_skip_scalars(self.stream))
        self.reporter.training_log(step, scalars)

    def _log_data_skips(self) -> None:
        if self.accelerator.is_main_process and hasattr(self.stream, "skip_summary"):
            summary = self.stream.skip_summary()
            if any(summary.values()) if isinstance(summary, dict) else summary:
                log.info("data skipped: %s", summary)

    def _close(self) -> None:
        if self.reporter is not None:
            self.reporter.close()
