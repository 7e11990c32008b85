"""Builds the real :class:`TrainingParts` (AstraModel, data stream, tokenizer, validation)."""

from __future__ import annotations

import logging
from pathlib import Path

from astra.errors import TrainingError
from astra.train.config import TrainConfig
from astra.train.trainer import TrainingParts

log = logging.getLogger(__name__)


def tokenizer_path(cfg: TrainConfig) -> Path:
    """The SentencePiece model of ``data.tokenizer``; a clear error when unset or missing."""
    if not cfg.data.tokenizer:
        raise TrainingError("data.tokenizer is not set: give the path of a SentencePiece .model")
    path = Path(cfg.data.tokenizer)
    if not path.is_file():
        raise TrainingError(f"data.tokenizer: file not found: {path}")
    return path


def build_parts(cfg: TrainConfig, rank: int, world_size: int, finetune: bool = False) -> TrainingParts:
    """Model, rank-sharded train stream, tokenizer, lazy validation batches and CMVN stats.

    With ``finetune`` and ``finetune.text_injection=false`` no unpaired text is loaded.
    """
    from astra.data import Tokenizer, build_eval_batches, build_train_stream, compute_feature_stats
    from astra.model import AstraModel

    path = tokenizer_path(cfg)
    tokenizer = Tokenizer(path)
    model = AstraModel(cfg.model, tokenizer.vocab_size)
    data = cfg.data
    if finetune and not cfg.finetune.text_injection and data.text_ratio > 0:
        log.info("finetune.text_injection=false: no unpaired-text batches (data.text_ratio ignored)")
        from dataclasses import replace

        data = replace(data, text_ratio=0.0, unpaired_text=[])
    try:
        stream = build_train_stream(data, tokenizer, rank=rank, world_size=world_size, seed=cfg.run.seed,
                                    concat_fraction=cfg.run.concat_fraction)
    except ValueError as e:
        raise TrainingError(f"training data: {e}") from None
    languages = cfg.run.valid_languages or (data.languages or None)

    def eval_batches():
        try:
            return build_eval_batches(
                data, tokenizer, split=cfg.run.valid_split, languages=languages,
                rank=rank, world_size=world_size, report_training_skips=rank == 0,
            )
        except ValueError as e:
            log.warning("no validation data (%s): validation skipped", e)
            return []

    def feature_stats():
        return compute_feature_stats(
            data, max_utterances=cfg.run.feature_stats_utterances, seed=cfg.run.seed
        )

    run = cfg.run
    return TrainingParts(
        model=model,
        train_stream=stream,
        tokenizer=tokenizer,
        tokenizer_path=path,
        eval_batches=eval_batches if run.validate_every or run.plot_every or run.alignment_every else None,
        feature_stats=feature_stats,
    )
