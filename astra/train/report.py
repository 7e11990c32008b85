"""What a run reports: per-window sums merged over processes, TensorBoard, the progress bar.

- :class:`LogWindow` sums this process's micro-batches between two log steps (losses,
  counts, ``mean/`` values, audio seconds) and merges the windows of all processes into
  scalars: ``loss``, ``loss/<name>``, ``grad_norm`` and ``stats/<name>`` (from the model's
  ``mean/<name>`` counts) are averaged over the window; ``counts/...`` and ``batches/...``
  are cumulative over the run (kept in ``TrainerState.counts``, so they survive a resume);
  ``throughput/audio_seconds_per_second`` is this window's.
- :class:`Reporter` writes scalars to TensorBoard (``<out_dir>/tensorboard``) and drives the
  progress bar, on the main process only (a no-op elsewhere).

To change what is logged, or how, this is the file to open.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

import torch

from astra.data.batch_ops import is_empty_batch

log = logging.getLogger(__name__)


def batch_audio_seconds(batch: dict) -> float:
    """Summed ``durations`` of a speech batch (0 for a text batch)."""
    durations = batch.get("durations")
    if durations is None:
        return 0.0
    return float(torch.as_tensor(durations).sum())


class LogWindow:
    """Sums (and, for averaged keys, numbers of values) of one log window on this process."""

    def __init__(self):
        self.sums: defaultdict[str, float] = defaultdict(float)
        self.ns: defaultdict[str, int] = defaultdict(int)  # keys that are averaged
        self.start = time.time()

    def restart(self) -> None:
        self.sums.clear()
        self.ns.clear()
        self.start = time.time()

    def count(self, key: str, n: float = 1.0) -> None:
        """Add ``n`` to a cumulative count (``counts/...``)."""
        self.sums[key] += n

    def mean(self, key: str, value: float) -> None:
        """Add one value of a key averaged over the window."""
        self.sums[key] += value
        self.ns[key] += 1

    def add_micro_batch(self, batch: dict, total, losses: dict, counts: dict) -> None:
        """One forward pass: its weighted ``total``, unweighted ``losses`` and model counts."""
        if is_empty_batch(batch):  # a zero-contribution micro-batch: counted, not averaged in
            self.count("counts/dropped/empty_batch")
            return
        self.mean("loss", float(total.detach()))
        for name, value in losses.items():
            self.mean(f"loss/{name}", float(value))
        for name, value in counts.items():
            if name.startswith("mean/"):  # a per-batch value the log window averages
                self.mean(f"stats/{name[5:]}", float(value))
            else:
                self.count(f"counts/{name}", float(value))
        self.count("audio_seconds", batch_audio_seconds(batch))
        self.count(f"batches/{batch.get('kind', 'speech')}")

    def merge(self, accelerator, cumulative: dict[str, float]) -> dict[str, float]:
        """Merge this window over processes (a collective: every process calls it) and start
        a new one. Returns the window's scalars; ``cumulative`` (the run's counts) gains the
        window's ``counts/`` and ``batches/`` sums."""
        from accelerate.utils import gather_object

        local = {"sums": dict(self.sums), "ns": dict(self.ns)}
        merged = gather_object([local]) if accelerator.num_processes > 1 else [local]
        elapsed = max(time.time() - self.start, 1e-9)
        self.restart()
        sums, ns = defaultdict(float), defaultdict(int)
        for part in merged:
            for k, v in part["sums"].items():
                sums[k] += v
            for k, v in part["ns"].items():
                ns[k] += v
        scalars = {}
        for key, value in sums.items():
            if key in ns:
                scalars[key] = value / max(ns[key], 1)
            elif key.startswith(("counts/", "batches/")):  # cumulative over the run
                cumulative[key] = cumulative.get(key, 0.0) + value
                scalars[key] = cumulative[key]
        scalars["throughput/audio_seconds_per_second"] = sums["audio_seconds"] / elapsed
        return scalars


def data_skip_scalars(stream) -> dict[str, float]:
    """``data_skipped/<kind>/<reason>`` from the stream's ``skip_summary()`` (main process:
    index-time skips of the whole corpus plus decode-time skips of its own batches)."""
    summary = stream.skip_summary() if hasattr(stream, "skip_summary") else {}
    scalars = {}
    for kind, reasons in (summary or {}).items():
        if isinstance(reasons, dict):
            for reason, n in reasons.items():
                if isinstance(n, (int, float)):
                    scalars[f"data_skipped/{kind}/{reason}"] = float(n)
        elif isinstance(reasons, (int, float)):
            scalars[f"data_skipped/{kind}"] = float(reasons)
    return scalars


class Reporter:
    """TensorBoard scalars and the progress bar of the main process (no-ops elsewhere and
    before :meth:`open`)."""

    def __init__(self, out_dir: str | Path, is_main_process: bool):
        self.out_dir = Path(out_dir)
        self.is_main_process = is_main_process
        self.writer = None  # torch.utils.tensorboard.SummaryWriter once opened
        self.progress = None  # astra.progress.progress_bar once opened

    def open(self, total_steps: int, initial_step: int) -> None:
        if not self.is_main_process:
            return
        from torch.utils.tensorboard import SummaryWriter

        from astra.progress import progress_bar

        self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        self.progress = progress_bar(
            total=total_steps, initial=initial_step, desc="train", dynamic_ncols=True
        )

    def step_done(self) -> None:
        if self.progress is not None:
            self.progress.update(1)

    def scalars(self, step: int, scalars: dict[str, float], prefix: str = "") -> None:
        """Write ``scalars`` (keys prefixed by ``prefix``) at ``step``."""
        if self.writer is None:
            return
        for key, value in scalars.items():
            self.writer.add_scalar(prefix + key, value, step)
        self.writer.flush()

    def training_log(self, step: int, scalars: dict[str, float]) -> None:
        """The log-step scalars: TensorBoard, the progress bar's postfix, a debug line."""
        if not self.is_main_process:
            return
        self.scalars(step, scalars)
        if self.progress is not None:
            self.progress.set_postfix(
                loss=f"{scalars.get('loss', float('nan')):.3f}",
                lr=f"{scalars['lr']:.2e}",
                audio_s_per_s=f"{scalars['throughput/audio_seconds_per_second']:.1f}",
                refresh=False,  # shown at the bar's next redraw (every 30 s in a log file)
            )
        log.debug("step %d %s", step, scalars)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
