"""``TrainConfig``: the whole run config of ``astra pretrain`` / ``astra finetune``.

Sections: ``model`` (:class:`astra.model.config.ModelConfig`), ``data``
(:class:`astra.data.config.DataConfig`), ``losses``, ``optim``, ``run``, ``finetune``
(:mod:`astra.train.sections`). Load with :func:`load_train_config` (what ``astra pretrain``
/ ``astra finetune`` do) or ``astra.config.load_config(TrainConfig, path, overrides)``; a
copy is saved next to every checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from astra.data.config import DataConfig
from astra.model.config import ModelConfig
from astra.train.sections import FinetuneConfig, LossConfig, OptimConfig, RunConfig

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        # the data guards (U + 1 tokens fit in T' encoder frames) read the model's front end
        self.data.subsampling_factor = self.model.subsampling

    def validate(self) -> None:
        """Cross-section checks (each section checks itself when loaded)."""
        uses_text = bool(self.data.unpaired_text) and self.data.text_ratio > 0 and self.losses.text_aligner > 0
        if uses_text and self.model.text_mask_prob <= 0:
            raise ValueError(
                "unpaired text is trained on (data.unpaired_text, data.text_ratio > 0, losses.text_aligner > 0) "
                "but model.text_mask_prob=0: the text Aligner loss is scored on masked tokens only (the "
                "others are a copy task); set model.text_mask_prob > 0 (e.g. 0.3)"
            )
        if self.model.consistency and self.model.consistency_alignment == "pruned" and self.losses.rnnt <= 0:
            raise ValueError(
                "model.consistency_alignment='pruned' reads the RNN-T head's full joiner, which only losses.rnnt "
                "trains, but losses.rnnt=0; set losses.rnnt > 0 or model.consistency_alignment: simple"
            )
        if self.losses.text_rnnt > 0 and self.model.rnnt_head and self.model.rnnt_layer < self.model.text_entry_layer:
            raise ValueError(
                f"losses.text_rnnt={self.losses.text_rnnt} but the RNN-T head reads layer model.rnnt_layer="
                f"{self.model.rnnt_layer}, below model.text_entry_layer={self.model.text_entry_layer}, where the "
                "text path has no frames; set losses.text_rnnt: 0"
            )


def load_train_config(path: str | Path, overrides: list[str], init: Path | None = None) -> TrainConfig:
    """The run config of YAML file ``path`` with ``key=value`` ``overrides``.

    With ``init`` (a checkpoint or exported folder, ``astra finetune --init``): a config
    without a ``model`` section takes the checkpoint's, and ``data.tokenizer`` defaults to
    the checkpoint's tokenizer, or is ``finetune.tokenizer`` when that is set (setting both
    to different files is a :class:`astra.errors.ConfigError`). ``data.subsampling_factor``
    is derived from ``model.subsampling`` (:class:`TrainConfig`); a file that sets it to another
    value is a :class:`astra.errors.ConfigError`.
    """
    from astra.config import ConfigError, apply_overrides, from_dict, load_yaml

    raw = load_yaml(path)
    if init is not None and "model" not in raw:
        from astra.inference import locate_model

        raw["model"] = locate_model(init).raw_config().get("model", {})
        log.info("model config taken from %s", init)
    raw = apply_overrides(TrainConfig, raw, overrides)
    if init is not None:
        raw["data"] = _finetuning_tokenizer(raw, path, init)
    try:
        cfg = from_dict(TrainConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    asked = (raw.get("data") or {}).get("subsampling_factor")
    if asked is not None and asked != cfg.model.subsampling:
        raise ConfigError(
            f"{path}: data.subsampling_factor={asked} differs from model.subsampling={cfg.model.subsampling}; "
            "it is derived from model.subsampling: drop it"
        )
    return cfg


def _finetuning_tokenizer(raw: dict, path: str | Path, init: Path) -> dict:
    """The ``data`` section of a fine-tuning config with its ``tokenizer`` filled in."""
    from astra.config import ConfigError
    from astra.inference import TOKENIZER_FILE

    data = dict(raw.get("data") or {})
    new_tokenizer = (raw.get("finetune") or {}).get("tokenizer")
    if new_tokenizer:
        if data.get("tokenizer") and Path(data["tokenizer"]).resolve() != Path(new_tokenizer).resolve():
            raise ConfigError(
                f"{path}: data.tokenizer ({data['tokenizer']}) and finetune.tokenizer "
                f"({new_tokenizer}) differ: set only finetune.tokenizer"
            )
        data["tokenizer"] = new_tokenizer
    elif not data.get("tokenizer") and (init / TOKENIZER_FILE).is_file():
        data["tokenizer"] = str(init / TOKENIZER_FILE)
    return data
