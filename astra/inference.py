"""Loading a trained model for inference: ``load_model(path_or_repo)``.

Three sources give the same :class:`LoadedModel` (model in eval mode, tokenizer, config):

* an astra **checkpoint** folder (``config.yaml``, ``model.safetensors``, ``tokenizer.model``;
  see ``astra.checkpoint_paths``), or a run / ``checkpoints`` folder (its latest checkpoint);
* an **exported** folder written by ``astra export`` (``config.json``, ``model.safetensors``,
  ``tokenizer.model``, ``README.md``), the layout of a Hugging Face model repository;
* a **Hub repo id** (``owner/name``, optionally ``owner/name@revision``), fetched with
  ``huggingface_hub.snapshot_download`` limited to the files above.

A downloaded model is untrusted input, so loading never unpickles: weights are read only from
``model.safetensors`` (checked to be a safetensors file), the config from JSON/YAML (safe
loader), the tokenizer from its SentencePiece model. A folder offering pickled weights
(``pytorch_model.bin``, ``*.pt``, ...) instead is refused with a one-line ``ValueError``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra.checkpoint_paths import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, resolve_checkpoint
from astra.data.config import DataConfig
from astra.model.config import ModelConfig, upgrade_model_config

EXPORT_CONFIG = "config.json"  # exported folder / Hub repo
MODEL_CARD = "README.md"
EXPORT_FORMAT = "astra"
EXPORT_FORMAT_VERSION = 1
# what a Hub download fetches: never a pickle
HUB_FILES = [MODEL_FILE, TOKENIZER_FILE, EXPORT_CONFIG, CONFIG_FILE, MODEL_CARD]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


@dataclass
class InferenceConfig:
    """What inference needs of a run config: the model and the data handling (language tags,
    transcript normalisation, batching). ``data`` has no sources: the caller sets them."""

    model: ModelConfig
    data: DataConfig


@dataclass
class ModelFiles:
    """A located model: ``folder`` on disk, its ``kind`` (``checkpoint`` or ``export``), and
    ``name`` (what to call it in reports: the folder, or the Hub repo id) and ``repo_id``
    (None for a local folder)."""

    folder: Path
    kind: str
    name: str
    repo_id: str | None = None

    @property
    def weights(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def tokenizer(self) -> Path:
        return self.folder / TOKENIZER_FILE

    def raw_config(self) -> dict[str, Any]:
        """The run config as plain data (``model``, ``data``, ... sections), its ``model``
        section upgraded from older versions (:func:`astra.model.config.upgrade_model_config`)."""
        if self.kind == "export":
            config = read_export_config(self.folder / EXPORT_CONFIG)
            raw = {"model": config["model"], "data": config.get("data", {})}
        else:
            from astra.config import load_yaml

            raw = load_yaml(self.folder / CONFIG_FILE)
        if isinstance(raw.get("model"), dict):
            raw["model"] = upgrade_model_config(raw["model"], self.name)
        return raw

    def config(self) -> InferenceConfig:
        from astra.config import ConfigError, from_dict

        raw = self.raw_config()
        try:
            return InferenceConfig(
                model=from_dict(ModelConfig, raw.get("model") or {}, "model."),
                data=from_dict(DataConfig, raw.get("data") or {}, "data."),
            )
        except ConfigError as e:
            raise ValueError(f"{self.name}: {e}") from None


@dataclass
class LoadedModel:
    """What :func:`load_model` returns."""

    model: Any  # astra.model.AstraModel in eval mode
    tokenizer: Any  # astra.data.tokenizer.Tokenizer
    config: InferenceConfig
    files: ModelFiles


def read_export_config(path: Path) -> dict[str, Any]:
    """``config.json`` of an exported model; a ``ValueError`` for anything else."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(config, dict) or config.get("model_type") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not an astra model config (model_type is not {EXPORT_FORMAT!r})")
    if not isinstance(config.get("model"), dict):
        raise ValueError(f"{path}: no 'model' section")
    return config


def _pickles(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def check_safetensors(path: Path) -> None:
    """Raise ``ValueError`` unless ``path`` is a safetensors file (8-byte header length, then
    a JSON header): a pickle or a torch zip renamed ``model.safetensors`` is refused unread."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if len(head) == 9 and head[8:9] == b"{" and 0 < size <= path.stat().st_size - 8:
        return
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        raise ValueError(
            f"{path} is a pickle / torch.save file, not safetensors: refused (astra never "
            "unpickles model files; convert the weights to safetensors)"
        )
    raise ValueError(f"{path} is not a safetensors file")


def _describe_folder(folder: Path) -> ModelFiles | None:
    """The model in ``folder`` itself, or None if it holds none."""
    if not (folder / MODEL_FILE).is_file():
        pickles = _pickles(folder) if folder.is_dir() else []
        if pickles:
            raise ValueError(
                f"{folder} offers pickled weights ({', '.join(pickles)}) and no {MODEL_FILE}: "
                "refused (astra loads only safetensors weights, never pickles)"
            )
        return None
    kind = "export" if (folder / EXPORT_CONFIG).is_file() else "checkpoint"
    config = folder / (EXPORT_CONFIG if kind == "export" else CONFIG_FILE)
    for needed in (config, folder / TOKENIZER_FILE):
        if not needed.is_file():
            raise ValueError(f"{folder}: {needed.name} is missing")
    return ModelFiles(folder.resolve(), kind, str(folder))


def is_repo_id(text: str) -> bool:
    """True for text shaped like a Hub model id, ``owner/name`` or ``owner/name@revision``."""
    return bool(_REPO_ID.match(text)) and not text.startswith((".", "/"))


def download(repo_id: str, cache_dir: str | None = None) -> Path:
    """``snapshot_download`` of ``repo_id[@revision]`` limited to :data:`HUB_FILES`."""
    from huggingface_hub import snapshot_download

    repo, _, revision = repo_id.partition("@")
    try:
        folder = snapshot_download(
            repo_id=repo, revision=revision or None, allow_patterns=HUB_FILES, cache_dir=cache_dir
        )
    except Exception as e:  # network, authentication, missing repo: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"no local folder {repo_id}, and the Hub repo could not be fetched: {first}") from None
    return Path(folder)


def locate_model(path_or_repo: str | Path, cache_dir: str | None = None) -> ModelFiles:
    """The :class:`ModelFiles` of a checkpoint / run / exported folder or a Hub repo id.

    Raises:
        ValueError: nothing usable there (one line naming the path or repo).
    """
    path = Path(path_or_repo)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file: give the model's folder")
        found = _describe_folder(path)
        if found is not None:
            return found
        # a run / checkpoints folder
        found = _describe_folder(resolve_checkpoint(path))
        if found is None:
            raise ValueError(f"no model found at {path}")
        return found
    text = str(path_or_repo)
    if not is_repo_id(text):
        raise ValueError(f"{text}: no such folder (and not a Hub repo id owner/name)")
    found = _describe_folder(download(text, cache_dir))
    if found is None:
        raise ValueError(
            f"Hub repo {text} has no {MODEL_FILE} (astra downloads and loads only safetensors "
            "weights, never pickled ones)"
        )
    return ModelFiles(found.folder, found.kind, text, repo_id=text)


def read_weights(files: ModelFiles):
    """The state dict of ``files`` (safetensors only, checked before reading)."""
    from safetensors.torch import load_file

    check_safetensors(files.weights)
    return load_file(str(files.weights))


def load_model(path_or_repo: str | Path, device: str = "cpu", cache_dir: str | None = None) -> LoadedModel:
    """Load a model for inference from a folder or a Hub repo id (see the module docstring).

    Returns a :class:`LoadedModel`: the ``AstraModel`` in eval mode on ``device``, its
    ``Tokenizer`` and :class:`InferenceConfig`. Raises ``ValueError`` (one line) when the
    source is missing, unsafe (pickled weights) or does not fit (shapes, vocabulary).
    """
    from astra.data.tokenizer import Tokenizer
    from astra.model import AstraModel

    files = locate_model(path_or_repo, cache_dir)
    config = files.config()
    tokenizer = Tokenizer(files.tokenizer)
    model = AstraModel(config.model, tokenizer.vocab_size)
    state = read_weights(files)
    own = model.state_dict()
    bad = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if bad or missing or unexpected:
        if bad:
            detail = f"shapes differ: {bad[:3]}"
        else:
            detail = f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        raise ValueError(f"{files.name}: weights do not fit its config ({detail})")
    model.load_state_dict(state)
    model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, config, files)
