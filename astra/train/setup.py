"""Setting a run up before its first step: Accelerate, initial weights (``--init``, a new
vocabulary), frozen modules, global CMVN statistics, the optimizer.

Each is a function of the config and the parts, called once by
:class:`astra.train.trainer.Trainer` in a fixed order (the order matters for exact resume:
the model's RNG state after set-up is what a resumed run restores).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from astra.errors import TrainingError
from astra.train import checkpoint as ckpt

log = logging.getLogger(__name__)


def make_accelerator(run):
    """An ``accelerate.Accelerator`` for ``run`` (a ``RunConfig``): CPU when asked or when no
    GPU is visible, ``run.mixed_precision``, DDP with ``find_unused_parameters`` (a text
    batch leaves the speech-only parameters unused)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

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
        raise TrainingError(
            f"cannot set up Accelerate (run.mixed_precision={run.mixed_precision!r}): {e}"
        ) from None


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices, none on biases and norm scales."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: torch.nn.Module, optim) -> torch.optim.Optimizer:
    """AdamW of ``optim`` (an ``OptimConfig``) over the trainable parameters; the learning
    rate is set at every step (:func:`astra.train.schedules.learning_rate`)."""
    return torch.optim.AdamW(
        param_groups(model, optim.weight_decay), lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps
    )


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


def freeze_for_finetuning(model: torch.nn.Module, finetune) -> None:
    """``finetune.freeze`` applied to ``model``; a prefix without parameters stops the run."""
    try:
        frozen = freeze_modules(model, finetune.freeze)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    log.info("frozen %d parameter tensors under %s", len(frozen), finetune.freeze)


def load_init(model: torch.nn.Module, init: Path, finetune, tokenizer):
    """Load the weights of checkpoint ``init`` into ``model`` (``finetune.strict``; with
    ``finetune.tokenizer`` re-indexed to the run's ``tokenizer``). Returns the
    :class:`astra.train.vocabulary.VocabularyTransfer`, or None without a new tokenizer."""
    strict = bool(finetune.strict) if finetune is not None else True
    new_vocabulary = finetune is not None and bool(getattr(finetune, "tokenizer", None))
    transfer = None
    try:
        folder = ckpt.resolve_checkpoint(init)
        state = ckpt.read_model_state(folder)
        if new_vocabulary:
            state, transfer = transfer_vocabulary(model, state, folder, tokenizer)
            log.info("finetune.tokenizer %s: %s", finetune.tokenizer, transfer.summary())
        report = ckpt.load_model_weights(model, state, strict=strict)
    except ValueError as e:
        hint = ""
        if "shapes do not fit" in str(e) and not new_vocabulary:
            hint = " (a tokenizer other than --init's needs finetune.tokenizer: docs/training.md)"
        raise TrainingError(f"--init {init}: {e}{hint}") from None
    log.info("initialised from %s: %s", init, report.summary())
    return transfer


def transfer_vocabulary(model: torch.nn.Module, state: dict, folder: Path, tokenizer):
    """``(state, transfer)``: ``state`` re-indexed from the tokenizer of checkpoint ``folder``
    to ``tokenizer`` (rows matched by piece string, :mod:`astra.train.vocabulary`)."""
    from astra.data.tokenizer import Tokenizer
    from astra.train.vocabulary import transfer_vocabulary as transfer_rows

    old = Tokenizer(folder / ckpt.TOKENIZER_FILE)
    pieces = [[t.id_to_piece(i) for i in range(t.vocab_size)] for t in (old, tokenizer)]
    return transfer_rows(state, model, pieces[0], pieces[1])


def set_feature_stats(accelerator, model: torch.nn.Module, feature_stats) -> None:
    """Global CMVN ``(mean [F], std [F])`` from ``feature_stats()`` computed on the main
    process, broadcast to every process and stored in the model (``set_feature_stats``)."""
    if feature_stats is None or not hasattr(model, "set_feature_stats"):
        return
    from accelerate.utils import broadcast_object_list

    stats = [None]
    if accelerator.is_main_process:
        try:
            mean, std = feature_stats()
        except ValueError as e:
            raise TrainingError(f"feature statistics: {e}") from None
        stats = [(mean.cpu(), std.cpu())]
    if accelerator.num_processes > 1:
        broadcast_object_list(stats, from_process=0)
    mean, std = stats[0]
    model.set_feature_stats(mean, std)
    log.info("global CMVN stats set (%d features)", mean.numel())
