"""A minimal per-layer attention picture for watching a run (richer plots: astra.analysis)."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def first_utterance(batch: dict) -> dict:
    """The first utterance of a speech batch as a batch of one (padding trimmed)."""
    n = int(batch["feature_lens"][0])
    u = int(batch["token_lens"][0]) if "token_lens" in batch else None
    one = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == batch["features"].shape[0]:
            one[key] = value[:1]
        elif isinstance(value, list):
            one[key] = value[:1]
        else:
            one[key] = value
    one["features"] = one["features"][:, :n]
    if u is not None:
        one["tokens"] = one["tokens"][:, : max(u, 1)]
    return one


@torch.no_grad()
def plot_attention(model: torch.nn.Module, batch: dict, path: str | Path, title: str = "") -> Path:
    """Save a grid of head-averaged attention maps (one panel per layer) of one utterance.

    ``model.attention_maps(batch)`` gives layer name -> ``[B, H, T', T']``; panel = mean
    over H of utterance 0 (query rows, key columns).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    was_training = model.training
    model.eval()
    maps = model.attention_maps(first_utterance(batch))
    if was_training:
        model.train()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(maps)
    if not names:
        raise ValueError("model.attention_maps returned no layers")
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        att = maps[name][0].float().mean(dim=0).cpu().numpy()  # [T', T']
        ax.imshow(att, origin="lower", aspect="auto", interpolation="nearest", cmap="viridis")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("key frame", fontsize=7)
        ax.set_ylabel("query frame", fontsize=7)
        ax.axis("on")
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
