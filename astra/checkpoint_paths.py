"""Where a checkpoint's files are: the folder layout written by :mod:`astra.train.checkpoint`
and read by :mod:`astra.inference`, and finding the checkpoint of a run (torch-free).

A run keeps its checkpoints in ``<out_dir>/checkpoints/step-00001000/``; a checkpoint is
complete once its ``trainer_state.json`` exists (written last).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STEP_PREFIX = "step-"
TRAINER_STATE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"  # the full run config
TOKENIZER_FILE = "tokenizer.model"


def checkpoint_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``root``, oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.is_symlink() or not path.is_dir() or not path.name.startswith(STEP_PREFIX):
            continue
        if not (path / TRAINER_STATE).is_file():
            continue
        try:
            step = int(path.name[len(STEP_PREFIX) :])
        except ValueError:
            continue
        found.append((step, path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def read_trainer_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / TRAINER_STATE).read_text(encoding="utf-8"))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint, a ``checkpoints/`` folder or a run folder."""
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        return path.resolve()
    for root in (path, path / "checkpoints"):
        latest = latest_checkpoint(root)
        if latest is not None:
            return latest
    raise ValueError(f"no checkpoint found at {path} (expected a folder with {MODEL_FILE})")
