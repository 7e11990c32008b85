"""The choices of the ASTRA consistency loss (:func:`astra.losses.astra_consistency.astra_consistency`),
defined once for the loss and for ``ModelConfig`` (torch-free, so configs load without torch).

"ASTRA: Aligning Speech and Text Representations for ASR without Sampling" (arXiv:2406.06664).
"""

from __future__ import annotations

from typing import Literal, get_args

ConsistencyMode = Literal["expected", "weighted_rnnt"]  # how the alignment lattice weighs the costs
ConsistencyDistance = Literal["mae", "mse"]  # cost between a text frame and a speech frame

CONSISTENCY_MODES: tuple[str, ...] = get_args(ConsistencyMode)
CONSISTENCY_DISTANCES: tuple[str, ...] = get_args(ConsistencyDistance)
