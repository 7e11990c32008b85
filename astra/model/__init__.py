"""Front end, Conformer, encoders, Aligner decoder, heads, AstraModel, decoding, presets.

See ``docs/model.md``. Public names: :class:`AstraModel`, :class:`ModelConfig`,
:class:`ModelOutput`, :func:`preset` (the training-time utterance concatenation is
:func:`astra.data.batch_ops.concatenate_utterances`).
"""

from astra.model.astra_model import DECODE_METHODS, AstraModel, ModelOutput
from astra.model.config import ModelConfig
from astra.model.presets import PRESETS, preset

__all__ = ["AstraModel", "DECODE_METHODS", "ModelConfig", "ModelOutput", "PRESETS", "preset"]
