"""Alignment statistics of self-attention maps: locality, front alignment, reversal.

An attention matrix ``A [T', T']`` (rows: output positions i, columns: input positions j,
rows sum to 1) is summarised by the input position each row reads most, its *peak*
``p_i = argmax_j A[i, j]``. With ``L`` valid frames and ``U`` output positions the Aligner
reads (U tokens, plus ``<eos>`` if the caller counts it):

* **locality** — mean over the L rows of the mass within ``window`` frames of the
  diagonal, ``sum_{|j-i|<=w} A[i, j]``. 1 for identity attention; about ``(2w+1)/L`` for
  uniform attention. Early (in-place encoding) layers score high.
* **monotonicity** — net *local* progress of the peaks over all L rows: with steps
  ``d_i = p_{i+1} - p_i``, ``F = sum d`` over steps ``0 < d <= s`` and ``B = sum -d`` over
  steps ``-s <= d < 0`` (``s = max(window, 2)``), monotonicity = ``(F - B) / (L - 1)`` in
  [-1, 1]: +1 for a diagonal, -1 for an anti-diagonal, about 0 for uniform, random or
  attention-sink maps. Rows whose peak is a *sink* (a column that is the peak of at least
  ``max(3, 20%)`` of the rows, e.g. frame 0) are left out of the path first, and jumps
  longer than ``s`` count neither way.
* **front alignment** — do the first U rows walk forwards across the whole input, as in
  the Aligner's transducing layer? The same F and B over the first U rows with steps of
  at most ``s = max(2, ceil(2 L / U))`` (twice the spacing of U evenly spread tokens),
  relative to the ideal span ``L (U-1) / U``, times the share ``f`` of the path's steps
  that are such short forward steps: ``front_alignment = clip((F - B) / span, 0, 1) * f``.
  Identity attention with U << L scores about U/L (monotone but not spread), a
  front-aligned map about 1, a map whose tokens cover only part of the audio (silence,
  partly formed alignment) about the covered fraction, random attention little (its
  steps are rarely short and forward).
* **front reversal** — the same walked backwards: ``clip((B - F) / span, 0, 1) * b``.
* **reversal** — ``max(front_reversal, max(-monotonicity, 0))``: a layer that flips time
  (anti-diagonal self-attention, as in "The Conformer Encoder May Reverse the Time
  Dimension", arXiv:2410.00680) or aligns tokens backwards scores near 1.
* **front_alignment_best_head** — the best single head's front alignment (one head can
  transduce while another attends to a sink frame; "Aligner-Encoders: Self-Attention
  Transformers Can Be Self-Transducers", arXiv:2502.05232, plots single heads).

Statistics are computed on the head-averaged map of each utterance and averaged over the
batch. Layer labels (first match): ``reversed`` (reversal >= ``reversal_threshold``; head
average only, since time is only lost when every head flips), ``transducing`` (``max(front
alignment, best-head front alignment) >= front_threshold`` and > locality), ``local``
(locality >= ``local_threshold``), ``diffuse``. The *transducing layer* is the layer with
the highest such front alignment among those labelled transducing (earliest on ties); a
*reversal alarm* is raised (logged as a warning) when any layer is labelled reversed.

:func:`model_alignment_report` is what the trainer calls every ``run.alignment_every``
steps (and logs to TensorBoard through :func:`flatten_report`); ``astra plot-attention``
writes the same :func:`alignment_report` dict as JSON.
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


def _without_sinks(p: torch.Tensor) -> torch.Tensor:
    """The peak path without rows whose peak is a *sink*: a column that is the peak of at
    least ``max(3, ceil(0.2 * len(p)))`` rows (e.g. every row parking on frame 0)."""
    if p.numel() == 0:
        return p
    counts = torch.bincount(p)
    sinks = counts >= max(3, math.ceil(0.2 * p.numel()))
    return p[~sinks[p]]


def _progress(p: torch.Tensor, max_step: int) -> tuple[float, float, float, float]:
    """Movement of a peak path made of steps of at most ``max_step``.

    Sink rows are dropped first (:func:`_without_sinks`). Returns ``(F, B, f, b)``:
    ``F = sum d`` over steps ``0 < d <= max_step``, ``B = sum -d`` over steps
    ``-max_step <= d < 0`` (bigger jumps, across pauses or noise, count neither way), and
    ``f``, ``b`` the fractions of all steps that are such forward / backward steps.
    """
    p = _without_sinks(p)
    steps = p[1:] - p[:-1]
    if steps.numel() == 0:
        return 0.0, 0.0, 0.0, 0.0
    forward = (steps > 0) & (steps <= max_step)
    backward = (steps < 0) & (steps >= -max_step)
    return (
        float(steps[forward].sum()),
        float(-steps[backward].sum()),
        float(forward.float().mean()),
        float(backward.float().mean()),
    )


def monotonicity(attn: torch.Tensor, window: int = 2) -> float:
    """Net local progress of the row peaks over all rows, in [-1, 1] (module doc).

    ``(F - B) / (L - 1)`` with steps of at most ``max(window, 2)`` frames: +1 for a
    diagonal, -1 for an anti-diagonal, about 0 for uniform, random or sink attention.
    """
    p = peaks(attn)
    n = p.numel()
    if n < 2:
        return 0.0
    fwd, bwd, _, _ = _progress(p, max(window, 2))
    return max(-1.0, min(1.0, (fwd - bwd) / (n - 1)))


def front_scores(attn: torch.Tensor, num_positions: int) -> tuple[float, float]:
    """``(front_alignment, front_reversal)`` of the first ``num_positions`` rows (module doc).

    ``num_positions`` (U) is clamped to the number of rows; with U < 2 both scores are 0.
    """
    attn = _check_matrix(attn)
    n = attn.size(0)
    u = min(int(num_positions), n)
    if u < 2:
        return 0.0, 0.0
    p = attn[:u].argmax(dim=1)
    fwd, bwd, fwd_share, bwd_share = _progress(p, max(2, math.ceil(2 * n / u)))
    ideal_span = n * (u - 1) / u
    return (
        min(1.0, max(fwd - bwd, 0.0) / ideal_span) * fwd_share,
        min(1.0, max(bwd - fwd, 0.0) / ideal_span) * bwd_share,
    )


def matrix_stats(attn: torch.Tensor, num_positions: int, window: int = 2) -> dict[str, float]:
    """All :data:`STAT_NAMES` of one head-averaged attention matrix ``[L, L]``."""
    mono = monotonicity(attn, window)
    front, front_rev = front_scores(attn, num_positions)
    return {
        "locality": locality(attn, window),
        "monotonicity": mono,
        "front_alignment": front,
        "front_reversal": front_rev,
        "reversal": max(front_rev, max(-mono, 0.0)),
    }


def transduction_score(stats: Mapping[str, float]) -> float:
    """``max(front_alignment, front_alignment_best_head)`` (the latter if present)."""
    return max(stats["front_alignment"], stats.get("front_alignment_best_head", 0.0))


def label_layer(stats: Mapping[str, float], thresholds: AlignmentThresholds) -> str:
    """``reversed`` / ``transducing`` / ``local`` / ``diffuse`` (module doc)."""
    if stats["reversal"] >= thresholds.reversal_threshold:
        return "reversed"
    front = transduction_score(stats)
    if front >= thresholds.front_threshold and front > stats["locality"]:
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
    best = max(transducing, key=lambda n: transduction_score(layers[n]), default=None)
    reversed_layers = [n for n, s in layers.items() if s["label"] == "reversed"]
    if reversed_layers and warn:
        log.warning(
            "reversal alarm: self-attention reverses time in layer(s) %s (reversal %s); "
            "see docs/alignment.md (use InterCTC or the identity-attention warm-up of "
            "arXiv:2410.00680)",
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

    Also ``{prefix}/reversal_alarm`` (0/1), ``{prefix}/max_front_alignment`` (the highest
    :func:`transduction_score` of any layer) and
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
        (transduction_score(s) for s in report["layers"].values()), default=0.0
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
