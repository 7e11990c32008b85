"""Checkpoint folders: atomic save, retention, resume, averaging (the layout and finding a run's
checkpoint: ``astra.checkpoint_paths``; inference: ``astra.inference``).

A checkpoint is a folder ``<out_dir>/checkpoints/step-00001000/`` holding

* ``config.yaml`` - the full run config (``astra.config.save_config``),
* ``model.safetensors`` - the state dict of the unwrapped model (with CMVN buffers),
* ``tokenizer.model`` - a copy of the SentencePiece model,
* ``trainer_state.json`` - step, epoch, counters, validation metrics (written last),
* ``accelerate/`` - ``Accelerator.save_state`` (model, optimizer, grad scaler, RNG states of
  every process) plus ``sampler_state_<rank>.pt``, the data stream state of every process.

Saving writes everything into ``.tmp-step-...`` and renames it with ``os.replace`` only when
complete, so a crash during a save never touches the previous checkpoints; leftover temp
folders are ignored and removed by the next save.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from astra.checkpoint_paths import (  # the folder layout, shared with astra.inference
    CONFIG_FILE,
    MODEL_FILE,
    STEP_PREFIX,
    TOKENIZER_FILE,
    TRAINER_STATE,
    checkpoint_name,
    list_checkpoints,
    read_trainer_state,
    resolve_checkpoint,
)

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
ACCELERATE_DIR = "accelerate"
BEST_LINK = "best"


def _fsync_tree(path: Path) -> None:
    for sub in sorted(path.rglob("*")):
        if sub.is_file():
            with open(sub, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write the model's state dict as safetensors (tied tensors are stored as copies)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def save_checkpoint(
    accelerator,
    root: str | Path,
    step: int,
    write_files: Callable[[Path], None],
    sampler_state: Any,
) -> Path:
    """Save a checkpoint of ``step`` atomically; every process must call this.

    ``write_files(folder)`` runs on the main process only and writes ``config.yaml``,
    ``model.safetensors``, ``tokenizer.model`` and, last, ``trainer_state.json`` into the
    temporary folder. ``sampler_state`` is this process's data-stream state.
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{checkpoint_name(step)}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    acc_dir = tmp / ACCELERATE_DIR
    accelerator.save_state(str(acc_dir))
    torch.save(sampler_state, acc_dir / f"sampler_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_files(tmp)
        if not (tmp / TRAINER_STATE).is_file():
            raise RuntimeError(f"checkpoint writer did not write {TRAINER_STATE}")
        _fsync_tree(tmp)
        if final.exists():
            old = root / f"{TMP_PREFIX}old-{final.name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        log.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_sampler_state(path: str | Path, process_index: int) -> Any:
    """The data-stream state process ``process_index`` saved into checkpoint ``path``."""
    file = Path(path) / ACCELERATE_DIR / f"sampler_state_{process_index}.pt"
    if not file.is_file():
        raise ValueError(
            f"{path} has no sampler state for process {process_index}: resume with the same "
            "number of processes the checkpoint was written with"
        )
    return torch.load(file, map_location="cpu", weights_only=True)


def _metric_of(path: Path) -> float | None:
    try:
        value = read_trainer_state(path).get("metric")
    except (OSError, ValueError):
        return None
    return None if value is None else float(value)


def best_checkpoints(root: str | Path, keep_best: int) -> list[Path]:
    """Up to ``keep_best`` checkpoints with the lowest recorded validation metric."""
    scored = [(m, p) for p in list_checkpoints(root) if (m := _metric_of(p)) is not None]
    scored.sort(key=lambda mp: (mp[0], -int(mp[1].name[len(STEP_PREFIX) :])))
    return [p for _, p in scored[:keep_best]]


def prune_checkpoints(root: str | Path, keep_last: int, keep_best: int) -> list[Path]:
    """Delete all but the last ``keep_last`` and the best ``keep_best`` checkpoints.

    Updates the ``best`` symlink to the best one. Returns the deleted folders.
    """
    root = Path(root)
    ckpts = list_checkpoints(root)
    best = best_checkpoints(root, keep_best) if keep_best > 0 else []
    keep = set(ckpts[-keep_last:]) | set(best)
    removed = []
    for path in ckpts:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    link = root / BEST_LINK
    if best:
        tmp_link = root / f"{TMP_PREFIX}{BEST_LINK}"
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        tmp_link.symlink_to(best[0].name)
        os.replace(tmp_link, link)
    elif link.is_symlink():
        link.unlink()
    return removed


@dataclass
class LoadReport:
    """What :func:`load_model_weights` did."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model

    def summary(self) -> str:
        def names(keys: list[str]) -> str:
            shown = ", ".join(keys[:8])
            return shown + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.missing:
            parts.append(f"kept initial values of {len(self.missing)}: {names(self.missing)}")
        if self.unexpected:
            parts.append(f"ignored {len(self.unexpected)} from the checkpoint: {names(self.unexpected)}")
        return "; ".join(parts)


def load_model_weights(
    model: torch.nn.Module, state: dict[str, torch.Tensor] | str | Path, strict: bool = True
) -> LoadReport:
    """Copy weights into ``model``; a shape mismatch is always a ``ValueError`` naming the keys.

    ``state`` is a state dict or a checkpoint folder / ``.safetensors`` file. With ``strict``,
    missing or unexpected keys are errors too; otherwise they are reported.
    """
    if not isinstance(state, dict):
        state = read_model_state(state)
    own = model.state_dict()
    mismatched = [
        f"{k} {tuple(v.shape)} in checkpoint vs {tuple(own[k].shape)} in model"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise ValueError("checkpoint shapes do not fit the model: " + "; ".join(mismatched[:5]))
    report = LoadReport(
        loaded=sorted(k for k in state if k in own),
        missing=sorted(k for k in own if k not in state),
        unexpected=sorted(k for k in state if k not in own),
    )
    if strict and (report.missing or report.unexpected):
        raise ValueError("checkpoint does not fit the model: " + report.summary())
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    return report


def read_model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint folder or a ``.safetensors`` file."""
    from safetensors.torch import load_file

    from astra.inference import check_safetensors

    path = Path(path)
    file = path if path.suffix == ".safetensors" else resolve_checkpoint(path) / MODEL_FILE
    if not file.is_file():
        raise ValueError(f"model weights not found: {file}")
    check_safetensors(file)
    return load_file(str(file))


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of ``paths`` (floating tensors, in float64).

    Integer tensors (counters) are taken from the last checkpoint; every checkpoint must
    have the same keys and shapes.
    """
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    states = [read_model_state(p) for p in paths]
    first = states[-1]
    for p, s in zip(paths, states, strict=True):
        if s.keys() != first.keys():
            diff = sorted(set(s) ^ set(first))[:5]
            raise ValueError(f"{p}: different weights than {paths[-1]} ({diff})")
        for k, v in s.items():
            if v.shape != first[k].shape:
                raise ValueError(f"{p}: {k} has shape {tuple(v.shape)}, expected {tuple(first[k].shape)}")
    averaged = {}
    for k, v in first.items():
        if v.is_floating_point():
            total = torch.zeros_like(v, dtype=torch.float64)
            for s in states:
                total += s[k].to(torch.float64)
            averaged[k] = (total / len(states)).to(v.dtype)
        else:
            averaged[k] = v.clone()
    return averaged


def write_averaged_checkpoint(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Average ``paths`` into a new checkpoint folder ``out`` usable by ``astra.inference.load_model``."""
    from safetensors.torch import save_file

    paths = [resolve_checkpoint(p) for p in paths]
    averaged = average_checkpoints(paths)
    out = Path(out)
    tmp = out.with_name(f"{TMP_PREFIX}{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in averaged.items()}, str(tmp / MODEL_FILE))
    last = paths[-1]
    for name in (CONFIG_FILE, TOKENIZER_FILE):
        if (last / name).is_file():
            shutil.copyfile(last / name, tmp / name)
    state = read_trainer_state(last)
    state["averaged_from"] = [str(p) for p in paths]
    write_json(tmp / TRAINER_STATE, state)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


# older checkpoints prepared a loss wrapper around the model, whose state-dict keys had this prefix
_OLD_WRAPPER_PREFIX = "model."
_ACCELERATE_MODEL_FILE = "model.safetensors"  # Accelerator.save_state's file of the (first) model


@contextlib.contextmanager
def accelerate_state_for(model: torch.nn.Module, acc_dir: Path) -> Iterator[Path]:
    """The ``accelerate/`` folder to pass to ``Accelerator.load_state`` for ``model``.

    Checkpoints written before ``AstraModel.forward`` existed hold the model's state under the
    loss wrapper's ``model.`` prefix; for those a temporary folder is given whose
    ``model.safetensors`` has the prefix removed (the other files are links to the originals:
    the optimizer state is keyed by parameter order, which is the same). Other folders are
    given as they are.
    """
    from safetensors.torch import load_file, save_file

    weights = acc_dir / _ACCELERATE_MODEL_FILE
    own = set(model.state_dict())
    saved = load_file(str(weights)) if weights.is_file() else {}
    if not saved or set(saved) == own or {k.removeprefix(_OLD_WRAPPER_PREFIX) for k in saved} != own:
        yield acc_dir
        return
    log.info("%s: model state saved under the old loss wrapper, read without its %r prefix",
             acc_dir, _OLD_WRAPPER_PREFIX)
    with tempfile.TemporaryDirectory(prefix="astra-resume-") as tmp:
        for entry in acc_dir.iterdir():
            if entry.name != _ACCELERATE_MODEL_FILE:
                (Path(tmp) / entry.name).symlink_to(entry.resolve())
        save_file({k.removeprefix(_OLD_WRAPPER_PREFIX): v.contiguous() for k, v in saved.items()},
                  str(Path(tmp) / _ACCELERATE_MODEL_FILE))
        yield Path(tmp)
