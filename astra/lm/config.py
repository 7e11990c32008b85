"""Typed settings of LM shallow fusion (``astra evaluate`` / ``astra transcribe`` flags)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class LmFusionConfig:
    """``--lm DIR --lm-weight W[,W...] --length-bonus B[,B...] --ilm-weight W2
    [--lm-candidates C] [--lm-language L]``.

    ``lm_weights`` and ``length_bonuses``: one value each, or several for a sweep over every
    pair (:meth:`sweep_points`; evaluate on a validation split picks the best).
    ``lm_candidates``: the pre-beam, tokens per hypothesis the LM scores
    (:attr:`astra.lm.fusion.LmFusion.candidates`; ``None``: twice the beam).
    ``lm_language``: the LM used when the utterances have no language (transcribe)."""

    lm_dir: str | None = None
    lm_weights: list[float] = field(default_factory=lambda: [0.3])
    length_bonuses: list[float] = field(default_factory=lambda: [0.0])
    ilm_weight: float = 0.0
    lm_candidates: int | None = None
    lm_language: str | None = None

    def check(self) -> None:
        """``ValueError`` for a negative weight, or fusion settings without ``lm_dir``."""
        if not self.lm_weights:
            raise ValueError("--lm-weight needs at least one value")
        bad = [w for w in self.lm_weights if not w >= 0]
        if bad:
            raise ValueError(f"--lm-weight must be >= 0, got {bad[0]}")
        if not self.length_bonuses:
            raise ValueError("--length-bonus needs at least one value")
        if not all(math.isfinite(b) for b in self.length_bonuses):
            raise ValueError(f"--length-bonus must be finite numbers, got {self.length_bonuses}")
        if not self.ilm_weight >= 0:
            raise ValueError(f"--ilm-weight must be >= 0, got {self.ilm_weight}")
        if self.lm_candidates is not None and self.lm_candidates < 1:
            raise ValueError(f"--lm-candidates must be >= 1, got {self.lm_candidates}")

    @property
    def is_sweep(self) -> bool:
        """More than one (LM weight, length bonus) pair."""
        return len(self.sweep_points()) > 1

    def sweep_points(self) -> list[tuple[float, float]]:
        """Every ``(lm_weight, length_bonus)`` pair, weights outer: the grid a sweep decodes."""
        return [(w, b) for w in self.lm_weights for b in self.length_bonuses]
