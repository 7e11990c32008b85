"""Data pipeline: audio I/O, FLEURS and local corpora, unpaired text, tokenizer, samplers,
batches, bad-data accounting and checks (docs/data.md).

Entry points (imported lazily so ``astra.data.config`` stays light):
``build_train_stream``, ``build_eval_batches``, ``compute_feature_stats`` (:mod:`.stream`),
``load_corpus``, ``load_utterances`` (:mod:`.corpus`), ``load_audio`` (:mod:`.audio`),
``Tokenizer`` (:mod:`.tokenizer`), ``DataConfig`` (:mod:`.config`).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DataConfig": "astra.data.config",
    "build_train_stream": "astra.data.stream",
    "build_eval_batches": "astra.data.stream",
    "compute_feature_stats": "astra.data.stream",
    "load_corpus": "astra.data.corpus",
    "load_utterances": "astra.data.corpus",
    "load_audio": "astra.data.audio",
    "Tokenizer": "astra.data.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'astra.data' has no attribute {name!r}")
