"""ASTRA consistency: brute-force expectations, the weighted form's bounds, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
from test_lattice import BACKENDS_WITH_REASON, using_backend
from test_lattice_bruteforce import lattice_paths

import astra.lattice as lattice
from astra.losses.astra_consistency import astra_consistency, pairwise_cost


def tiny_batch(seed: int = 0, dtype=torch.float64):
    """B=3 ragged batch: T <= 4 frames, U <= 3 tokens, D=5; lattice from a simple joiner."""
    g = torch.Generator().manual_seed(seed)
    B, T, U, D, V = 3, 4, 3, 5, 7
    speech = torch.randn(B, T, D, generator=g, dtype=dtype)
    text = torch.randn(B, U, D, generator=g, dtype=dtype)
    speech_lens = torch.tensor([4, 3, 2])
    text_lens = torch.tensor([3, 1, 3])  # utterance 2 has more tokens than frames
    symbols = torch.randint(1, V, (B, U), generator=g)
    am = torch.randn(B, T, V, generator=g, dtype=dtype)
    lm = torch.randn(B, U + 1, V, generator=g, dtype=dtype)
    zeros = torch.zeros(B, dtype=torch.int64)
    boundary = torch.stack([zeros, zeros, text_lens, speech_lens], 1)
    px, py = lattice.get_rnnt_logprobs(lm, am, symbols, 0, boundary=boundary)
    return speech, speech_lens, text, text_lens, px, py


def enumerate_consistency(speech, speech_lens, text, text_lens, px, py, distance, lam):
    """Per utterance: (E_path[cost], -log E_path[exp(-lam * cost)]) by enumerating paths."""
    cost = pairwise_cost(speech, text, distance)
    expected, weighted = [], []
    for b in range(speech.shape[0]):
        T, U = int(speech_lens[b]), int(text_lens[b])
        paths = []
        for arcs in lattice_paths(U, T, modified=False):
            w = sum(float(px[b, s, t] if k == "x" else py[b, s, t]) for k, s, t in arcs)
            if w == float("-inf"):
                continue  # emits after the last frame
            c = sum(float(cost[b, s, t]) for k, s, t in arcs if k == "x")
            paths.append((w, c))
        log_z = math.log(sum(math.exp(w) for w, _ in paths))
        probs = [math.exp(w - log_z) for w, _ in paths]
        expected.append(sum(p * c for p, (_, c) in zip(probs, paths, strict=True)))
        weighted.append(
            -math.log(sum(p * math.exp(-lam * c) for p, (_, c) in zip(probs, paths, strict=True)))
        )
    return torch.tensor(expected, dtype=torch.float64), torch.tensor(weighted, dtype=torch.float64)


@pytest.mark.parametrize("backend", BACKENDS_WITH_REASON)
@pytest.mark.parametrize("distance", ["mae", "mse"])
def test_both_forms_equal_enumeration(backend, distance):
    batch = tiny_batch(1)
    lam = 0.7
    exp_ref, wtd_ref = enumerate_consistency(*batch, distance, lam)
    with using_backend(backend):
        expected = astra_consistency(*batch, mode="expected", distance=distance, reduction="none")
        weighted = astra_consistency(
            *batch, mode="weighted_rnnt", distance=distance, lam=lam, reduction="none"
        )
    torch.testing.assert_close(expected, exp_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(weighted, wtd_ref, atol=1e-5, rtol=0)


def test_pairwise_cost_definitions():
    speech, _, text, _, _, _ = tiny_batch(2)
    mae = pairwise_cost(speech, text, "mae")
    mse = pairwise_cost(speech, text, "mse")
    diff = text.unsqueeze(2) - speech.unsqueeze(1)  # [B, U, T, D]
    torch.testing.assert_close(mae, diff.abs().mean(-1))
    torch.testing.assert_close(mse, diff.pow(2).mean(-1))


def test_reductions_and_pad_column_ignored():
    speech, speech_lens, text, text_lens, px, py = tiny_batch(3)
    per_utt = astra_consistency(speech, speech_lens, text, text_lens, px, py, reduction="none")
    total = astra_consistency(speech, speech_lens, text, text_lens, px, py, reduction="sum")
    mean = astra_consistency(speech, speech_lens, text, text_lens, px, py, reduction="mean")
    torch.testing.assert_close(total, per_utt.sum())
    torch.testing.assert_close(mean, per_utt.sum() / text_lens.sum())
    # finite garbage in the pad column / padded frames / padded rows changes nothing
    px2, py2, speech2, text2 = px.clone(), py.clone(), speech.clone(), text.clone()
    px2[:, :, -1] = 0.0
    px2[1, :, 3:] = 5.0
    speech2[2, 2:] = 100.0
    text2[1, 1:] = -100.0
    again = astra_consistency(speech2, speech_lens, text2, text_lens, px2, py2, reduction="none")
    torch.testing.assert_close(again, per_utt)


@pytest.mark.parametrize("backend", BACKENDS_WITH_REASON)
def test_weighted_is_bounded_by_expected_and_has_expected_slope(backend):
    batch = tiny_batch(4)
    with using_backend(backend):
        expected = astra_consistency(*batch, mode="expected", reduction="none")
        for lam in (0.1, 1.0, 3.0):
            weighted = astra_consistency(*batch, mode="weighted_rnnt", lam=lam, reduction="none")
            assert (weighted <= lam * expected + 1e-9).all()
            assert (weighted >= 0).all()
        h = 1e-6  # L(0) = 0, so the forward difference is L(h) / h
        slope = astra_consistency(*batch, mode="weighted_rnnt", lam=h, reduction="none") / h
    torch.testing.assert_close(slope, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["expected", "weighted_rnnt"])
def test_gradient_reaches_frames_not_lattice(mode):
    speech, speech_lens, text, text_lens, px, py = tiny_batch(5, dtype=torch.float32)
    speech.requires_grad_(True)
    text.requires_grad_(True)
    px.requires_grad_(True)
    py.requires_grad_(True)
    loss = astra_consistency(speech, speech_lens, text, text_lens, px, py, mode=mode)
    loss.backward()
    assert px.grad is None and py.grad is None
    for b in range(3):
        assert speech.grad[b, : speech_lens[b]].abs().sum() > 0
        assert speech.grad[b, speech_lens[b] :].abs().sum() == 0
        assert text.grad[b, : text_lens[b]].abs().sum() > 0
        assert text.grad[b, text_lens[b] :].abs().sum() == 0


def test_realistic_size_runs_on_float32_and_matches_across_backends():
    g = torch.Generator().manual_seed(6)
    B, T, U, D, V = 4, 50, 15, 16, 30
    speech, text = torch.randn(B, T, D, generator=g), torch.randn(B, U, D, generator=g)
    speech_lens, text_lens = torch.tensor([50, 31, 12, 40]), torch.tensor([15, 9, 15, 1])
    zeros = torch.zeros(B, dtype=torch.int64)
    boundary = torch.stack([zeros, zeros, text_lens, speech_lens], 1)
    symbols = torch.randint(1, V, (B, U), generator=g)
    px, py = lattice.get_rnnt_logprobs(
        torch.randn(B, U + 1, V, generator=g),
        torch.randn(B, T, V, generator=g),
        symbols,
        0,
        boundary,
    )
    results = []
    for backend in [n for n in ("torch", "fast_rnnt") if lattice.available_backends()[n][0]]:
        with using_backend(backend):
            results.append(
                [
                    astra_consistency(
                        speech, speech_lens, text, text_lens, px, py, mode=m, reduction="none"
                    )
                    for m in ("expected", "weighted_rnnt")
                ]
            )
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert all(torch.isfinite(x).all() for x in results[0])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.update(text=a["text"][:2]), "batch sizes differ"),
        (lambda a: a.update(speech_lens=a["speech_lens"][:2]), "batch sizes differ"),
        (lambda a: a.update(speech_lens=a["speech_lens"] + 1), r"speech_lens must lie in \[0, 4\]"),
        (lambda a: a.update(text_lens=a["text_lens"] + 1), r"text_lens must lie in \[0, 3\]"),
        (lambda a: a.update(speech_lens=a["speech_lens"].float()), "integer tensor"),
        (lambda a: a.update(speech=a["speech"].long()), "floating-point"),
        (lambda a: a.update(text=a["text"][:, :, :4]), "D=5 but text has D=4"),
        (lambda a: a.update(px=a["px"][:, :, :3]), r"px must be \[B, U, T\+1\]"),
        (lambda a: a.update(py=a["py"].float()), "dtypes differ"),
        (lambda a: a.update(speech_lens=torch.tensor([4, 0, 2])), "T >= 1"),
        (lambda a: a.update(mode="sampled"), "mode must be"),
        (lambda a: a.update(distance="l3"), "distance must be"),
        (lambda a: a.update(reduction="avg"), "reduction must be"),
        (lambda a: a.update(mode="weighted_rnnt", lam=0.0), "lam must be > 0"),
    ],
)
def test_bad_input_raises_value_error(change, match):
    speech, speech_lens, text, text_lens, px, py = tiny_batch(7)
    args = dict(
        speech=speech, speech_lens=speech_lens, text=text, text_lens=text_lens, px=px, py=py
    )
    change(args)
    with pytest.raises(ValueError, match=match):
        astra_consistency(**args)


def test_modified_lattice_needs_t_at_least_u():
    speech, speech_lens, text, text_lens, px, py = tiny_batch(8)
    with pytest.raises(ValueError, match="T >= U"):
        astra_consistency(speech, speech_lens, text, text_lens, px[:, :, :4], py)
    text_lens = torch.minimum(text_lens, speech_lens)
    out = astra_consistency(speech, speech_lens, text, text_lens, px[:, :, :4].clone(), py)
    assert torch.isfinite(out)
