"""``TrainConfig``: the whole run config of ``astra pretrain`` / ``astra finetune``.

Sections: ``model`` (:class:`astra.model.config.ModelConfig`), ``data``
(:class:`astra.data.config.DataConfig`), ``losses``, ``optim``, ``run``, ``finetune``
(:mod:`astra.train.sections`). Load with ``astra.config.load_config(TrainConfig, path,
overrides)``; a copy is saved next to every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from astra.data.config import DataConfig
from astra.model.config import ModelConfig
from astra.train.sections import FinetuneConfig, LossConfig, OptimConfig, RunConfig


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def validate(self) -> None:
        """Cross-section checks (each section checks itself when loaded)."""
        if self.data.subsampling_factor != self.model.subsampling:
            raise ValueError(
                f"data.subsampling_factor={self.data.subsampling_factor} differs from "
                f"model.subsampling={self.model.subsampling}"
            )
        uses_text = bool(self.data.unpaired_text) and self.data.text_ratio > 0 and self.losses.text_aligner > 0
        if uses_text and self.model.text_mask_prob <= 0:
            raise ValueError(
                "unpaired text is trained on (data.unpaired_text, data.text_ratio > 0, losses.text_aligner > 0) "
                "but model.text_mask_prob=0: the text Aligner loss is scored on masked tokens only (the "
                "others are a copy task); set model.text_mask_prob > 0 (e.g. 0.3)"
            )
