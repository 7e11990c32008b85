"""Alignment plots from arrays: PNGs exist, are non-empty and have the announced size."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from astra.analysis.attention_stats import alignment_report
from astra.analysis.plots import (
    attention_grid_size,
    grid_shape,
    plot_attention_grid,
    plot_gradient_alignment,
    plot_lattice_occupancy,
    token_frame_size,
)


def _png_size_and_content(path):
    image = mpimg.imread(path)  # [height, width, channels] floats in [0, 1]
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert float(image[..., :3].std()) > 0.01, "the image is blank"
    return image.shape[1], image.shape[0]


def test_grid_shape():
    assert grid_shape(1) == (1, 1)
    assert grid_shape(4) == (1, 4)
    assert grid_shape(6) == (2, 4)
    with pytest.raises(ValueError):
        grid_shape(0)


@pytest.mark.parametrize("per_head", [False, True])
def test_attention_grid_png(tmp_path, per_head):
    t, heads = 20, 2
    maps = {f"shared.{i}": torch.softmax(torch.randn(heads, t, t), dim=-1) for i in range(5)}
    report = alignment_report({k: v[None] for k, v in maps.items()}, [t], [4], warn=False)
    path = tmp_path / "attention.png"
    size = plot_attention_grid(
        maps, path, num_tokens=4, token_labels=["▁a", "b", "c", "<eos>"], per_head=per_head,
        stats=report["layers"], title="utt",
    )
    assert size == attention_grid_size(5, heads, per_head)
    assert _png_size_and_content(path) == size


def test_attention_grid_rejects_bad_maps(tmp_path):
    with pytest.raises(ValueError, match="no attention"):
        plot_attention_grid({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="T'"):
        plot_attention_grid({"l": np.ones((2, 3, 4))}, tmp_path / "x.png")


def test_lattice_and_gradient_pngs(tmp_path):
    occupancy = torch.softmax(torch.randn(6, 30), dim=-1)
    path = tmp_path / "lattice.png"
    size = plot_lattice_occupancy(occupancy, path, [f"t{i}" for i in range(6)])
    assert size == token_frame_size(6, 30)
    assert _png_size_and_content(path) == size
    grads = np.random.default_rng(0).normal(size=(6, 120))
    gpath = tmp_path / "gradients.png"
    gsize = plot_gradient_alignment(grads, gpath)
    assert gsize == token_frame_size(6, 120)
    assert _png_size_and_content(gpath) == gsize
    with pytest.raises(ValueError, match="U, T"):
        plot_lattice_occupancy(np.ones(5), tmp_path / "bad.png")


@pytest.mark.slow
def test_plot_attention_command_on_tiny_checkpoint(tmp_path_factory, tmp_path, capsys):
    from tiny_eval_checkpoint import one_thread, tiny_setup

    from astra.cli import main

    with one_thread():
        _plot_attention_command(tiny_setup(tmp_path_factory), tmp_path, capsys, main)


def _plot_attention_command(tiny, tmp_path, capsys, main):
    out = tmp_path / "plots"
    assert main([
        "plot-attention", str(tiny.audio), "--checkpoint", str(tiny.checkpoint),
        "--text", "The dog, birds sing!", "--output-dir", str(out), "--per-head", "--gradients",
    ]) == 0
    stdout = capsys.readouterr().out
    data = json.loads((out / "alignment.json").read_text())
    layers = data["report"]["layers"]
    assert list(layers) == ["speech.0", "shared.0", "shared.1", "shared.2"]  # tiny preset
    for stats in layers.values():
        assert stats["label"] in ("local", "transducing", "reversed", "diffuse")
        assert 0.0 <= stats["locality"] <= 1.0 and 0.0 <= stats["reversal"] <= 1.0
    assert data["text"] == "the dog birds sing" and data["text_source"] == "reference"
    u, frames = data["num_tokens"], data["encoder_frames"]
    assert "transducing layer" in stdout and "speech.0" in stdout

    heads = 2  # tiny preset
    assert _png_size_and_content(out / "attention.png") == attention_grid_size(4, heads)
    assert _png_size_and_content(out / "attention_heads.png") == attention_grid_size(4, heads, True)
    assert _png_size_and_content(out / "lattice_occupancy.png") == token_frame_size(u, frames)
    assert _png_size_and_content(out / "gradient_alignment.png") == token_frame_size(
        u + 1, data["input_frames"]
    )
    lattice = data["lattice"]
    assert len(lattice["peak_frames"]) == u
    assert all(s == pytest.approx(1.0, abs=1e-3) for s in lattice["row_sums"])
    assert len(data["gradients"]["peak_frames"]) == u + 1
    assert sorted(data["files"].values()) == [
        "attention.png", "attention_heads.png", "gradient_alignment.png", "lattice_occupancy.png",
    ]

    # without --text the model's own hypothesis is plotted; no gradients by default
    out2 = tmp_path / "hyp"
    assert main([
        "plot-attention", str(tiny.audio), "--checkpoint", str(tiny.checkpoint),
        "--output-dir", str(out2), "--lattice", "full",
    ]) == 0
    data2 = json.loads((out2 / "alignment.json").read_text())
    assert data2["text_source"].startswith("hypothesis")
    assert "gradients" not in data2 and (out2 / "attention.png").exists()
    assert main(["plot-attention", str(tmp_path / "nope.wav"), "--checkpoint",
                 str(tiny.checkpoint)]) == 2
