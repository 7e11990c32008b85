"""What a resumed run needs, and where it is saved: :class:`TrainerState` (the counters in
``trainer_state.json``) and :class:`RunCheckpoints` (save / resume / prune the run's
checkpoint folders through :mod:`astra.train.checkpoint`).

Everything a resumed run needs is a function of the checkpoint: model + optimizer + grad
scaler + RNG states (``Accelerator.save_state``), the data position of every process
(:class:`astra.train.batches.TrainBatches`), and the step counter (learning rate,
loss-weight ramps and identity attention are pure functions of it).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astra.checkpoint_paths import latest_checkpoint
from astra.config import save_config
from astra.errors import TrainingError
from astra.train import checkpoint as ckpt

log = logging.getLogger(__name__)


@dataclass
class TrainerState:
    """Counters saved in ``trainer_state.json`` (main process view)."""

    step: int = 0
    nonfinite_total: int = 0
    nonfinite_in_a_row: int = 0
    metric: float | None = None  # validation metric at this step (None if not validated)
    best_metric: float | None = None
    valid: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)  # cumulative over processes
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def update(self, saved: dict[str, Any]) -> None:
        """Take the values of a saved ``trainer_state.json`` (unknown keys ignored)."""
        for key, value in saved.items():
            if hasattr(self, key):
                setattr(self, key, value)


class RunCheckpoints:
    """The checkpoints of one run under ``<run.out_dir>/checkpoints``.

    ``save(step)`` writes the config, the model weights, the tokenizer, ``state`` and every
    process's data position (``batches.state_dict()``) atomically and prunes old ones
    (``run.keep_last``, ``run.keep_best``); saving the same step twice is a no-op.
    ``resume(path)`` restores them. Every process calls both.
    """

    def __init__(self, cfg, accelerator, model, state: TrainerState, batches,
                 tokenizer_path: str | Path | None = None):
        self.cfg = cfg
        self.accelerator = accelerator
        self.model = model
        self.state = state
        self.batches = batches  # astra.train.batches.TrainBatches
        self.tokenizer_path = tokenizer_path
        self.root = Path(cfg.run.out_dir) / "checkpoints"
        self.last_saved_step = -1

    @property
    def last_path(self) -> Path:
        return self.root / ckpt.checkpoint_name(self.last_saved_step)

    def save(self, step: int) -> None:
        if step == self.last_saved_step:
            return
        acc = self.accelerator
        self.state.step = step
        ckpt.save_checkpoint(acc, self.root, step, self._write_files, self.batches.state_dict())
        if acc.is_main_process:
            run = self.cfg.run
            for path in ckpt.prune_checkpoints(self.root, run.keep_last, run.keep_best):
                log.debug("removed old checkpoint %s", path)
        self.last_saved_step = step

    def _write_files(self, folder: Path) -> None:
        save_config(self.cfg, folder / ckpt.CONFIG_FILE)
        ckpt.save_model_weights(self.model, folder / ckpt.MODEL_FILE)
        if self.tokenizer_path is not None:
            shutil.copyfile(self.tokenizer_path, folder / ckpt.TOKENIZER_FILE)
        ckpt.write_json(folder / ckpt.TRAINER_STATE, self.state.to_dict())

    def resume(self, path: Path) -> None:
        acc = self.accelerator
        saved = ckpt.read_trainer_state(path)
        if saved.get("world_size", 1) != acc.num_processes:
            raise TrainingError(
                f"{path} was written by {saved.get('world_size')} processes, this run has "
                f"{acc.num_processes}: resume with the same number of processes"
            )
        with ckpt.accelerate_state_for(self.model, path / ckpt.ACCELERATE_DIR) as acc_dir:
            acc.load_state(str(acc_dir))
        self.batches.load_state_dict(ckpt.load_sampler_state(path, acc.process_index))
        self.state.update(saved)
        self.last_saved_step = self.state.step
        log.info("resumed from %s at step %d (epoch %d)", path, self.state.step, self.batches.epoch)


def resume_point(root: Path, resume: bool) -> Path | None:
    """The checkpoint under ``root`` to resume from (``--resume``), None to start fresh; an
    error when the run folder already has checkpoints and ``resume`` is not set."""
    latest = latest_checkpoint(root)
    if latest is not None and not resume:
        raise TrainingError(
            f"{root.parent} already has checkpoints (latest {latest.name}): pass --resume "
            "to continue that run, or choose another run.out_dir"
        )
    if resume and latest is None:
        log.warning("--resume: no checkpoint in %s, starting from scratch", root)
    return latest if resume else None
