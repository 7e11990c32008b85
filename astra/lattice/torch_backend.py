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


def _sweep(src_shifted, src, arc_shifted, arc, dst, steps) -> None:
    """One wavefront step per ``(d, p, x, y)`` in ``steps``:
    ``dst[d] = logaddexp(src_shifted[p] + arc_shifted[x], src[p] + arc[y])``.

    All arguments are tuples of per-step views (``Tensor.unbind``), so each step is three
    kernel calls into two preallocated buffers and no Python-level slicing.
    """
    buf_x = torch.empty_like(arc[0])
    buf_y = torch.empty_like(arc[0])
    add, logaddexp = torch.add, torch.logaddexp
    for d, p, x, y in steps:
        add(src_shifted[p], arc_shifted[x], out=buf_x)
        add(src[p], arc[y], out=buf_y)
        logaddexp(buf_x, buf_y, out=dst[d])


def _regular_alpha_beta(px: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor, need_beta: bool):
    """Forward (and optionally backward) sweeps of the regular lattice along anti-diagonals.

    Returns ``(scores [B], alpha, beta, px_in, py_out)`` where ``alpha [K, B, S+2]`` has a
    leading -inf column (``alpha[k, b, s+1]`` = node (s, k-s)), ``beta [K+1, B, S+2]`` has a
    trailing -inf column (``beta[k, b, s]``), ``px_in [K+1, B, S+2]`` holds
    ``px[s-1, k-s]`` (the emit arc *into* node (s, k-s)) and ``py_out [K, B, S+1]`` holds
    ``py[s, k-s]`` (the blank arc *out of* node (s, k-s)).
    """
    B, S, T1 = px.shape
    T = py.shape[2]
    K = S + T + 1  # diagonals 0..S+T
    ninf_row = px.new_full((B, 1, T1), NEG_INF)
    px_in = _skew(torch.cat([ninf_row, px, ninf_row], dim=1), K + 1)  # [K+1, B, S+2]
    py_out = _skew(py, K)  # [K, B, S+1]

    alpha = px.new_full((K, B, S + 2), NEG_INF)
    alpha[0, :, 1] = 0.0
    _sweep(
        src_shifted=alpha[:, :, : S + 1].unbind(0),  # alpha_{k-1}[s-1]
        src=alpha[:, :, 1:].unbind(0),  # alpha_{k-1}[s]
        arc_shifted=px_in[:, :, : S + 1].unbind(0),
        arc=py_out.unbind(0),
        dst=alpha[:, :, 1:].unbind(0),
        steps=[(k, k - 1, k, k - 1) for k in range(1, K)],
    )
    batch = torch.arange(B, device=px.device)
    scores = alpha[s_end + t_end, batch, s_end + 1]
    if not need_beta:
        return scores, alpha, None, px_in, py_out

    beta = px.new_full((K + 1, B, S + 2), NEG_INF)
    end_diag = (s_end + t_end).tolist()
    ends: dict[int, list[int]] = {}
    for b, k in enumerate(end_diag):
        ends.setdefault(k, []).append(b)
    s_end_list = s_end.tolist()
    src_shifted = beta[:, :, 1:].unbind(0)  # beta_{k+1}[s+1]
    src = beta[:, :, : S + 1].unbind(0)  # beta_{k+1}[s]
    arc_shifted = px_in[:, :, 1:].unbind(0)
    arc = py_out.unbind(0)
    dst = beta[:, :, : S + 1].unbind(0)
    top = K - 1
    for k in sorted(ends, reverse=True):  # sweep down to each end diagonal, then seed it
        _sweep(
            src_shifted,
            src,
            arc_shifted,
            arc,
            dst,
            [(j, j + 1, j + 1, j) for j in range(top, k - 1, -1)],
        )
        bs = ends[k]
        beta[k, bs, [s_end_list[b] for b in bs]] = 0.0
        top = k - 1
    _sweep(
        src_shifted, src, arc_shifted, arc, dst, [(j, j + 1, j + 1, j) for j in range(top, -1, -1)]
    )
    return scores, alpha, beta, px_in, py_out


def _regular_occupancy(scores, alpha, beta, px_in, py_out, S: int, T: int):
    """Arc occupancies ``(px_grad [B, S, T+1], py_grad [B, S+1, T])`` of the regular lattice."""
    K = alpha.shape[0]
    finite = torch.isfinite(scores)
    tot = torch.where(finite, scores, torch.zeros_like(scores)).view(1, -1, 1)
    gx = (
        alpha[:, :, 1 : S + 1]
        + px_in[1 : K + 1, :, 1 : S + 1]
        + beta[1 : K + 1, :, 1 : S + 1]
        - tot
    ).exp()
    gy = (alpha[:, :, 1:] + py_out + beta[1 : K + 1, :, : S + 1] - tot).exp()
    px_grad = _unskew(gx, T + 1)
    py_grad = _unskew(gy, T)
    keep = finite.view(-1, 1, 1).to(px_grad.dtype)
    return px_grad * keep, py_grad * keep


def _modified_alpha_beta(px: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor, need_beta: bool):
    """Forward/backward sweeps of the modified lattice along t.

    ``alpha [T+1, B, S+2]`` (leading -inf column), ``beta [T+2, B, S+2]`` (trailing -inf
    column); ``pxt [T, B, S+2]`` = ``px[s-1, t]`` at column s, ``pyt [T, B, S+1]`` = ``py[s, t]``.
    """
    B, S, T = px.shape
    ninf_col = px.new_full((T, B, 1), NEG_INF)
    pxt = torch.cat([ninf_col, px.permute(2, 0, 1), ninf_col], dim=2).contiguous()
    pyt = py.permute(2, 0, 1).contiguous()
    alpha = px.new_full((T + 1, B, S + 2), NEG_INF)
    alpha[0, :, 1] = 0.0
    _sweep(
        src_shifted=alpha[:, :, : S + 1].unbind(0),
        src=alpha[:, :, 1:].unbind(0),
        arc_shifted=pxt[:, :, : S + 1].unbind(0),
        arc=pyt.unbind(0),
        dst=alpha[:, :, 1:].unbind(0),
        steps=[(t, t - 1, t - 1, t - 1) for t in range(1, T + 1)],
    )
    batch = torch.arange(B, device=px.device)
    scores = alpha[t_end, batch, s_end + 1]
    if not need_beta:
        return scores, alpha, None, pxt, pyt
    beta = px.new_full((T + 2, B, S + 2), NEG_INF)
    ends: dict[int, list[int]] = {}
    for b, t in enumerate(t_end.tolist()):
        ends.setdefault(t, []).append(b)
    s_end_list = s_end.tolist()
    src_shifted = beta[:, :, 1:].unbind(0)
    src = beta[:, :, : S + 1].unbind(0)
    arc_shifted = pxt[:, :, 1:].unbind(0)
    arc = pyt.unbind(0)
    dst = beta[:, :, : S + 1].unbind(0)
    top = T - 1
    for t in sorted(ends, reverse=True):
        _sweep(
            src_shifted,
            src,
            arc_shifted,
            arc,
            dst,
            [(j, j + 1, j, j) for j in range(top, t - 1, -1)],
        )
        bs = ends[t]
        beta[t, bs, [s_end_list[b] for b in bs]] = 0.0
        top = t - 1
    _sweep(src_shifted, src, arc_shifted, arc, dst, [(j, j + 1, j, j) for j in range(top, -1, -1)])
    return scores, alpha, beta, pxt, pyt


def _modified_occupancy(scores, alpha, beta, pxt, pyt, S: int, T: int):
    finite = torch.isfinite(scores)
    tot = torch.where(finite, scores, torch.zeros_like(scores)).view(1, -1, 1)
    # px[s, t]: node (s, t) -> (s+1, t+1); py[s, t]: node (s, t) -> (s, t+1)
    gx = (
        alpha[:T, :, 1 : S + 1] + pxt[:, :, 1 : S + 1] + beta[1 : T + 1, :, 1 : S + 1] - tot
    ).exp()
    gy = (alpha[:T, :, 1:] + pyt + beta[1 : T + 1, :, : S + 1] - tot).exp()
    keep = finite.view(-1, 1, 1).to(gx.dtype)
    return gx.permute(1, 2, 0) * keep, gy.permute(1, 2, 0) * keep


def _forward(px: Tensor, py: Tensor, boundary: Optional[Tensor], need_grad: bool):
    """Scores ``[B]`` and, if ``need_grad``, occupancies ``(px_grad, py_grad)``."""
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
        return scores, None, None
    px_grad, py_grad = occupancy(scores, alpha, beta, xin, yout, S, T)
    if shifted:
        px_grad = _shift(px_grad, s0, t0, -1)
        py_grad = _shift(py_grad, s0, t0, -1)
    return scores, px_grad, py_grad


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
