"""Alignment pictures: self-attention grids, lattice occupancy, gradient alignment (PNG).

Figures have a fixed size (``panel_inches`` per panel at ``dpi``) so a caller knows the
pixel size in advance: :func:`attention_grid_size` / :func:`token_frame_size`.
All matrices are numpy arrays or CPU tensors; nothing here needs the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

DPI = 100
PANEL_INCHES = 2.6
ZERO_GRADIENT_LOG = math.log(1e-20)  # astra.analysis.gradient_alignment.EPS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _missing_glyphs_ok():
    """Token pieces in scripts the default font lacks are drawn as boxes, without warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font")
        yield


def _save(plt, fig, path: str | Path, dpi: int) -> None:
    """Lay out, write the PNG and close the figure."""
    with _missing_glyphs_ok():
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def grid_shape(num_panels: int, max_cols: int = 4) -> tuple[int, int]:
    """``(rows, cols)`` of a grid holding ``num_panels`` panels, at most ``max_cols`` wide."""
    if num_panels < 1:
        raise ValueError("a grid needs at least one panel")
    cols = min(num_panels, max_cols)
    return math.ceil(num_panels / cols), cols


def attention_grid_size(
    num_layers: int, num_heads: int = 1, per_head: bool = False, dpi: int = DPI,
    panel_inches: float = PANEL_INCHES,
) -> tuple[int, int]:
    """Pixel ``(width, height)`` of :func:`plot_attention_grid`'s PNG."""
    rows, cols = (num_layers, num_heads + 1) if per_head else grid_shape(num_layers)
    return round(cols * panel_inches * dpi), round(rows * panel_inches * dpi)


def _mark_tokens(ax, num_tokens: int, token_labels: Sequence[str] | None, max_labels: int = 24):
    """Dashed line above output row U-1 and the token pieces as y tick labels."""
    if num_tokens <= 0:
        return
    ax.axhline(num_tokens - 0.5, color="white", linestyle="--", linewidth=0.8)
    if token_labels and len(token_labels) <= max_labels:
        ax.set_yticks(range(len(token_labels)), list(token_labels), fontsize=4)


def plot_attention_grid(
    maps: Mapping[str, object],
    path: str | Path,
    num_tokens: int = 0,
    token_labels: Sequence[str] | None = None,
    per_head: bool = False,
    stats: Mapping[str, Mapping] | None = None,
    title: str = "",
    dpi: int = DPI,
    panel_inches: float = PANEL_INCHES,
) -> tuple[int, int]:
    """Self-attention maps of every layer as one PNG (like the Aligner paper's Figure 3).

    Args:
        maps: layer name -> ``[H, T', T']`` attention of one utterance (or ``[T', T']``),
            cropped to its valid frames; y axis = output position, x = input position.
        path: PNG to write.
        num_tokens: U (output positions the decoder reads): a dashed line marks them.
        token_labels: pieces of the transcript, shown on the y axis of the first U rows.
        per_head: one row per layer with every head plus the head average, instead of a
            grid of head averages.
        stats: optional per-layer dict from ``alignment_report(...)["layers"]``; the
            label and front-alignment score are shown in each panel's title.
    Returns:
        the PNG's pixel ``(width, height)`` (= :func:`attention_grid_size`).
    """
    if not maps:
        raise ValueError("no attention maps to plot")
    plt = _pyplot()
    arrays = {}
    for name, m in maps.items():
        a = _to_numpy(m)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[1] != a.shape[2]:
            raise ValueError(f"layer {name}: attention must be [H, T', T'], got {a.shape}")
        arrays[name] = a
    heads = max(a.shape[0] for a in arrays.values())
    if per_head:
        rows, cols = len(arrays), heads + 1
    else:
        rows, cols = grid_shape(len(arrays))
    width, height = attention_grid_size(len(arrays), heads, per_head, dpi, panel_inches)
    fig, axes = plt.subplots(rows, cols, figsize=(width / dpi, height / dpi), dpi=dpi,
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for li, (name, a) in enumerate(arrays.items()):
        panels = [("mean", a.mean(axis=0))]
        if per_head:
            panels += [(f"head {h}", a[h]) for h in range(a.shape[0])]
        for pi, (head_name, m) in enumerate(panels):
            ax = axes[li, pi] if per_head else axes.flat[li]
            ax.set_axis_on()
            ax.imshow(m, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
            _mark_tokens(ax, num_tokens, token_labels)
            label = name if not per_head else f"{name} {head_name}"
            if stats and name in stats and pi == 0:
                s = stats[name]
                label += f"\n{s['label']} fa={s['front_alignment']:.2f} rev={s['reversal']:.2f}"
            ax.set_title(label, fontsize=6)
            ax.tick_params(labelsize=4)
            ax.set_xlabel("input position", fontsize=5)
            ax.set_ylabel("output position", fontsize=5)
    if title:
        fig.suptitle(title, fontsize=8)
    _save(plt, fig, path, dpi)
    return width, height


def token_frame_size(
    num_tokens: int, num_frames: int, dpi: int = DPI
) -> tuple[int, int]:
    """Pixel ``(width, height)`` of :func:`plot_token_frame_matrix`'s PNG."""
    width_in = min(12.0, max(4.0, 0.04 * num_frames + 2.0))
    height_in = min(10.0, max(2.5, 0.16 * num_tokens + 1.5))
    return round(width_in * dpi), round(height_in * dpi)


def plot_token_frame_matrix(
    matrix,
    path: str | Path,
    token_labels: Sequence[str] | None = None,
    title: str = "",
    frame_label: str = "encoder frame",
    colorbar_label: str = "",
    dpi: int = DPI,
    vmin: float | None = None,
) -> tuple[int, int]:
    """A token x frame matrix ``[U, T]`` as a PNG: lattice occupancy or gradient alignment.

    ``vmin`` clips the colour scale from below (default: the matrix minimum).
    Returns the PNG's pixel ``(width, height)`` (= :func:`token_frame_size`).
    """
    m = _to_numpy(matrix)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"expected a non-empty [U, T] matrix, got shape {m.shape}")
    plt = _pyplot()
    width, height = token_frame_size(m.shape[0], m.shape[1], dpi)
    fig, ax = plt.subplots(figsize=(width / dpi, height / dpi), dpi=dpi)
    image = ax.imshow(m, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                      vmin=vmin)
    cbar = fig.colorbar(image, ax=ax)
    if colorbar_label:
        cbar.set_label(colorbar_label, fontsize=7)
    if token_labels and len(token_labels) == m.shape[0] and m.shape[0] <= 60:
        ax.set_yticks(range(m.shape[0]), list(token_labels), fontsize=6)
    ax.set_xlabel(frame_label, fontsize=7)
    ax.set_ylabel("token", fontsize=7)
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=8)
    _save(plt, fig, path, dpi)
    return width, height


def plot_lattice_occupancy(occupancy, path, token_labels=None, title="") -> tuple[int, int]:
    """RNN-T alignment head's emit-arc occupancy ``gamma [U, T']`` (rows sum to 1)."""
    return plot_token_frame_matrix(
        occupancy, path, token_labels, title or "RNN-T lattice occupancy (emit arcs)",
        "encoder frame (40 ms)", "occupancy",
    )


def plot_gradient_alignment(gradients, path, token_labels=None, title="", frame_label=""):
    """Gradient alignment (arXiv:2410.00680) ``G [U, T]`` (log L2 norm of d log p(y_s) / d x_t).

    Frames with no gradient at all (log of the 1e-20 floor, e.g. frames the subsampling
    drops) are left out of the colour scale, which starts at the 1st percentile of the rest.
    """
    g = _to_numpy(gradients)
    live = g[g > ZERO_GRADIENT_LOG + 1.0]
    vmin = float(np.percentile(live, 1)) if live.size else None
    return plot_token_frame_matrix(
        g, path, token_labels, title or "gradient alignment  log||d log p(y_s)/d x_t||",
        frame_label or "input frame", "log gradient norm", vmin=vmin,
    )
