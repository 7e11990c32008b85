"""Alignment statistics on synthetic attention matrices with known structure."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from astra.analysis.attention_stats import (
    AlignmentThresholds,
    alignment_report,
    flatten_report,
    front_scores,
    label_layer,
    locality,
    matrix_stats,
    monotonicity,
)
from astra.analysis.gradient_alignment import gradient_alignment, gradient_peak_frames

T, U = 40, 8


def identity(n=T):
    return torch.eye(n)


def reversed_time(n=T):
    return torch.eye(n).flip(1)


def front_aligned(n=T, u=U, backwards=False):
    """Rows i < u read the i-th of u equal input segments; later rows attend locally."""
    a = torch.zeros(n, n)
    seg = n // u
    for i in range(u):
        s = (u - 1 - i) if backwards else i
        a[i, s * seg:(s + 1) * seg] = 1.0 / seg
    for i in range(u, n):
        a[i, i] = 1.0
    return a


def uniform(n=T):
    return torch.full((n, n), 1.0 / n)


def test_identity_is_local_and_monotonic_not_transducing():
    s = matrix_stats(identity(), U)
    assert s["locality"] == pytest.approx(1.0)
    assert s["monotonicity"] == pytest.approx(1.0)
    assert s["front_alignment"] == pytest.approx((U - 1) / (T * (U - 1) / U))  # U/T = 0.2
    assert s["reversal"] == 0.0
    assert label_layer(s, AlignmentThresholds()) == "local"


def test_front_aligned_map_is_transducing():
    s = matrix_stats(front_aligned(), U)
    assert s["front_alignment"] == pytest.approx(1.0)
    assert s["front_reversal"] == 0.0 and s["reversal"] == 0.0
    assert s["locality"] < 0.9
    assert label_layer(s, AlignmentThresholds()) == "transducing"


def test_reversed_maps_raise_reversal():
    flipped = matrix_stats(reversed_time(), U)
    assert flipped["monotonicity"] == pytest.approx(-1.0)
    assert flipped["reversal"] == pytest.approx(1.0)
    assert flipped["locality"] < 0.2
    assert label_layer(flipped, AlignmentThresholds()) == "reversed"
    backwards = matrix_stats(front_aligned(backwards=True), U)
    assert backwards["front_reversal"] == pytest.approx(1.0)
    assert backwards["front_alignment"] == 0.0
    assert label_layer(backwards, AlignmentThresholds()) == "reversed"


def test_uniform_is_diffuse():
    s = matrix_stats(uniform(), U)
    assert s["locality"] == pytest.approx(5 / T, abs=0.01)
    assert s["front_alignment"] == 0.0 and s["reversal"] == 0.0
    assert s["monotonicity"] == 0.0
    assert label_layer(s, AlignmentThresholds()) == "diffuse"


def test_random_attention_is_not_aligned():
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(T, T, generator=g) * 0.5, dim=1)
    s = matrix_stats(a, U)
    assert s["front_alignment"] < 0.5 and s["reversal"] < 0.5 and s["locality"] < 0.5


def test_scalar_functions_validate_input():
    with pytest.raises(ValueError, match="square"):
        locality(torch.ones(3, 4))
    assert front_scores(identity(), 1) == (0.0, 0.0)
    assert monotonicity(torch.ones(1, 1)) == 0.0


def _batch(matrix, heads=2, pad=5):
    """[1, H, T+pad, T+pad] with padding rows/columns that must be ignored."""
    n = matrix.size(0)
    out = torch.zeros(1, heads, n + pad, n + pad)
    out[0, :, :n, :n] = matrix
    out[0, :, n:, :] = 1.0 / (n + pad)
    return out


def test_alignment_report_names_layers_and_alarms(caplog):
    maps = {
        "speech.0": _batch(identity()),
        "shared.0": _batch(uniform()),
        "shared.1": _batch(front_aligned()),
        "shared.2": _batch(identity()),
    }
    with caplog.at_level(logging.WARNING):
        report = alignment_report(maps, lengths=[T], num_tokens=[U])
    labels = {n: s["label"] for n, s in report["layers"].items()}
    assert labels == {
        "speech.0": "local", "shared.0": "diffuse", "shared.1": "transducing", "shared.2": "local",
    }
    assert report["transducing_layer"] == "shared.1"
    assert report["reversal_alarm"] is False and not caplog.records

    maps["shared.2"] = _batch(reversed_time())
    with caplog.at_level(logging.WARNING):
        report = alignment_report(maps, torch.tensor([T]), torch.tensor([U]))
    assert report["reversal_alarm"] is True and report["reversed_layers"] == ["shared.2"]
    assert any("reversal alarm" in r.getMessage() for r in caplog.records)
    flat = flatten_report(report)
    assert flat["alignment/reversal_alarm"] == 1.0
    assert flat["alignment/transducing_layer_index"] == 2.0
    assert flat["alignment/shared.1/front_alignment"] == pytest.approx(1.0)
    assert all(isinstance(v, float) for v in flat.values())


def test_alignment_report_averages_over_batch_and_finds_best_head():
    b = torch.zeros(2, 2, T, T)
    b[0, 0], b[0, 1] = front_aligned(), identity()  # one transducing head
    b[1, 0], b[1, 1] = front_aligned(), front_aligned()
    report = alignment_report({"l": b}, [T, T], [U, U])
    s = report["layers"]["l"]
    assert s["front_alignment_best_head"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="lengths"):
        alignment_report({"l": b}, [T], [U, U])


def test_gradient_alignment_recovers_a_known_dependence():
    # label s depends only on input frame 2*s (a monotone alignment) via a linear map
    frames, dim, labels = 10, 3, 4
    gen = torch.Generator().manual_seed(0)
    weights = torch.randn(dim, generator=gen) * 0.1  # small logits: no frame dominates

    def label_log_probs(x):
        return torch.stack([torch.log_softmax(x @ weights, dim=0)[2 * s] for s in range(labels)])

    g = gradient_alignment(label_log_probs, torch.randn(frames, dim, generator=gen))
    assert g.shape == (labels, frames)
    assert gradient_peak_frames(g).tolist() == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="T, D"):
        gradient_alignment(label_log_probs, torch.randn(frames))


def test_model_alignment_report_on_a_tiny_model():
    from astra.analysis.attention_stats import model_alignment_report
    from astra.model import AstraModel, preset

    torch.manual_seed(0)
    model = AstraModel(preset("tiny"), vocab_size=20)
    model.train()
    lens = torch.tensor([120, 90, 60])
    batch = {
        "kind": "speech",
        "features": torch.randn(3, 120, 80),
        "feature_lens": lens,
        "tokens": torch.randint(4, 20, (3, 5)),
        "token_lens": torch.tensor([5, 3, 2]),
    }
    report = model_alignment_report(model, batch, max_utterances=2)
    assert model.training  # mode restored
    assert list(report["layers"]) == ["speech.0", "shared.0", "shared.1", "shared.2"]
    flat = flatten_report(report)
    assert set(flat) >= {"alignment/speech.0/locality", "alignment/reversal_alarm"}
    assert all(math.isfinite(v) for v in flat.values())
    with pytest.raises(ValueError, match="speech batch"):
        model_alignment_report(model, {"kind": "text"})


def test_attention_sinks_do_not_hide_a_front_alignment():
    # every third of the first U rows puts its peak on a sink frame (frame T-1)
    a = front_aligned(u=12, n=48) * 0.5
    for i in range(0, 12, 3):
        a[i, -1] += 0.6  # frame T-1 is the peak of 4 rows: a sink
    s = matrix_stats(a, 12)
    assert s["front_alignment"] > 0.5
    assert label_layer(s, AlignmentThresholds()) == "transducing"


def test_block_swap_is_not_a_time_reversal():
    # first half of the rows reads the second half of the input in order, and vice versa:
    # information moves, but time order within each block is kept
    n = 40
    a = torch.zeros(n, n)
    for i in range(n):
        a[i, (i + n // 2) % n] = 1.0
    s = matrix_stats(a, 4)
    assert s["monotonicity"] > 0.9 and s["reversal"] == 0.0
    assert label_layer(s, AlignmentThresholds()) != "reversed"
