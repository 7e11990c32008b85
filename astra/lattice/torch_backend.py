"""Pure-PyTorch ``mutual_information_recursion``: the ``torch`` lattice backend.

Legend: B batch, S symbols (lattice rows, = U tokens for RNN-T), T frames.

Recursion (k2 conventions; ``p`` is ``[B, S+1, T+1]``, ``p[b, 0, 0] = 0``)::

    regular  (px [B, S, T+1]): p[s, t] = logaddexp(p[s-1, t] + px[s-1, t],
                                                    p[s, t-1] + py[s, t-1])
    modified (px [B, S, T]):   p[s, t] = logaddexp(p[s-1, t-1] + px[s-1, t-1],
                                                    p[s, t-1] + py[s, t-1])

and the score is ``p[b, s_end, t_end]``. The regular lattice is swept along its
anti-diagonals ``k = s + t`` (every node of diagonal k depends only on diagonal k-1): the
inputs are "skewed" once into ``[K, B, S+2]`` tensors so each diagonal is one contiguous
slice, and each of the S+T steps is a handful of batched tensor ops. The modified lattice
advances one frame per arc, so it is swept along t. The backward pass is the beta
(suffix) recursion swept the other way; arc occupancies
``exp(alpha + arc + beta - score)`` are then formed for all arcs at once. Gradients are
those occupancies times the incoming gradient (a custom autograd Function: no autograd
through the Python loop).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

NEG_INF = float("-inf")


def _skew(x: Tensor, num_diagonals: int) -> Tensor:
    """``x [B, R, C] -> y [K, B, R]`` with ``y[k, b, r] = x[b, r, k - r]`` (-inf outside x)."""
    B, R, C = x.shape
    K = num_diagonals
    off = R - 1
    width = K + off
    padded = x.new_full((B, R, width), NEG_INF)
    padded[:, :, off : off + C] = x
    # element (k, b, r) -> padded[b, r, k - r + off]
    return padded.as_strided((K, B, R), (1, R * width, width - 1), off).contiguous()


def _unskew(y: Tensor, num_cols: int) -> Tensor:
    """Inverse of :func:`_skew`: ``y [K, B, R] -> x [B, R, C]``, ``x[b, r, t] = y[r + t, b, r]``."""
    K, B, R = y.shape
    y = y.contiguous()
    return y.as_strided((B, R, num_cols), (R, B * R + 1, B * R), 0).contiguous()


def _shift(x: Tensor, s0: Tensor, t0: Tensor, sign: int) -> Tensor:
    """``out[b, s, t] = x[b, s + sign*s0[b], t + sign*t0[b]]`` (fill outside: -inf or 0)."""
    B, R, C = x.shape
    fill = NEG_INF if sign > 0 else 0.0
    rows = torch.arange(R, device=x.device).view(1, R, 1) + sign * s0.view(B, 1, 1)
    cols = torch.arange(C, device=x.device).view(1, 1, C) + sign * t0.view(B, 1, 1)
    valid = (rows >= 0) & (rows < R) & (cols >= 0) & (cols < C)
    flat = (rows.clamp(0, R - 1) * C + cols.clamp(0, C - 1)).view(B, R * C)
    out = torch.gather(x.reshape(B, R * C), 1, flat).view(B, R, C)
    return out.masked_fill(~valid, fill)


def _mask_outside(px: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor) -> tuple[Tensor, Tensor]:
    """Set arcs that leave the (origin-based) boundary box to -inf."""
    B, S, T1 = px.shape
    T = py.shape[2]
    dev = px.device
    s_idx = torch.arange(S + 1, device=dev).view(1, -1, 1)
    se = s_end.view(B, 1, 1)
    te = t_end.view(B, 1, 1)
    if T1 == T + 1:  # regular: px[s, t] is an arc inside column t (t <= t_end allowed)
        px_ok = (s_idx[:, :S] < se) & (torch.arange(T1, device=dev).view(1, 1, -1) <= te)
    else:  # modified: px[s, t] moves to frame t+1
        px_ok = (s_idx[:, :S] < se) & (torch.arange(T1, device=dev).view(1, 1, -1) < te)
    py_ok = (s_idx <= se) & (torch.arange(T, device=dev).view(1, 1, -1) < te)
    return px.masked_fill(~px_ok, NEG_INF), py.masked_fill(~py_ok, NEG_INF)


class _Nodes:
    """Node scores of ``n`` wavefront steps, ``[n, B, S+1]``, in one flat buffer with one
    spare -inf element, so that the neighbour view shifted by one row index is a plain
    contiguous view too (no slicing, no non-contiguous outputs in the sweep).

    ``forward=True``: ``shifted[k][b, s] = nodes[k][b, s-1]`` (the spare element is in
    front); ``forward=False``: ``shifted[k][b, s] = nodes[k][b, s+1]`` (spare at the end).
    Where the shift crosses into the neighbouring batch row the value is garbage, but it is
    always added to a -inf arc (the padded rows of ``px``), so it never counts.
    """

    def __init__(self, n: int, B: int, S1: int, like: Tensor, forward: bool):
        self.flat = like.new_full((n * B * S1 + 1,), NEG_INF)
        lo, hi = self.flat[:-1].view(n, B, S1), self.flat[1:].view(n, B, S1)
        self.nodes, self.shifted = (hi, lo) if forward else (lo, hi)


def _sweep(nodes, shifted, arc_shifted, arc, steps) -> None:
    """One wavefront step per ``(d, p, x, y)`` in ``steps``:
    ``nodes[d] = logaddexp(shifted[p] + arc_shifted[x], nodes[p] + arc[y])``.

    Arguments are tuples of contiguous per-step views (``Tensor.unbind``): each step is three
    kernel calls writing contiguous memory, with two preallocated buffers.
    """
    buf_x = torch.empty_like(arc[0])
    buf_y = torch.empty_like(arc[0])
    add, logaddexp = torch.add, torch.logaddexp
    for d, p, x, y in steps:
        add(shifted[p], arc_shifted[x], out=buf_x)
        add(nodes[p], arc[y], out=buf_y)
        logaddexp(buf_x, buf_y, out=nodes[d])


def _beta_sweep(beta: _Nodes, arc_shifted, arc, ends: dict, s_end: list, steps_down) -> None:
    """Backward sweep from the last step down; seeds ``beta = 0`` at each utterance's end
    node when its step is reached. ``steps_down(top, stop)`` lists the steps top..stop."""
    nodes, shifted = beta.nodes.unbind(0), beta.shifted.unbind(0)
    top = beta.nodes.shape[0] - 2
    for k in sorted(ends, reverse=True):
        _sweep(nodes, shifted, arc_shifted, arc, steps_down(top, k))
        bs = ends[k]
        beta.nodes[k, bs, [s_end[b] for b in bs]] = 0.0
        top = k - 1
    _sweep(nodes, shifted, arc_shifted, arc, steps_down(top, 0))


def _group_ends(step_of_end: Tensor) -> dict[int, list[int]]:
    ends: dict[int, list[int]] = {}
    for b, k in enumerate(step_of_end.tolist()):
        ends.setdefault(k, []).append(b)
    return ends


def _regular_alpha_beta(px: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor, need_beta: bool):
    """Forward (and optionally backward) sweeps of the regular lattice along anti-diagonals.

    Returns ``(scores [B], alpha [K, B, S+1], beta [K+1, B, S+1] or None, px_out, py_out)``
    with K = S+T+1 diagonals; ``alpha[k, b, s]``/``beta[k, b, s]`` belong to node
    (s, k-s), ``px_out [K+1, B, S+1]`` holds ``px[s, k-1-s]`` (the emit arc out of node
    (s, k-1-s); -inf at s = S) and ``py_out [K, B, S+1]`` holds ``py[s, k-s]``.
    """
    B, S, T1 = px.shape
    T = py.shape[2]
    K = S + T + 1
    ninf_row = px.new_full((B, 1, T1), NEG_INF)
    px_in = _skew(torch.cat([ninf_row, px, ninf_row], dim=1), K + 1)  # [K+1, B, S+2]
    px_into = px_in[:, :, : S + 1].contiguous()  # px[s-1, k-s]: the emit arc into node (s, k-s)
    px_out = px_in[:, :, 1:].contiguous()  # px[s, k-1-s]
    py_out = _skew(py, K)  # [K, B, S+1]
    py_steps = py_out.unbind(0)

    alpha = _Nodes(K, B, S + 1, px, forward=True)
    alpha.nodes[0, :, 0] = 0.0
    steps = [(k, k - 1, k, k - 1) for k in range(1, K)]
    _sweep(alpha.nodes.unbind(0), alpha.shifted.unbind(0), px_into.unbind(0), py_steps, steps)
    batch = torch.arange(B, device=px.device)
    scores = alpha.nodes[s_end + t_end, batch, s_end]
    if not need_beta:
        return scores, alpha.nodes, None, px_out, py_out

    beta = _Nodes(K + 1, B, S + 1, px, forward=False)
    _beta_sweep(
        beta,
        px_out.unbind(0),
        py_steps,
        _group_ends(s_end + t_end),
        s_end.tolist(),
        lambda top, stop: [(j, j + 1, j + 1, j) for j in range(top, stop - 1, -1)],
    )
    return scores, alpha.nodes, beta.nodes, px_out, py_out


def _regular_occupancy(scores, alpha, beta, px_out, py_out, S: int, T: int):
    """Arc occupancies ``(px_grad [B, S, T+1], py_grad [B, S+1, T])`` of the regular lattice."""
    finite = torch.isfinite(scores)
    tot = torch.where(finite, scores, torch.zeros_like(scores)).view(1, -1, 1)
    # px[s, t], k = s + t: node (s, t) -> (s+1, t) on diagonal k+1
    gx = (alpha[:, :, :S] + px_out[1:, :, :S] + beta[1:, :, 1:] - tot).exp()
    # py[s, t]: node (s, t) -> (s, t+1) on diagonal k+1
    gy = (alpha + py_out + beta[1:] - tot).exp()
    keep = finite.view(-1, 1, 1).to(gx.dtype)
    return _unskew(gx, T + 1) * keep, _unskew(gy, T) * keep


def _modified_alpha_beta(px: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor, need_beta: bool):
    """Forward/backward sweeps of the modified lattice along t.

    ``alpha [T+1, B, S+1]``, ``beta [T+1, B, S+1]`` (node (s, t) at ``[t, b, s]``);
    ``px_out [T, B, S+1]`` = ``px[s, t]`` (-inf at s = S), ``pyt [T, B, S+1]`` = ``py[s, t]``.
    """
    B, S, T = px.shape
    ninf_col = px.new_full((T, B, 1), NEG_INF)
    pxt = px.permute(2, 0, 1)
    px_into = torch.cat([ninf_col, pxt], dim=2).contiguous()  # px[s-1, t]
    px_out = torch.cat([pxt, ninf_col], dim=2).contiguous()  # px[s, t]
    pyt = py.permute(2, 0, 1).contiguous()
    py_steps = pyt.unbind(0)
    alpha = _Nodes(T + 1, B, S + 1, px, forward=True)
    alpha.nodes[0, :, 0] = 0.0
    steps = [(t, t - 1, t - 1, t - 1) for t in range(1, T + 1)]
    _sweep(alpha.nodes.unbind(0), alpha.shifted.unbind(0), px_into.unbind(0), py_steps, steps)
    batch = torch.arange(B, device=px.device)
    scores = alpha.nodes[t_end, batch, s_end]
    if not need_beta:
        return scores, alpha.nodes, None, px_out, pyt
    beta = _Nodes(T + 1, B, S + 1, px, forward=False)
    _beta_sweep_modified(beta, px_out.unbind(0), py_steps, _group_ends(t_end), s_end.tolist())
    return scores, alpha.nodes, beta.nodes, px_out, pyt


def _beta_sweep_modified(beta: _Nodes, px_steps, py_steps, ends: dict, s_end: list) -> None:
    nodes, shifted = beta.nodes.unbind(0), beta.shifted.unbind(0)
    top = beta.nodes.shape[0] - 1  # t = T: no arcs leave the last frame column
    for t in sorted(ends, reverse=True):
        _sweep(
            nodes,
            shifted,
            px_steps,
            py_steps,
            [(j, j + 1, j, j) for j in range(top - 1, t - 1, -1)],
        )
        bs = ends[t]
        beta.nodes[t, bs, [s_end[b] for b in bs]] = 0.0
        top = t
    _sweep(nodes, shifted, px_steps, py_steps, [(j, j + 1, j, j) for j in range(top - 1, -1, -1)])


def _modified_occupancy(scores, alpha, beta, px_out, pyt, S: int, T: int):
    finite = torch.isfinite(scores)
    tot = torch.where(finite, scores, torch.zeros_like(scores)).view(1, -1, 1)
    # px[s, t]: node (s, t) -> (s+1, t+1); py[s, t]: node (s, t) -> (s, t+1)
    gx = (alpha[:T, :, :S] + px_out[:, :, :S] + beta[1:, :, 1:] - tot).exp()
    gy = (alpha[:T] + pyt + beta[1:] - tot).exp()
    keep = finite.view(-1, 1, 1).to(gx.dtype)
    return gx.permute(1, 2, 0) * keep, gy.permute(1, 2, 0) * keep


def _forward(px: Tensor, py: Tensor, boundary: Optional[Tensor], need_grad: bool):
    """Scores ``[B]`` and, if ``need_grad``, occupancies ``(px_grad, py_grad)``, in the
    dtype of ``px``; the sweeps and occupancies run in float64 (see :func:`_sweep_dtype`)."""
    out_dtype = px.dtype
    work = _sweep_dtype(px)
    px, py = px.to(work), py.to(work)
    B, S, T1 = px.shape
    T = py.shape[2]
    regular = T1 == T + 1
    if boundary is None:
        s_end = torch.full((B,), S, dtype=torch.int64, device=px.device)
        t_end = torch.full((B,), T, dtype=torch.int64, device=px.device)
        shifted = False
    else:
        boundary = boundary.to(device=px.device, dtype=torch.int64)
        s0, t0 = boundary[:, 0], boundary[:, 1]
        shifted = bool((s0 != 0).any() or (t0 != 0).any())
        if shifted:  # move every sub-lattice to the origin
            px = _shift(px, s0, t0, +1)
            py = _shift(py, s0, t0, +1)
        s_end, t_end = boundary[:, 2] - s0, boundary[:, 3] - t0
        px, py = _mask_outside(px, py, s_end, t_end)
    sweep = _regular_alpha_beta if regular else _modified_alpha_beta
    occupancy = _regular_occupancy if regular else _modified_occupancy
    scores, alpha, beta, xin, yout = sweep(px, py, s_end, t_end, need_grad)
    if not need_grad:
        return scores.to(out_dtype), None, None
    px_grad, py_grad = occupancy(scores, alpha, beta, xin, yout, S, T)
    if shifted:
        px_grad = _shift(px_grad, s0, t0, -1)
        py_grad = _shift(py_grad, s0, t0, -1)
    return scores.to(out_dtype), px_grad.to(out_dtype), py_grad.to(out_dtype)


def _sweep_dtype(px: Tensor) -> torch.dtype:
    """float64 for every floating input (float16/bfloat16/float32 are upcast).

    Node scores grow to thousands of nats (about -5.6 per frame at V=500), where one float32
    ulp is ~1e-4; the S+T rounding errors of a float32 sweep add up to ~1e-3 in
    ``alpha + arc + beta - score``, i.e. occupancies off by up to ~1e-3 absolute (fast_rnnt,
    whose backward pass works with local ratios, is off by ~3e-4). In float64 the error is
    that of the float32 inputs alone. The sweeps are launch-bound, so the cost is small
    (tools/bench_lattice.py); the float64 buffers are ``[S+T, B, S+1]``, small next to the
    joiner's ``[B, T, s_range, V]``.
    """
    return torch.float64 if px.is_floating_point() else px.dtype


class _MutualInformation(torch.autograd.Function):
    """Autograd wrapper: forward sweep, occupancies from the beta sweep, grad = occ * g."""

    @staticmethod
    def forward(ctx, px, py, boundary, return_grad, grads_out):
        need = return_grad or ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        with torch.no_grad():
            scores, px_grad, py_grad = _forward(px.detach(), py.detach(), boundary, need)
        if need:
            ctx.save_for_backward(px_grad, py_grad)
        grads_out.extend([px_grad, py_grad])
        return scores

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_scores):
        px_grad, py_grad = ctx.saved_tensors
        g = grad_scores.view(-1, 1, 1)
        return px_grad * g, py_grad * g, None, None, None


def mutual_information_recursion(
    px: Tensor,
    py: Tensor,
    boundary: Optional[Tensor] = None,
    return_grad: bool = False,
):
    """Log-partition of the k2 lattice ``(px, py)``; same contract as k2/fast_rnnt.

    Args:
      px: ``[B, S, T+1]`` (regular) or ``[B, S, T]`` (modified) log-weights of the x arcs.
      py: ``[B, S+1, T]`` log-weights of the y arcs.
      boundary: optional ``[B, 4]`` int64 ``(s_begin, t_begin, s_end, t_end)``; default
        ``(0, 0, S, T)``.
      return_grad: also return the occupancies ``(px_grad, py_grad)`` (the gradient of
        ``scores.sum()`` with respect to ``px``, ``py``), computed without autograd.
    Returns:
      ``scores [B]``, or ``(scores, (px_grad, py_grad))`` if ``return_grad``.
    """
    grads: list = []
    scores = _MutualInformation.apply(px, py, boundary, return_grad, grads)
    return (scores, (grads[0], grads[1])) if return_grad else scores
