"""Alignment statistics of self-attention maps: locality, front alignment, reversal.

An attention matrix ``A [T', T']`` (rows: output positions i, columns: input positions j,
rows sum to 1) is summarised by the input position each row reads most, its *peak*
``p_i = argmax_j A[i, j]``. With ``L`` valid frames and ``U`` output positions the Aligner
reads (U tokens, plus ``<eos>`` if the caller counts it):

* **locality** — mean over the L rows of the mass within ``window`` frames of the
  diagonal, ``sum_{|j-i|<=w} A[i, j]``. 1 for identity attention; about ``(2w+1)/L`` for
  uniform attention. Early (in-place encoding) layers score high.
* **monotonicity** — Pearson correlation of ``i`` with ``p_i`` over all L rows, in [-1, 1]
  (0 when the peaks do not vary). +1 for the diagonal, -1 for the anti-diagonal.
* **front alignment** — do the first U rows walk forwards across the whole input, as in
  the Aligner's transducing layer? With steps ``d_i = p_{i+1} - p_i`` (i < U-1),
  ``F = sum max(d, 0)`` and ``Bk = sum max(-d, 0)``: direction ``(F - Bk) / (F + Bk)``
  (1 if every move is forwards), coverage ``(max p - min p) / (L (U-1) / U)`` clipped to
  [0, 1] (the ideal span of U evenly spaced segments), and
  ``front_alignment = max(direction, 0) * coverage``. Identity attention with U << L
  scores about U/L (monotone but not spread), a front-aligned map about 1.
* **front reversal** — the same walked backwards: ``max(-direction, 0) * coverage``.
* **reversal** — ``max(front_reversal, max(-monotonicity, 0))``: a layer that flips time
  (seed 003: anti-diagonal self-attention) or aligns tokens backwards scores near 1.

Layer labels (first match): ``reversed`` (reversal >= ``reversal_threshold``),
``transducing`` (front_alignment >= ``front_threshold`` and > locality), ``local``
(locality >= ``local_threshold``), ``diffuse``. The *transducing layer* is the layer with
the highest front alignment among those labelled transducing (earliest on ties); a
*reversal alarm* is raised (logged as a warning) when any layer is labelled reversed.

:func:`alignment_report` is what the trainer calls (and logs to TensorBoard through
:func:`flatten_report`); ``astra plot-attention`` writes the same dict as JSON.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

log = logging.getLogger(__name__)

STAT_NAMES = ("locality", "monotonicity", "front_alignment", "front_reversal", "reversal")


@dataclass
class AlignmentThresholds:
    """Thresholds and window of the layer labels (see module doc)."""

    window: int = 2
    local_threshold: float = 0.5
    front_threshold: float = 0.5
    reversal_threshold: float = 0.5


def _check_matrix(attn: torch.Tensor) -> torch.Tensor:
    if attn.dim() != 2 or attn.size(0) != attn.size(1):
        raise ValueError(f"attention matrix must be square [T', T'], got {tuple(attn.shape)}")
    if attn.size(0) == 0:
        raise ValueError("attention matrix is empty (0 frames)")
    return attn.detach().float()


def locality(attn: torch.Tensor, window: int = 2) -> float:
    """Mean attention mass within ``window`` frames of the diagonal. ``attn``: [L, L]."""
    attn = _check_matrix(attn)
    n = attn.size(0)
    idx = torch.arange(n)
    near = (idx[:, None] - idx[None, :]).abs() <= window
    row_mass = attn.sum(dim=1).clamp_min(1e-12)
    return float(((attn * near).sum(dim=1) / row_mass).mean())


def peaks(attn: torch.Tensor) -> torch.Tensor:
    """Input position each output row attends to most: ``[L]`` int64 (first on ties)."""
    return _check_matrix(attn).argmax(dim=1)


def monotonicity(attn: torch.Tensor) -> float:
    """Pearson correlation of row index with row peak over all rows, in [-1, 1]."""
    p = peaks(attn).double()
    if p.numel() < 2:
        return 0.0
    i = torch.arange(p.numel(), dtype=torch.float64)
    pc, ic = p - p.mean(), i - i.mean()
    denom = math.sqrt(float((pc * pc).sum()) * float((ic * ic).sum()))
    if denom == 0.0:
        return 0.0
    return float((pc * ic).sum()) / denom


def front_scores(attn: torch.Tensor, num_positions: int) -> tuple[float, float]:
    """``(front_alignment, front_reversal)`` of the first ``num_positions`` rows (module doc).

    ``num_positions`` (U) is clamped to the number of rows; with U < 2 both scores are 0.
    """
    attn = _check_matrix(attn)
    n = attn.size(0)
    u = min(int(num_positions), n)
    if u < 2:
        return 0.0, 0.0
    p = attn[:u].argmax(dim=1).double()
    steps = p[1:] - p[:-1]
    fwd = float(steps.clamp_min(0).sum())
    bwd = float((-steps).clamp_min(0).sum())
    if fwd + bwd == 0.0:
        return 0.0, 0.0
    direction = (fwd - bwd) / (fwd + bwd)
    ideal_span = n * (u - 1) / u
    coverage = min(float(p.max() - p.min()) / ideal_span, 1.0)
    return max(direction, 0.0) * coverage, max(-direction, 0.0) * coverage


def matrix_stats(attn: torch.Tensor, num_positions: int, window: int = 2) -> dict[str, float]:
    """All :data:`STAT_NAMES` of one head-averaged attention matrix ``[L, L]``."""
    mono = monotonicity(attn)
    front, front_rev = front_scores(attn, num_positions)
    return {
        "locality": locality(attn, window),
        "monotonicity": mono,
        "front_alignment": front,
        "front_reversal": front_rev,
        "reversal": max(front_rev, max(-mono, 0.0)),
    }


def label_layer(stats: Mapping[str, float], thresholds: AlignmentThresholds) -> str:
    """``reversed`` / ``transducing`` / ``local`` / ``diffuse`` (module doc)."""
    if stats["reversal"] >= thresholds.reversal_threshold:
        return "reversed"
    if (
        stats["front_alignment"] >= thresholds.front_threshold
        and stats["front_alignment"] > stats["locality"]
    ):
        return "transducing"
    if stats["locality"] >= thresholds.local_threshold:
        return "local"
    return "diffuse"


def _as_list(x: torch.Tensor | Sequence[int], batch: int, name: str) -> list[int]:
    values = x.tolist() if isinstance(x, torch.Tensor) else list(x)
    if len(values) != batch:
        raise ValueError(f"{name} has {len(values)} entries for a batch of {batch}")
    return [int(v) for v in values]


def layer_stats(
    maps: torch.Tensor,
    lengths: torch.Tensor | Sequence[int],
    num_tokens: torch.Tensor | Sequence[int],
    window: int = 2,
) -> dict[str, float]:
    """Batch-mean statistics of one layer's maps ``[B, H, T', T']`` (or ``[B, T', T']``).

    Heads are averaged; each utterance is cropped to its ``lengths[b]`` valid frames and
    uses ``num_tokens[b]`` output positions. Also returns ``front_alignment_best_head``:
    the batch mean of the best single head's front alignment (heads can specialise).
    """
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if maps.dim() != 4:
        raise ValueError(f"attention maps must be [B, H, T', T'], got {tuple(maps.shape)}")
    batch = maps.size(0)
    lens = _as_list(lengths, batch, "lengths")
    toks = _as_list(num_tokens, batch, "num_tokens")
    totals = dict.fromkeys(STAT_NAMES, 0.0)
    best_head = 0.0
    for b in range(batch):
        n = min(lens[b], maps.size(-1))
        if n < 1:
            raise ValueError(f"utterance {b} has {lens[b]} valid frames")
        per_head = maps[b, :, :n, :n].detach().float()
        stats = matrix_stats(per_head.mean(dim=0), toks[b], window)
        for k in STAT_NAMES:
            totals[k] += stats[k]
        best_head += max(front_scores(per_head[h], toks[b])[0] for h in range(per_head.size(0)))
    out = {k: v / batch for k, v in totals.items()}
    out["front_alignment_best_head"] = best_head / batch
    return out


def alignment_report(
    attention_maps: Mapping[str, torch.Tensor],
    lengths: torch.Tensor | Sequence[int],
    num_tokens: torch.Tensor | Sequence[int],
    thresholds: AlignmentThresholds | None = None,
    warn: bool = True,
) -> dict:
    """Alignment statistics of every layer, the transducing layer and the reversal alarm.

    Args:
        attention_maps: layer name -> ``[B, H, T', T']`` self-attention probabilities, in
            forward order (``AstraModel.attention_maps(batch)``).
        lengths: ``[B]`` valid encoder frames T' per utterance.
        num_tokens: ``[B]`` output positions the Aligner reads (U, or U+1 with ``<eos>``).
        thresholds: label thresholds and locality window.
        warn: log a warning when the reversal alarm is raised.
    Returns:
        ``{"layers": {name: {locality, monotonicity, front_alignment, front_reversal,
        reversal, front_alignment_best_head, label}}, "transducing_layer": name | None,
        "reversed_layers": [names], "reversal_alarm": bool, "thresholds": {...}}``.
    """
    thresholds = thresholds or AlignmentThresholds()
    layers: dict[str, dict] = {}
    for name, maps in attention_maps.items():
        stats: dict = layer_stats(maps, lengths, num_tokens, thresholds.window)
        stats["label"] = label_layer(stats, thresholds)
        layers[name] = stats
    transducing = [n for n, s in layers.items() if s["label"] == "transducing"]
    best = max(transducing, key=lambda n: layers[n]["front_alignment"], default=None)
    reversed_layers = [n for n, s in layers.items() if s["label"] == "reversed"]
    if reversed_layers and warn:
        log.warning(
            "reversal alarm: self-attention reverses time in layer(s) %s (reversal %s); "
            "see docs/alignment.md (seed 003: use InterCTC or identity-attention warm-up)",
            ", ".join(reversed_layers),
            ", ".join(f"{layers[n]['reversal']:.2f}" for n in reversed_layers),
        )
    return {
        "layers": layers,
        "transducing_layer": best,
        "reversed_layers": reversed_layers,
        "reversal_alarm": bool(reversed_layers),
        "thresholds": asdict(thresholds),
    }


def flatten_report(report: Mapping, prefix: str = "alignment") -> dict[str, float]:
    """Scalars of :func:`alignment_report` for TensorBoard: ``{prefix}/{layer}/{stat}``.

    Also ``{prefix}/reversal_alarm`` (0/1), ``{prefix}/max_front_alignment`` and
    ``{prefix}/transducing_layer_index`` (position of the transducing layer in the report's
    layer order, -1 if none).
    """
    out: dict[str, float] = {}
    names = list(report["layers"])
    for name, stats in report["layers"].items():
        for key, value in stats.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{prefix}/{name}/{key}"] = float(value)
    out[f"{prefix}/reversal_alarm"] = float(report["reversal_alarm"])
    out[f"{prefix}/max_front_alignment"] = max(
        (s["front_alignment"] for s in report["layers"].values()), default=0.0
    )
    layer = report["transducing_layer"]
    out[f"{prefix}/transducing_layer_index"] = float(names.index(layer)) if layer else -1.0
    return out


def _first_utterances(batch: Mapping, count: int) -> dict:
    """The first ``count`` utterances of a speech batch, padding trimmed to the longest."""
    size = batch["features"].size(0)
    count = min(count, size)
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == size:
            out[key] = value[:count]
        elif isinstance(value, list) and len(value) == size:
            out[key] = value[:count]
        else:
            out[key] = value
    out["features"] = out["features"][:, : int(out["feature_lens"].max())]
    return out


def model_alignment_report(
    model,
    batch: Mapping,
    thresholds: AlignmentThresholds | None = None,
    max_utterances: int = 4,
    warn: bool = True,
) -> dict:
    """:func:`alignment_report` of an ``AstraModel`` on (the first utterances of) a speech batch.

    Runs ``model.attention_maps`` in eval mode (the previous mode is restored), takes the
    encoder lengths T' from the model's subsampling and U+1 output positions per utterance
    (tokens plus ``<eos>``). This is the one call the trainer needs; log
    ``flatten_report(report)`` as scalars.
    """
    if batch.get("kind", "speech") != "speech":
        raise ValueError("model_alignment_report needs a speech batch")
    small = _first_utterances(batch, max_utterances)
    was_training = model.training
    model.eval()
    try:
        maps = model.attention_maps(small)
    finally:
        model.train(was_training)
    lengths = model.speech_encoder.subsampling.output_lengths(small["feature_lens"])
    return alignment_report(maps, lengths, small["token_lens"] + 1, thresholds, warn)
