"""The Accelerate training loop shared by ``astra pretrain`` and ``astra finetune``.

One optimizer step = ``optim.grad_accum_steps`` micro-batches per process, each a speech or
a text batch from the data stream (which shards itself by rank: it is *not* passed through
``accelerator.prepare``). The model's unweighted losses are weighted by the ``losses``
section (with ramps), summed in fp32 and back-propagated; gradients are clipped and AdamW
steps with the scheduled learning rate. Non-finite steps are skipped and counted; K in a
row stop the run. An empty batch (B = 0) is a counted step of zero contribution, so every
process keeps taking part in each gradient all-reduce. Checkpoints, validation, attention
plots and alignment statistics run every N steps; SIGINT / SIGTERM save a checkpoint before
exiting.

Everything a resumed run needs is a function of the checkpoint: model + optimizer + grad
scaler + RNG states (``Accelerator.save_state``), the data stream state of every process,
and the step counter (learning rate, loss-weight ramps and identity attention are pure
functions of it).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import record_function

from astra.config import save_config
from astra.errors import TrainingError
from astra.train import checkpoint as ckpt
from astra.train.schedules import identity_attention, learning_rate, loss_weights, needed_losses
from astra.train.signals import StopRequest

log = logging.getLogger(__name__)


@dataclass
class TrainingParts:
    """What the trainer trains on, built once the process rank is known.

    ``model`` follows the ``AstraModel`` API (``forward_speech``/``forward_text`` returning
    ``.losses``/``.counts``; optional ``set_identity_attention``, ``set_feature_stats``,
    ``decode``, ``attention_maps``). ``train_stream`` is an iterable of batch dicts with
    ``set_epoch``, ``state_dict`` and ``load_state_dict``. ``eval_batches()`` returns this
    process's shard of the validation speech batches (an iterable, re-iterated at every
    validation); ``feature_stats()`` returns global CMVN ``(mean [F], std [F])``.
    """

    model: torch.nn.Module
    train_stream: Any
    tokenizer: Any = None
    tokenizer_path: str | Path | None = None
    eval_batches: Callable[[], list[dict]] | None = None
    feature_stats: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None


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


def objective_needs(model: torch.nn.Module, losses_cfg) -> dict[str, set[str]] | None:
    """Per batch kind (``speech``, ``text``), the model's losses that the objective uses
    (:func:`astra.train.schedules.needed_losses`); the model computes only those. ``None``
    for a model without ``loss_names(kind)`` (it then computes all of its losses)."""
    names_of = getattr(model, "loss_names", None)
    if not callable(names_of):
        return None
    try:
        return {kind: needed_losses(losses_cfg, names_of(kind)) for kind in ("speech", "text")}
    except ValueError as e:
        raise TrainingError(str(e)) from None


class _LossModule(torch.nn.Module):
    """Wraps the model so DDP sees one ``forward``: batch -> weighted fp32 loss.

    Returns ``(total, losses, counts)``: ``total`` the scalar to back-propagate (only losses
    with a positive weight enter the graph), ``losses`` the unweighted values (detached).
    ``needed`` (see :func:`objective_needs`) is passed to ``forward_speech`` /
    ``forward_text``, so losses whose weight is 0 are not computed; ``None``: all are.
    """

    def __init__(self, model: torch.nn.Module, losses_cfg, needed: dict[str, set[str]] | None = None):
        super().__init__()
        self.model = model
        self.losses_cfg = losses_cfg
        self.needed = needed
        self.step = 0

    def _touch_every_parameter(self):
        """A zero that touches every trainable parameter, so this process still joins the
        gradient all-reduce."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return 0.0 * torch.stack([p.float().sum() for p in params]).sum()

    def forward(self, batch: dict):
        kind = batch.get("kind", "speech")
        if kind not in ("speech", "text"):
            raise ValueError(f"batch kind {kind!r} is neither 'speech' nor 'text'")
        if is_empty_batch(batch):  # nothing to learn from (every utterance failed to decode)
            return self._touch_every_parameter(), {}, {}
        options = {}
        if self.needed is not None:
            if not self.needed[kind]:  # no loss of this kind has a weight: nothing to compute
                return self._touch_every_parameter(), {}, {}
            options["needed"] = self.needed[kind]
        with record_function(f"astra:{kind}_batch"):
            if kind == "speech":
                out = self.model.forward_speech(batch, **options)
            else:
                out = self.model.forward_text(batch, **options)
        try:
            weights = loss_weights(self.step, self.losses_cfg, list(out.losses))
        except ValueError as e:
            raise TrainingError(str(e)) from None
        total = None
        for name, value in out.losses.items():
            w = weights[name]
            if w > 0:
                term = w * value.float()
                total = term if total is None else total + term
        if total is None and out.losses:
            # every weight is 0 at this step (e.g. text losses still ramping in): back-propagate
            # zeros so all processes take part in the gradient all-reduce
            total = sum(0.0 * v.float() for v in out.losses.values())
        detached = {k: v.detach().float() for k, v in out.losses.items()}
        return total, detached, dict(out.counts)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def freeze_modules(model: torch.nn.Module, prefixes: list[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters under each module-name prefix.

    Returns the frozen parameter names; a prefix that matches nothing is a ``ValueError``.
    """
    frozen = []
    for prefix in prefixes:
        matched = [
            (n, p) for n, p in model.named_parameters() if n == prefix or n.startswith(prefix + ".")
        ]
        if not matched:
            tops = sorted({n.split(".")[0] for n, _ in model.named_parameters()})
            raise ValueError(f"finetune.freeze: no parameters under '{prefix}' (modules: {tops})")
        for n, p in matched:
            p.requires_grad_(False)
            frozen.append(n)
    return frozen


def to_device(batch: dict, device: torch.device | str) -> dict:
    """The batch with its tensors on ``device`` (lists and strings unchanged)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def is_empty_batch(batch: dict) -> bool:
    """True for a batch with no utterance or sentence (B = 0), e.g. a speech batch whose
    every utterance failed to decode."""
    tokens = batch.get("tokens")
    return tokens is not None and tokens.shape[0] == 0


def _batch_audio_seconds(batch: dict) -> float:
    durations = batch.get("durations")
    if durations is None:
        return 0.0
    return float(torch.as_tensor(durations).sum())


class Trainer:
    """Runs one training job; see the module docstring.

    ``cfg`` is a :class:`astra.train.config.TrainConfig` (or any dataclass with ``losses``,
    ``optim``, ``run`` sections and, for fine-tuning, ``finetune``). ``build_parts(cfg, rank,
    world_size)`` makes the model, data stream, tokenizer and validation data.
    ``init`` is a pretrained checkpoint (fine-tuning) loaded unless the run resumes.
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
        self.ckpt_root = self.out_dir / "checkpoints"
        self.state = TrainerState()
        self.epoch = 0
        self.batches_in_epoch = 0
        self._iter = None
        self._last_saved_step = -1
        self._writer = None
        self._progress = None
        self._stop: StopRequest | None = None
        self._window = defaultdict(float)  # log-window sums (this process)
        self._window_n = defaultdict(int)
        self._window_start = time.time()
        self._identity = None
        self._last_speech_batch: dict | None = None  # run.alignment_every without validation
        self.stopped_by: str | None = None  # signal (or reason) that stopped the run early
        self.vocabulary_transfer = None  # astra.train.vocabulary.VocabularyTransfer (finetune.tokenizer)

    # ------------------------------------------------------------------ set-up
    def _make_accelerator(self):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedDataParallelKwargs

        run = self.cfg.run
        cpu = run.cpu or not torch.cuda.is_available()
        if AcceleratorState._shared_state and AcceleratorState().mixed_precision != run.mixed_precision:
            # a second trainer in the same process (tests, notebooks) with another precision
            AcceleratorState._reset_state(reset_partial_state=False)
        try:
            return Accelerator(
                cpu=cpu,
                mixed_precision=run.mixed_precision,
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            )
        except (ValueError, RuntimeError) as e:
            raise TrainingError(f"cannot set up Accelerate (run.mixed_precision={run.mixed_precision!r}): {e}") from None

    def _setup(self) -> None:
        from accelerate.utils import set_seed

        if self.cfg.run.num_threads > 0:
            torch.set_num_threads(self.cfg.run.num_threads)
        self.accelerator = acc = self._make_accelerator()
        if not acc.is_main_process:  # one copy of the progress messages is enough
            logging.getLogger("astra").setLevel(logging.WARNING)
        set_seed(self.cfg.run.seed)
        self.parts = self.build_parts(self.cfg, acc.process_index, acc.num_processes)
        self.model = self.parts.model
        self.stream = self.parts.train_stream
        self.state.world_size = acc.num_processes

        latest = ckpt.latest_checkpoint(self.ckpt_root)
        if latest is not None and not self.resume:
            raise TrainingError(
                f"{self.out_dir} already has checkpoints (latest {latest.name}): pass --resume to "
                "continue that run, or choose another run.out_dir"
            )
        resume_from = latest if self.resume else None
        if self.resume and resume_from is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", self.ckpt_root)
        if resume_from is None and self.init is not None:
            self._load_init()
        ft = getattr(self.cfg, "finetune", None)
        if ft is not None and self.init is not None and ft.freeze:
            try:
                frozen = freeze_modules(self.model, ft.freeze)
            except ValueError as e:
                raise TrainingError(str(e)) from None
            log.info("frozen %d parameter tensors under %s", len(frozen), ft.freeze)
        if resume_from is None:
            needs_stats = self.init is None or (ft is not None and ft.reset_feature_stats)
            if needs_stats:
                self._set_feature_stats()

        optim = self.cfg.optim
        optimizer = torch.optim.AdamW(
            _param_groups(self.model, optim.weight_decay),
            lr=optim.lr,
            betas=tuple(optim.betas),
            eps=optim.eps,
        )
        self.loss_module = _LossModule(self.model, self.cfg.losses, objective_needs(self.model, self.cfg.losses))
        self.wrapped, self.optimizer = acc.prepare(self.loss_module, optimizer)

        self.stream.set_epoch(0)
        if resume_from is not None:
            self._load_checkpoint(resume_from)
        self._iter = iter(self.stream)
        if acc.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out_dir / "config.yaml")

    def _load_init(self) -> None:
        ft = getattr(self.cfg, "finetune", None)
        strict = bool(ft.strict) if ft is not None else True
        try:
            folder = ckpt.resolve_checkpoint(self.init)
            state = ckpt.read_model_state(folder)
            if ft is not None and getattr(ft, "tokenizer", None):
                state = self._transfer_vocabulary(state, folder)
            report = ckpt.load_model_weights(self.model, state, strict=strict)
        except ValueError as e:
            hint = ""
            if "shapes do not fit" in str(e) and not (ft is not None and getattr(ft, "tokenizer", None)):
                hint = " (a tokenizer other than --init's needs finetune.tokenizer: docs/training.md)"
            raise TrainingError(f"--init {self.init}: {e}{hint}") from None
        log.info("initialised from %s: %s", self.init, report.summary())

    def _transfer_vocabulary(self, state: dict, folder: Path) -> dict:
        """``state`` re-indexed from --init's tokenizer to the run's (``finetune.tokenizer``)."""
        from astra.data.tokenizer import Tokenizer
        from astra.train.vocabulary import transfer_vocabulary

        old = Tokenizer(folder / ckpt.TOKENIZER_FILE)
        new = self.parts.tokenizer
        pieces = [[t.id_to_piece(i) for i in range(t.vocab_size)] for t in (old, new)]
        state, transfer = transfer_vocabulary(state, self.model, pieces[0], pieces[1])
        log.info("finetune.tokenizer %s: %s", self.cfg.finetune.tokenizer, transfer.summary())
        self.vocabulary_transfer = transfer
        return state

    def _set_feature_stats(self) -> None:
        if self.parts.feature_stats is None or not hasattr(self.model, "set_feature_stats"):
            return
        from accelerate.utils import broadcast_object_list

        acc = self.accelerator
        stats = [None]
        if acc.is_main_process:
            try:
                mean, std = self.parts.feature_stats()
            except ValueError as e:
                raise TrainingError(f"feature statistics: {e}") from None
            stats = [(mean.cpu(), std.cpu())]
        if acc.num_processes > 1:
            broadcast_object_list(stats, from_process=0)
        mean, std = stats[0]
        self.model.set_feature_stats(mean, std)
        log.info("global CMVN stats set (%d features)", mean.numel())

    def _load_checkpoint(self, path: Path) -> None:
        acc = self.accelerator
        saved = ckpt.read_trainer_state(path)
        if saved.get("world_size", 1) != acc.num_processes:
            raise TrainingError(
                f"{path} was written by {saved.get('world_size')} processes, this run has "
                f"{acc.num_processes}: resume with the same number of processes"
            )
        acc.load_state(str(path / ckpt.ACCELERATE_DIR))
        sampler = ckpt.load_sampler_state(path, acc.process_index)
        self.epoch = sampler["epoch"]
        self.batches_in_epoch = sampler["batches_in_epoch"]
        self.stream.set_epoch(self.epoch)
        self.stream.load_state_dict(sampler["stream"])
        for key, value in saved.items():
            if hasattr(self.state, key):
                setattr(self.state, key, value)
        self._last_saved_step = self.state.step
        log.info("resumed from %s at step %d (epoch %d)", path, self.state.step, self.epoch)

    # ------------------------------------------------------------------ data
    def _next_batch(self) -> dict:
        while True:
            try:
                # the data pipeline must not draw from the model's RNG (a DataLoader takes a
                # seed from it when an epoch starts, which a resumed run would do again)
                with torch.random.fork_rng(devices=[]):
                    batch = next(self._iter)
            except StopIteration:
                if self.batches_in_epoch == 0:
                    raise TrainingError(
                        f"the training data gave no batch in epoch {self.epoch} on process "
                        f"{self.accelerator.process_index}: check the data config"
                    ) from None
                self.epoch += 1
                self.batches_in_epoch = 0
                self.stream.set_epoch(self.epoch)
                self._iter = iter(self.stream)
                continue
            self.batches_in_epoch += 1
            return to_device(self._maybe_concat(batch), self.accelerator.device)

    def _maybe_concat(self, batch: dict) -> dict:
        """Concatenate a ``run.concat_fraction`` of a speech batch's utterances (long form).

        Uses the model's ``concatenate_utterances`` (method or ``astra.model`` function) with
        a generator seeded by (seed, step, process, batch), so a resumed run does the same.
        """
        fraction = self.cfg.run.concat_fraction
        if fraction <= 0 or batch.get("kind", "speech") != "speech" or is_empty_batch(batch):
            return batch
        concat = getattr(self.model, "concatenate_utterances", None)
        if not callable(concat):
            from astra.model import concatenate_utterances as concat
        run = self.cfg.run
        seed = ((run.seed * 1_000_003 + self.state.step) * 1009 + self.accelerator.process_index) * 7919
        generator = torch.Generator().manual_seed((seed + self.batches_in_epoch) % (2**31))
        return concat(batch, fraction, generator=generator)

    # ------------------------------------------------------------------ one step
    def _any_process(self, flag: bool) -> bool:
        """True if ``flag`` is true on any process (a collective when world size > 1)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=acc.device)
        return bool(acc.reduce(t, reduction="sum").item() > 0)

    def _set_identity_attention(self, step: int) -> None:
        enabled = identity_attention(step, self.cfg.losses)
        setter = getattr(self.model, "set_identity_attention", None)
        if callable(setter) and enabled != self._identity:
            setter(enabled)
            if self._identity is not None or enabled:
                log.info("identity attention %s at step %d", "on" if enabled else "off", step)
        self._identity = enabled

    def _train_step(self) -> dict[str, float]:
        acc = self.accelerator
        cfg = self.cfg
        step = self.state.step
        self._set_identity_attention(step)
        lr = learning_rate(step, cfg.optim, cfg.run.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.loss_module.step = step
        self.optimizer.zero_grad(set_to_none=True)
        accum = cfg.optim.grad_accum_steps
        add_text = cfg.optim.text_batches == "add"
        info: dict[str, float] = {"lr": lr}
        nonfinite_losses = None
        micro = speech = 0
        last = False
        while not last:
            with record_function("astra:data"):
                batch = self._next_batch()
            is_speech = batch.get("kind", "speech") == "speech"
            if cfg.run.alignment_every and is_speech and not is_empty_batch(batch):
                self._last_speech_batch = batch
            micro += 1
            speech += is_speech
            # "add": the step ends with its accum-th speech batch (text batches ride along)
            last = speech == accum if add_text else micro == accum
            sync = contextlib.nullcontext() if last else acc.no_sync(self.wrapped)
            with sync:
                with acc.autocast():
                    total, losses, counts = self.wrapped(batch)
                if total is None:
                    raise TrainingError(
                        f"step {step}: the model returned no loss for a {batch.get('kind')} batch; "
                        "check the model config (heads enabled)"
                    )
                bad = not bool(torch.isfinite(total).item())
                if self._any_process(bad):
                    nonfinite_losses = {k: float(v) for k, v in losses.items()}
                    break
                with record_function("astra:backward"):
                    acc.backward(total / accum)
            self._accumulate(batch, total, losses, counts)
        if nonfinite_losses is not None:
            self.optimizer.zero_grad(set_to_none=True)
            self._count_nonfinite(step, f"loss {nonfinite_losses}")
            return info
        max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else math.inf
        params = [p for p in self.model.parameters() if p.requires_grad]
        with record_function("astra:optimizer"):
            grad_norm = float(acc.clip_grad_norm_(params, max_norm))
        info["grad_norm"] = grad_norm
        if not math.isfinite(grad_norm) and cfg.run.mixed_precision != "fp16":
            self.optimizer.zero_grad(set_to_none=True)
            self._count_nonfinite(step, f"gradient norm {grad_norm}")
            return info
        with record_function("astra:optimizer"):
            self.optimizer.step()
        if cfg.run.mixed_precision == "fp16" and acc.optimizer_step_was_skipped:
            self._window["counts/fp16_overflow_skips"] += 1
        self.state.nonfinite_in_a_row = 0
        self._window["grad_norm"] += grad_norm if math.isfinite(grad_norm) else 0.0
        self._window_n["grad_norm"] += 1
        return info

    def _count_nonfinite(self, step: int, what: str) -> None:
        self.state.nonfinite_total += 1
        self.state.nonfinite_in_a_row += 1
        self._window["counts/nonfinite_skipped"] += 1
        log.warning(
            "step %d skipped: non-finite %s (%d in a row, %d in all)",
            step, what, self.state.nonfinite_in_a_row, self.state.nonfinite_total,
        )
        limit = self.cfg.run.max_nonfinite
        if self.state.nonfinite_in_a_row >= limit:
            raise TrainingError(
                f"stopping: the loss or gradient was non-finite for {limit} steps in a row "
                f"(last at step {step}: {what}); lower optim.lr, raise optim.warmup_steps, "
                "check the data, or use run.mixed_precision=no / bf16"
            )

    def _accumulate(self, batch: dict, total, losses: dict, counts: dict) -> None:
        w = self._window
        n = self._window_n
        if is_empty_batch(batch):  # a zero-contribution micro-batch: counted, not averaged in
            w["counts/dropped/empty_batch"] += 1
            return
        w["loss"] += float(total.detach())
        n["loss"] += 1
        for name, value in losses.items():
            w[f"loss/{name}"] += float(value)
            n[f"loss/{name}"] += 1
        for name, value in counts.items():
            if name.startswith("mean/"):  # a per-batch value the log window averages
                w[f"stats/{name[5:]}"] += float(value)
                n[f"stats/{name[5:]}"] += 1
            else:
                w[f"counts/{name}"] += float(value)
        w["audio_seconds"] += _batch_audio_seconds(batch)
        w[f"batches/{batch.get('kind', 'speech')}"] += 1

    # ------------------------------------------------------------------ logging
    def _flush_window(self) -> dict[str, float]:
        """Merge this log window over processes; returns scalars on the main process."""
        from accelerate.utils import gather_object

        acc = self.accelerator
        local = {"sums": dict(self._window), "ns": dict(self._window_n)}
        merged = gather_object([local]) if acc.num_processes > 1 else [local]
        elapsed = max(time.time() - self._window_start, 1e-9)
        self._window.clear()
        self._window_n.clear()
        self._window_start = time.time()
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
                self.state.counts[key] = self.state.counts.get(key, 0.0) + value
                scalars[key] = self.state.counts[key]
        scalars["throughput/audio_seconds_per_second"] = sums["audio_seconds"] / elapsed
        return scalars

    def _log(self, step: int, info: dict[str, float]) -> None:
        scalars = self._flush_window()
        scalars["lr"] = info["lr"]
        for name in getattr(self, "_weight_names", []):
            ramp_weights = loss_weights(step - 1, self.cfg.losses, [name])
            scalars[f"weight/{name}"] = ramp_weights[name]
        if self.accelerator.is_main_process:
            scalars.update(self._data_skip_scalars())
            if self._writer is not None:
                for key, value in scalars.items():
                    self._writer.add_scalar(key, value, step)
                self._writer.flush()
            if self._progress is not None:
                self._progress.set_postfix(
                    loss=f"{scalars.get('loss', float('nan')):.3f}",
                    lr=f"{info['lr']:.2e}",
                    audio_s_per_s=f"{scalars['throughput/audio_seconds_per_second']:.1f}",
                    refresh=False,  # shown at the bar's next redraw (every 30 s in a log file)
                )
            log.debug("step %d %s", step, scalars)
        self._last_scalars = scalars

    def _data_skip_scalars(self) -> dict[str, float]:
        """``data_skipped/<kind>/<reason>`` from the stream's ``skip_summary()`` (main process:
        index-time skips of the whole corpus plus decode-time skips of its own batches)."""
        summary = self.stream.skip_summary() if hasattr(self.stream, "skip_summary") else {}
        scalars = {}
        for kind, reasons in (summary or {}).items():
            if isinstance(reasons, dict):
                for reason, n in reasons.items():
                    if isinstance(n, (int, float)):
                        scalars[f"data_skipped/{kind}/{reason}"] = float(n)
            elif isinstance(reasons, (int, float)):
                scalars[f"data_skipped/{kind}"] = float(reasons)
        return scalars

    # ------------------------------------------------------------------ validation
    def _validate(self, step: int) -> dict[str, float] | None:
        """Validation loss and per-language WER: each process decodes its own shard of the
        validation batches, the main process merges them (None on the other processes)."""
        from accelerate.utils import gather_object

        from astra.train.validation import summarize_validation, validate_shard

        acc = self.accelerator
        if self.parts.eval_batches is None:
            return None
        device = acc.device
        shard = validate_shard(
            self.model,
            (to_device(b, device) for b in self._eval_batches()),
            self.cfg.losses,
            self.parts.tokenizer,
            decode_method=self.cfg.run.decode_method,
            autocast=acc.autocast,
        )
        shards = gather_object([shard]) if acc.num_processes > 1 else [shard]
        if not acc.is_main_process:
            return None
        result = summarize_validation(shards)
        if self._writer is not None:
            for key, value in result.items():
                self._writer.add_scalar(f"valid/{key}", value, step)
        if result:
            log.info(
                "step %d validation: %s",
                step,
                ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.items())),
            )
        else:
            log.warning("step %d: no validation batch", step)
        return result

    def _eval_batches(self):
        """Validation batches: the first ``run.valid_max_batches`` kept in memory, or (0) the
        whole iterable, re-read at every validation."""
        if not hasattr(self, "_eval_cache"):
            batches = self.parts.eval_batches()
            limit = self.cfg.run.valid_max_batches
            self._eval_cache = list(itertools.islice(batches, limit)) if limit > 0 else batches
            if limit > 0 and hasattr(batches, "utterances") and self.accelerator.num_processes == 1:
                everything = {u.language for u in batches.utterances}
                kept = {lang for b in self._eval_cache for lang in b.get("languages", [])}
                if everything - kept:
                    log.warning(
                        "validation: run.valid_max_batches=%d covers %s only; not validated: %s "
                        "(raise run.valid_max_batches to at least the number of languages)",
                        limit, ", ".join(sorted(kept)) or "nothing", ", ".join(sorted(everything - kept)),
                    )
        return self._eval_cache

    def _first_eval_batch(self) -> dict | None:
        """The first non-empty validation batch of this process (None if there is none)."""
        if not hasattr(self, "_first_eval"):
            batches = (b for b in self._eval_batches() if not is_empty_batch(b))
            self._first_eval = next(batches, None)
        return self._first_eval

    def _plot(self, step: int) -> None:
        if not self.accelerator.is_main_process or self.parts.eval_batches is None:
            return
        if not hasattr(self.model, "attention_maps"):
            return
        from astra.train.attention_plot import plot_attention

        batch = self._first_eval_batch()
        if batch is None:
            return
        path = self.out_dir / "plots" / f"attention_step{step:08d}.png"
        plot_attention(self.model, to_device(batch, self.accelerator.device), path, title=f"step {step}")
        log.info("attention plot: %s", path)

    def _log_alignment(self, step: int) -> None:
        """Alignment statistics (``astra.analysis.attention_stats``) of the first validation
        batch, else of this step's last training speech batch, as ``alignment/...`` scalars;
        a warning when a layer reverses time. Main process only."""
        if not self.accelerator.is_main_process or not hasattr(self.model, "attention_maps"):
            return
        from astra.analysis.attention_stats import flatten_report, model_alignment_report

        batch = self._first_eval_batch() if self.parts.eval_batches is not None else None
        if batch is None:
            batch = self._last_speech_batch
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
        if self._writer is not None:
            for key, value in flatten_report(report).items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()
        if report["reversal_alarm"]:
            layers = report["layers"]
            log.warning(
                "step %d: reversal alarm: self-attention reverses time in layer(s) %s "
                "(reversal %s); see docs/alignment.md (seed 003: InterCTC, "
                "losses.identity_attention_steps)",
                step,
                ", ".join(report["reversed_layers"]),
                ", ".join(f"{layers[n]['reversal']:.2f}" for n in report["reversed_layers"]),
            )

    # ------------------------------------------------------------------ checkpoints
    def _save(self, step: int) -> None:
        if step == self._last_saved_step:
            return
        acc = self.accelerator
        self.state.step = step
        sampler = {
            "stream": self.stream.state_dict(),
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
        }

        def write_files(folder: Path) -> None:
            save_config(self.cfg, folder / ckpt.CONFIG_FILE)
            ckpt.save_model_weights(self.model, folder / ckpt.MODEL_FILE)
            if self.parts.tokenizer_path is not None:
                shutil.copyfile(self.parts.tokenizer_path, folder / ckpt.TOKENIZER_FILE)
            ckpt.write_json(folder / ckpt.TRAINER_STATE, self.state.to_dict())

        ckpt.save_checkpoint(acc, self.ckpt_root, step, write_files, sampler)
        if acc.is_main_process:
            run = self.cfg.run
            removed = ckpt.prune_checkpoints(self.ckpt_root, run.keep_last, run.keep_best)
            for path in removed:
                log.debug("removed old checkpoint %s", path)
        self._last_saved_step = step

    # ------------------------------------------------------------------ main loop
    def run(self) -> Path:
        """Train until ``run.max_steps``; returns the last checkpoint folder."""
        with StopRequest() as stop:
            self._stop = stop
            return self._run()

    def _run(self) -> Path:
        self._setup()
        acc = self.accelerator
        run = self.cfg.run
        self._weight_names = sorted(self.cfg.losses.ramps)
        if acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            from astra.progress import progress_bar

            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            self._progress = progress_bar(
                total=run.max_steps, initial=self.state.step, desc="train", dynamic_ncols=True
            )
        self.wrapped.train()
        self._window_start = time.time()
        info = {"lr": 0.0}
        try:
            while self.state.step < run.max_steps:
                info = self._train_step()
                self.state.step += 1
                step = self.state.step
                self.state.metric = None
                if self._progress is not None:
                    self._progress.update(1)
                if step % run.log_every == 0 or step == run.max_steps:
                    self._log(step, info)
                is_best = False
                if run.validate_every and step % run.validate_every == 0:
                    is_best = self._after_validation(step)
                if run.plot_every and step % run.plot_every == 0:
                    self._plot(step)
                    acc.wait_for_everyone()
                if run.alignment_every and step % run.alignment_every == 0:
                    self._log_alignment(step)
                if step % run.save_every == 0 or is_best or step == run.max_steps:
                    self._save(step)
                if self._any_process(self._stop.requested is not None):
                    self.stopped_by = self._stop.requested or "a stop request on another process"
                    log.warning("stopping at step %d on request (%s)", step, self.stopped_by)
                    self._save(step)
                    break
        except KeyboardInterrupt:
            # a second Ctrl-C: the current step may be half done, keep the last checkpoint
            log.warning("interrupted twice: not saving the half-finished step %d", self.state.step)
            raise
        finally:
            self._close()
        if acc.is_main_process and hasattr(self.stream, "skip_summary"):
            summary = self.stream.skip_summary()
            if any(summary.values()) if isinstance(summary, dict) else summary:
                log.info("data skipped: %s", summary)
        return self.ckpt_root / ckpt.checkpoint_name(self._last_saved_step)

    def _after_validation(self, step: int) -> bool:
        from accelerate.utils import broadcast_object_list

        acc = self.accelerator
        result = self._validate(step)
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
        self.wrapped.train()
        return bool(is_best) and self.cfg.run.keep_best > 0

    def _close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
