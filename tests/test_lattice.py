"""astra.lattice: parity across backends and torchaudio, occupancies, pruning, errors.

The helpers at the top (ragged batches, backend switching) are shared with the other
lattice/consistency test files."""

from __future__ import annotations

import contextlib
import os
import warnings

import pytest
import torch

import astra.lattice as lattice

FAST_RNNT_OK, FAST_RNNT_DETAIL = lattice.available_backends()["fast_rnnt"]
IN_CI = os.environ.get("CI", "").lower() == "true"

requires_fast_rnnt = pytest.mark.skipif(
    not FAST_RNNT_OK,
    reason=f"fast_rnnt is not importable here ({FAST_RNNT_DETAIL}); build it with "
    "`bash tools/setup_env.sh` (CI fails instead of skipping: test_ci_has_fast_rnnt)",
)

BACKENDS_WITH_REASON = [
    pytest.param("torch"),
    pytest.param("fast_rnnt", marks=requires_fast_rnnt),
]


@contextlib.contextmanager
def using_backend(name: str):
    """Force lattice backend ``name`` inside the block, then restore the default."""
    lattice.set_backend(name)
    try:
        yield
    finally:
        lattice.set_backend(None)


def ragged_batch(seed: int, B: int = 4, T: int = 60, U: int = 20, V: int = 32, dtype=torch.float32):
    """Random joiner inputs with per-utterance lengths (item 0 has the maximal lengths).

    Returns ``(am [B, T, V], lm [B, U+1, V], symbols [B, U] int64 (no blank), t_lens [B],
    u_lens [B], boundary [B, 4])``.
    """
    g = torch.Generator().manual_seed(seed)
    t_lens = torch.randint(max(1, T // 3), T + 1, (B,), generator=g)
    u_lens = torch.randint(1, U + 1, (B,), generator=g)
    t_lens[0], u_lens[0] = T, U
    u_lens[1] = min(U, int(t_lens[1]) + 3)  # one utterance with more tokens than frames allowed
    symbols = torch.randint(1, V, (B, U), generator=g)
    am = torch.randn(B, T, V, generator=g, dtype=dtype)
    lm = torch.randn(B, U + 1, V, generator=g, dtype=dtype)
    zeros = torch.zeros(B, dtype=torch.int64)
    boundary = torch.stack([zeros, zeros, u_lens, t_lens], dim=1)
    return am, lm, symbols, t_lens, u_lens, boundary


def _torchaudio_rnnt(logits, symbols, t_lens, u_lens):
    import torchaudio.functional as taf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # deprecated in torchaudio 2.9, still there
        return taf.rnnt_loss(
            logits, symbols.int(), t_lens.int(), u_lens.int(), blank=0, reduction="none"
        )


# ------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("backend", BACKENDS_WITH_REASON)
@pytest.mark.parametrize("seed", [0, 1])
def test_rnnt_loss_matches_torchaudio(backend, seed):
    am, lm, symbols, t_lens, u_lens, boundary = ragged_batch(seed, B=4, T=60, U=20, V=32)
    logits = (am.unsqueeze(2) + lm.unsqueeze(1)) * 0.5  # [B, T, U+1, V]
    ours_in = logits.detach().clone().requires_grad_(True)
    ref_in = logits.detach().clone().requires_grad_(True)
    with using_backend(backend):
        ours = lattice.rnnt_loss(ours_in, symbols, 0, boundary=boundary, reduction="none")
    ref = _torchaudio_rnnt(ref_in, symbols, t_lens, u_lens)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    weights = torch.linspace(0.5, 1.5, len(ours))  # distinct per-utterance output grads
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-5)


@requires_fast_rnnt
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rnnt_loss_torch_equals_fast_rnnt(seed):
    am, lm, symbols, t_lens, u_lens, boundary = ragged_batch(seed, B=3, T=40, U=12, V=30)
    logits = am.unsqueeze(2) + lm.unsqueeze(1)
    results = {}
    for backend in ("torch", "fast_rnnt"):
        x = logits.detach().clone().requires_grad_(True)
        with using_backend(backend):
            loss = lattice.rnnt_loss(x, symbols, 0, boundary=boundary, reduction="sum")
        loss.backward()
        results[backend] = (loss.detach(), x.grad)
    torch.testing.assert_close(results["torch"][0], results["fast_rnnt"][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results["torch"][1], results["fast_rnnt"][1], rtol=1e-4, atol=1e-5)


@requires_fast_rnnt
@pytest.mark.parametrize("modified", [False, True])
def test_recursion_scores_and_occupancies_match_fast_rnnt(modified):
    import fast_rnnt

    g = torch.Generator().manual_seed(3)
    B, S, T = 4, 9, 25
    px = torch.randn(B, S, T if modified else T + 1, generator=g)
    py = torch.randn(B, S + 1, T, generator=g)
    boundary = torch.tensor([[0, 0, S, T], [0, 0, 4, 17], [2, 3, 8, 20], [0, 0, 0, 6]])
    with using_backend("torch"):
        ours, (ox, oy) = lattice.mutual_information_recursion(px, py, boundary, return_grad=True)
    ref, (rx, ry) = fast_rnnt.mutual_information_recursion(px, py, boundary, return_grad=True)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ox, rx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(oy, ry, rtol=1e-4, atol=1e-5)


@requires_fast_rnnt
@pytest.mark.parametrize("rnnt_type", ["regular", "modified", "constrained"])
def test_shared_lattice_code_equals_fast_rnnt_functions(rnnt_type):
    """astra.lattice builds lattices/ranges itself; they must equal fast_rnnt's own."""
    import fast_rnnt

    am, lm, symbols, t_lens, u_lens, boundary = ragged_batch(4, B=3, T=30, U=8, V=30)
    boundary[:, 2] = torch.minimum(boundary[:, 2], boundary[:, 3])  # modified needs T >= U
    for smooth in (0.0, 0.2):
        kw = dict(boundary=boundary, rnnt_type=rnnt_type, reduction="none")
        ours, (gx, gy) = lattice.rnnt_loss_simple(
            lm,
            am,
            symbols,
            0,
            lm_only_scale=smooth,
            am_only_scale=smooth / 2,
            return_grad=True,
            **kw,
        )
        if smooth:
            ref = fast_rnnt.rnnt_loss_smoothed(lm, am, symbols, 0, smooth, smooth / 2, **kw)
        else:
            ref = fast_rnnt.rnnt_loss_simple(lm, am, symbols, 0, **kw)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    for s_range in (2, 3, 5):
        ranges = lattice.get_rnnt_prune_ranges(gx, gy, boundary, s_range)
        assert torch.equal(ranges, fast_rnnt.get_rnnt_prune_ranges(gx, gy, boundary, s_range))
        am_p, lm_p = lattice.do_rnnt_pruning(am, lm, ranges)
        ours = lattice.rnnt_loss_pruned(am_p + lm_p, symbols, ranges, 0, **kw)
        ref = fast_rnnt.rnnt_loss_pruned(am_p + lm_p, symbols, ranges, 0, **kw)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)


def test_ci_has_fast_rnnt():
    """CI must never silently fall back to the torch backend."""
    if not IN_CI:
        pytest.skip("only enforced when CI=true")
    assert FAST_RNNT_OK, f"CI=true but fast_rnnt is not usable: {FAST_RNNT_DETAIL}"


def test_fast_rnnt_imports_without_torch_first():
    """The extension links libc10/libtorch through an rpath ($ORIGIN/torch/lib), so a bare
    ``import fast_rnnt`` works (it used to fail with ``libc10.so: cannot open shared object
    file`` unless torch was imported before)."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("fast_rnnt") is None:
        pytest.skip("fast_rnnt is not installed (CI fails instead: test_ci_has_fast_rnnt)")
    proc = subprocess.run(
        [sys.executable, "-c", "import fast_rnnt"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1:]


# ------------------------------------------------------------------- torch backend only


def test_gradcheck_torch_recursion_float64():
    from astra.lattice.torch_backend import mutual_information_recursion

    g = torch.Generator().manual_seed(5)
    for modified in (False, True):
        B, S, T = 3, 3, 5
        px = torch.randn(B, S, T if modified else T + 1, generator=g, dtype=torch.float64)
        py = torch.randn(B, S + 1, T, generator=g, dtype=torch.float64)
        boundary = torch.tensor([[0, 0, 3, 5], [1, 1, 3, 4], [0, 0, 2, 3]])
        for bd in (None, boundary):
            assert torch.autograd.gradcheck(
                lambda a, b, bd=bd: mutual_information_recursion(a, b, bd),
                (px.requires_grad_(), py.requires_grad_()),
            )


@pytest.mark.parametrize("backend", BACKENDS_WITH_REASON)
def test_float32_occupancies_match_float64_at_a_realistic_size(backend):
    """T=400, S=80, C=500: node scores reach ~-2300 nats, where float32 rounding in the
    sweeps used to put the torch backend's occupancies 1.2e-3 off (fast_rnnt: 2.4e-4)."""
    g = torch.Generator().manual_seed(0)
    B, T, S, C = 2, 400, 80, 500
    lm = torch.randn(B, S + 1, C, generator=g)
    am = torch.randn(B, T, C, generator=g)
    symbols = torch.randint(1, C, (B, S), generator=g)
    with using_backend(backend):
        results = {}
        for dtype in (torch.float32, torch.float64):
            px, py = lattice.get_rnnt_logprobs(lm.to(dtype), am.to(dtype), symbols, 0)
            results[dtype] = lattice.mutual_information_recursion(px, py, return_grad=True)
    (s32, (gx32, gy32)), (s64, (gx64, gy64)) = results[torch.float32], results[torch.float64]
    assert s32.dtype == gx32.dtype == gy32.dtype == torch.float32
    assert float(s64.min()) < -2000  # the regime where float32 sweeps lose accuracy
    torch.testing.assert_close(gx32.double(), gx64, atol=4e-4, rtol=0)
    torch.testing.assert_close(gy32.double(), gy64, atol=4e-4, rtol=0)
    torch.testing.assert_close(s32.double(), s64, atol=5e-3, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS_WITH_REASON)
def test_emit_occupancy_rows_sum_to_one_and_vanish_outside(backend):
    am, lm, symbols, t_lens, u_lens, boundary = ragged_batch(6, B=4, T=30, U=10, V=30)
    with using_backend(backend):
        px, py = lattice.get_rnnt_logprobs(lm, am, symbols, 0, boundary=boundary)
        _, (gx, gy) = lattice.mutual_information_recursion(px, py, boundary, return_grad=True)
    for b in range(4):
        u, t = int(u_lens[b]), int(t_lens[b])
        torch.testing.assert_close(gx[b, :u].sum(1), torch.ones(u), atol=1e-4, rtol=0)
        assert gx[b, u:].abs().sum() == 0
        assert gx[b, :, t:].abs().max() == 0
        assert gy[b, u + 1 :].abs().sum() == 0 and gy[b, :, t:].abs().sum() == 0
        # every frame is left through exactly one blank
        torch.testing.assert_close(gy[b, :, :t].sum(0), torch.ones(t), atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS_WITH_REASON)
def test_pruned_loss_with_full_range_equals_full_loss(backend):
    am, lm, symbols, t_lens, u_lens, boundary = ragged_batch(7, B=3, T=20, U=6, V=30)
    with using_backend(backend):
        full = lattice.rnnt_loss(
            am.unsqueeze(2) + lm.unsqueeze(1), symbols, 0, boundary, reduction="none"
        )
        _, (gx, gy) = lattice.rnnt_loss_simple(lm, am, symbols, 0, boundary, return_grad=True)
        for s_range in (7, 9):  # >= U + 1
            ranges = lattice.get_rnnt_prune_ranges(gx, gy, boundary, s_range)
            am_p, lm_p = lattice.do_rnnt_pruning(am, lm, ranges)
            pruned = lattice.rnnt_loss_pruned(
                am_p + lm_p, symbols, ranges, 0, boundary, reduction="none"
            )
            torch.testing.assert_close(pruned, full, rtol=1e-5, atol=1e-4)
        # a narrow window keeps a path and only loses probability mass
        ranges = lattice.get_rnnt_prune_ranges(gx, gy, boundary, 3)
        am_p, lm_p = lattice.do_rnnt_pruning(am, lm, ranges)
        narrow = lattice.rnnt_loss_pruned(
            am_p + lm_p, symbols, ranges, 0, boundary, reduction="none"
        )
    assert torch.isfinite(narrow).all() and (narrow >= full - 1e-4).all()


@pytest.mark.parametrize("backend", BACKENDS_WITH_REASON)
def test_an_empty_utterance_has_the_empty_path(backend):
    """T_b = U_b = 0 (regular lattice): log p = 0 and no occupancy, through every loss."""
    am, lm, symbols, _, _, boundary = ragged_batch(5, B=3, T=8, U=3, V=7)
    boundary[2, 2:] = 0
    with using_backend(backend):
        simple, (gx, gy) = lattice.rnnt_loss_simple(
            lm, am, symbols, 0, boundary, reduction="none", return_grad=True
        )
        ranges = lattice.get_rnnt_prune_ranges(gx, gy, boundary, 3)
        am_p, lm_p = lattice.do_rnnt_pruning(am, lm, ranges)
        pruned = lattice.rnnt_loss_pruned(am_p + lm_p, symbols, ranges, 0, boundary, reduction="none")
    assert torch.isfinite(simple).all() and torch.isfinite(pruned).all()
    assert simple[2] == 0 and pruned[2] == 0
    assert gx[2].abs().sum() == 0 and gy[2].abs().sum() == 0
    with pytest.raises(ValueError, match=r"T >= 1\) to emit U > 0"):
        boundary[2, 2] = 1
        lattice.rnnt_loss_simple(lm, am, symbols, 0, boundary)


def test_prune_ranges_without_boundary_use_the_whole_lattice():
    am, lm, symbols, _, _, _ = ragged_batch(3, B=2, T=8, U=3, V=7)
    _, (gx, gy) = lattice.rnnt_loss_simple(lm, am, symbols, 0, return_grad=True)
    whole = lattice.rnnt_boundary(torch.tensor([3, 3]), torch.tensor([8, 8]))
    assert whole.tolist() == [[0, 0, 3, 8], [0, 0, 3, 8]]
    expected = lattice.get_rnnt_prune_ranges(gx, gy, whole, 2)
    assert torch.equal(lattice.get_rnnt_prune_ranges(gx, gy, None, 2), expected)
    with pytest.raises(ValueError, match="symbol_lens and frame_lens must both be"):
        lattice.rnnt_boundary(torch.tensor([3, 3]), torch.tensor([8]))


def test_default_backend_is_best_available_and_env_var_forces(monkeypatch):
    available = lattice.available_backends()
    assert available["torch"][0]
    best = next(n for n in ("k2", "fast_rnnt", "torch") if available[n][0])
    monkeypatch.delenv("ASTRA_LATTICE_BACKEND", raising=False)
    assert lattice.backend_name() == best
    monkeypatch.setenv("ASTRA_LATTICE_BACKEND", "torch")
    assert lattice.backend_name() == "torch"
    monkeypatch.setenv("ASTRA_LATTICE_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="ASTRA_LATTICE_BACKEND"):
        lattice.backend_name()


def test_missing_backend_error_says_how_to_install(monkeypatch):
    with pytest.raises(ValueError, match="unknown lattice backend"):
        lattice.set_backend("warp")
    missing = [n for n, (ok, _) in lattice.available_backends().items() if not ok]
    if not missing:
        pytest.skip("every backend is installed here")
    name = missing[0]
    hint = "k2's own index" if name == "k2" else "tools/setup_env.sh"
    with pytest.raises(lattice.BackendUnavailableError, match=hint):
        lattice.set_backend(name)
    monkeypatch.setenv("ASTRA_LATTICE_BACKEND", name)
    with pytest.raises(lattice.BackendUnavailableError, match=hint):
        lattice.rnnt_loss(torch.zeros(1, 2, 2, 3), torch.ones(1, 1, dtype=torch.int64), 0)


# --------------------------------------------------------------------------- bad input


def _good():
    am, lm, symbols, t_lens, u_lens, boundary = ragged_batch(8, B=3, T=6, U=3, V=5)
    return am.unsqueeze(2) + lm.unsqueeze(1), symbols, boundary


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda lg, sy, bd: (lg, sy[:2], bd), r"symbols must be \[B, S\]"),
        (lambda lg, sy, bd: (lg, sy, bd[:2]), r"boundary must be \[B, 4\]"),
        (lambda lg, sy, bd: (lg, sy.float(), bd), "symbols must be an int64"),
        (lambda lg, sy, bd: (lg.long(), sy, bd), "floating-point"),
        (lambda lg, sy, bd: (lg, sy, bd.int()), "boundary must be an int64"),
        (lambda lg, sy, bd: (lg, sy, bd + torch.tensor([0, 0, 0, 1])), "t_end <= T"),
        (lambda lg, sy, bd: (lg, sy, bd + torch.tensor([0, 0, 1, 0])), "s_end <= S"),
        (lambda lg, sy, bd: (lg, sy + 10, bd), r"symbols must lie in \[0, 5\)"),
        (lambda lg, sy, bd: (lg, sy, bd * torch.tensor([1, 1, 1, 0])), "T >= 1"),
        (lambda lg, sy, bd: (lg[0], sy, bd), "must have 4 dims"),
    ],
)
def test_bad_input_raises_value_error(mutate, match):
    logits, symbols, boundary = mutate(*_good())
    with pytest.raises(ValueError, match=match):
        lattice.rnnt_loss(logits, symbols, 0, boundary=boundary)


def test_bad_input_simple_and_recursion():
    am, lm, symbols, t_lens, u_lens, boundary = ragged_batch(9, B=3, T=6, U=3, V=5)
    with pytest.raises(ValueError, match=r"lm must be \[B, S\+1, C\]"):
        lattice.rnnt_loss_simple(lm[:2], am, symbols, 0)
    with pytest.raises(ValueError, match="termination_symbol"):
        lattice.rnnt_loss_simple(lm, am, symbols, 7)
    with pytest.raises(ValueError, match="reduction"):
        lattice.rnnt_loss_simple(lm, am, symbols, 0, reduction="avg")
    short = boundary.clone()
    short[1, 2], short[1, 3] = 3, 2  # U > T: fine for regular RNN-T, impossible for modified
    assert torch.isfinite(
        lattice.rnnt_loss_simple(lm, am, symbols, 0, short, reduction="none")
    ).all()
    with pytest.raises(ValueError, match="T >= U"):
        lattice.rnnt_loss_simple(lm, am, symbols, 0, short, rnnt_type="modified")
    px, py = lattice.get_rnnt_logprobs(lm, am, symbols, 0)
    with pytest.raises(ValueError, match="dtypes differ"):
        lattice.mutual_information_recursion(px, py.double())
    with pytest.raises(ValueError, match=r"py \[B, S\+1, T\]"):
        lattice.mutual_information_recursion(px, py[:, 1:])


def test_gradcheck_joiner_logprobs_float64():
    """The hand-written backward of the full/pruned joiner's log-softmax reads."""
    from astra.lattice.rnnt import _JoinerLogprobs

    g = torch.Generator().manual_seed(13)
    logits = torch.randn(2, 3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 6, (2, 3, 3), generator=g)
    assert torch.autograd.gradcheck(lambda x: _JoinerLogprobs.apply(x, index, 0), (logits,))
    assert torch.autograd.gradcheck(lambda x: _JoinerLogprobs.apply(x, index, 2)[1], (logits,))


def test_broken_k2_is_not_used(monkeypatch):
    """A k2 whose recursion gives wrong numbers fails the smoke test and is skipped."""
    import sys
    import types

    from astra.lattice import backends

    fake = types.ModuleType("k2")
    fake.mutual_information_recursion = lambda px, py, boundary=None, return_grad=False: px.sum(
        (1, 2)
    )
    monkeypatch.setitem(sys.modules, "k2", fake)
    monkeypatch.setattr(backends, "_probe_k2_out_of_process", lambda: None)
    monkeypatch.setattr(backends, "_probe_cache", {})
    monkeypatch.setattr(backends, "_forced", None)
    monkeypatch.delenv("ASTRA_LATTICE_BACKEND", raising=False)
    ok, detail = lattice.available_backends()["k2"]
    assert not ok and "smoke test" in detail
    assert lattice.backend_name() != "k2"


def test_crashing_k2_import_is_caught_in_a_child_process(tmp_path):
    """A k2 wheel built for another torch may abort the interpreter on import."""
    import subprocess
    import sys

    (tmp_path / "k2").mkdir()
    (tmp_path / "k2" / "__init__.py").write_text("import os\nos.abort()\n")
    code = (
        "import astra.lattice as L; ok, detail = L.available_backends()['k2']; "
        "assert not ok and 'child process' in detail, detail; print(L.backend_name())"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    env.pop("ASTRA_LATTICE_BACKEND", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("fast_rnnt", "torch")
