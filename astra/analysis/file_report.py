"""The alignment report of one utterance (what ``astra plot-attention`` writes).

Legend: T fbank frames (10 ms), T' encoder frames (40 ms at 4x subsampling), U tokens,
H heads, F features.

Three parts, each writing its PNG into ``out_dir`` and returning what ``alignment.json``
records about it:

* :func:`attention_part`: the self-attention grid of every layer (and every head with
  ``per_head``) and the per-layer statistics of :func:`.attention_stats.alignment_report`;
* :func:`lattice_part`: the RNN-T alignment head's lattice occupancy (token x frame);
* :func:`gradient_part`: the gradient alignment of "The Conformer Encoder May Reverse the
  Time Dimension" (arXiv:2410.00680).

Each raises ``ValueError`` for what the model or the input cannot give (the CLI turns it
into a one-line error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ATTENTION_PNG = "attention.png"
ATTENTION_HEADS_PNG = "attention_heads.png"
LATTICE_PNG = "lattice_occupancy.png"
GRADIENT_PNG = "gradient_alignment.png"
REPORT_JSON = "alignment.json"


@dataclass
class AttentionPart:
    """What :func:`attention_part` found: the statistics report, T', and the files written
    (``{"attention": name, ...}``)."""

    report: dict
    encoder_frames: int
    files: dict[str, str]


def attention_part(model, batch: dict, pieces: list[str], out_dir: Path, window: int = 2,
                   per_head: bool = False, title: str = "") -> AttentionPart:
    """Attention grid(s) and statistics of the one-utterance speech ``batch``.

    Args:
        pieces: the U target pieces (without ``<eos>``); the Aligner reads U+1 positions.
        window: the locality window in encoder frames (``AlignmentThresholds.window``).
    Raises:
        ValueError: the model returns no attention maps, or cannot encode the batch.
    """
    from astra.analysis.attention_stats import AlignmentThresholds, alignment_report
    from astra.analysis.plots import plot_attention_grid

    maps = model.attention_maps(batch)  # name -> [1, H, T', T']
    if not maps:
        raise ValueError("the model returned no attention maps (no self-attention layers?)")
    encoder_frames = next(iter(maps.values())).size(-1)
    positions = len(pieces) + 1  # the Aligner reads U tokens and <eos>
    thresholds = AlignmentThresholds(window=window)
    report = alignment_report(maps, [encoder_frames], [positions], thresholds)
    if positions > encoder_frames:
        log.warning("%d tokens + <eos> exceed %d encoder frames: the Aligner cannot read them all",
                    len(pieces), encoder_frames)
    single = {name: m[0] for name, m in maps.items()}  # [H, T', T'] each
    labels = pieces + ["<eos>"]
    plot_attention_grid(single, out_dir / ATTENTION_PNG, positions, labels,
                        stats=report["layers"], title=title)
    files = {"attention": ATTENTION_PNG}
    if per_head:
        plot_attention_grid(single, out_dir / ATTENTION_HEADS_PNG, positions, labels,
                            per_head=True, stats=report["layers"], title=title)
        files["attention_heads"] = ATTENTION_HEADS_PNG
    return AttentionPart(report, int(encoder_frames), files)


def lattice_part(model, features, ids: list[int], pieces: list[str], out_dir: Path,
                 which: str = "simple", text: str = "") -> tuple[dict, dict[str, str]]:
    """``(json, files)`` of the lattice occupancy of ``features [T, F]`` and ``ids``
    (``which``: ``simple``, ``full`` or ``pruned``); skipped, and said so in the json,
    without an RNN-T head or with an empty transcript."""
    from astra.analysis.lattice_occupancy import model_lattice_occupancy
    from astra.analysis.plots import plot_lattice_occupancy

    if model.rnnt is None:
        return {"skipped": "the checkpoint has no RNN-T alignment head"}, {}
    if not ids:
        return {"skipped": "empty transcript"}, {}
    occupancy = model_lattice_occupancy(model, features, ids, which)  # [U, T']
    plot_lattice_occupancy(occupancy, out_dir / LATTICE_PNG, pieces,
                           title=f"{which} lattice occupancy: {text[:60]}")
    summary = {
        "which": which,
        "peak_frames": occupancy.argmax(dim=1).tolist(),
        "row_sums": [round(float(s), 4) for s in occupancy.sum(dim=1)],
    }
    return summary, {"lattice": LATTICE_PNG}


def gradient_part(model, features, ids: list[int], pieces: list[str], out_dir: Path,
                  wrt: str = "features") -> tuple[dict, dict[str, str]]:
    """``(json, files)`` of the gradient alignment of ``features [T, F]`` and ``ids``,
    differentiated w.r.t. the fbank frames (``wrt="features"``) or the shared encoder's
    input (``"shared"``); skipped with an empty transcript.

    Raises:
        ValueError: the model cannot compute it (see ``model_gradient_alignment``).
    """
    from astra.analysis.gradient_alignment import gradient_peak_frames, model_gradient_alignment
    from astra.analysis.plots import plot_gradient_alignment

    if not ids:
        return {"skipped": "empty transcript"}, {}
    grads = model_gradient_alignment(model, features, ids, wrt)  # [U+1, T or T']
    frame = "fbank frame (10 ms)" if wrt == "features" else "encoder frame (40 ms)"
    plot_gradient_alignment(grads, out_dir / GRADIENT_PNG, pieces + ["<eos>"], frame_label=frame)
    summary = {"input": wrt, "peak_frames": gradient_peak_frames(grads).tolist()}
    return summary, {"gradients": GRADIENT_PNG}
