"""RNN-T losses on k2's lattice conventions, written once on top of the active backend's
``mutual_information_recursion`` (``astra.lattice.backends``).

Legend: B batch, T frames, S symbols (= U tokens), C vocabulary size (= V, blank included),
R pruning range (``s_range``).

Lattice (k2 "regular" RNN-T): ``px[b, s, t]`` is the log-prob of emitting ``symbols[b, s]``
from node (s, t) (shape ``[B, S, T+1]``; column T and columns ``t >= t_end`` are -inf: no
emission after the last frame); ``py[b, s, t]`` is the log-prob of the termination/blank
symbol from node (s, t) (shape ``[B, S+1, T]``). ``rnnt_type="modified"`` makes an emission
also consume a frame (px is ``[B, S, T]``); ``"constrained"`` is modified with the blank of
the next context added to each emission. ``boundary`` is ``[B, 4]`` int64
``(s_begin, t_begin, s_end, t_end)``, default ``(0, 0, S, T)``. ``reduction="mean"`` is the
mean over the batch (k2's convention).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import Tensor

from astra.lattice.backends import get_recursion

log = logging.getLogger(__name__)

RNNT_TYPES = ("regular", "modified", "constrained")
REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------- checks


def _check_float(name: str, x: Tensor, ndim: int) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_symbols(symbols: Tensor, B: int, S: int, C: int, termination_symbol: int) -> None:
    if not isinstance(symbols, Tensor) or symbols.dtype != torch.int64:
        got = symbols.dtype if isinstance(symbols, Tensor) else type(symbols).__name__
        raise ValueError(f"symbols must be an int64 tensor, got {got}")
    if tuple(symbols.shape) != (B, S):
        raise ValueError(f"symbols must be [B, S] = [{B}, {S}], got {tuple(symbols.shape)}")
    if symbols.numel() and (symbols.min() < 0 or symbols.max() >= C):
        raise ValueError(f"symbols must lie in [0, {C}) (C = vocabulary size)")
    if not 0 <= termination_symbol < C:
        raise ValueError(f"termination_symbol {termination_symbol} is outside [0, {C})")


def check_boundary(boundary: Optional[Tensor], B: int, S: int, T: int, rnnt_type: str) -> None:
    """Raise ``ValueError`` unless ``boundary`` is a valid ``[B, 4]`` int64 box for an
    RNN-T lattice with S symbols and T frames (every utterance needs a path: ``T_b >= 1``
    for regular unless ``S_b = 0``, ``T_b >= S_b`` for modified/constrained)."""
    if rnnt_type not in RNNT_TYPES:
        raise ValueError(f"rnnt_type must be one of {RNNT_TYPES}, got {rnnt_type!r}")
    if boundary is None:
        s_len = torch.tensor([S])
        t_len = torch.tensor([T])
    else:
        check_recursion_boundary(boundary, B, S, T)
        s_len = boundary[:, 2] - boundary[:, 0]
        t_len = boundary[:, 3] - boundary[:, 1]
    if rnnt_type == "regular":
        bad = (t_len < 1) & (s_len > 0)
        need = "at least 1 frame (T >= 1) to emit U > 0 symbols"
    else:
        bad = t_len < s_len
        need = f"T >= U ({rnnt_type} RNN-T emits at most one symbol per frame)"
    if bad.any():
        idx = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"utterances {idx} have no alignment path: each needs {need}; got "
            f"T={t_len[idx].tolist()}, U={s_len[idx].tolist()}"
        )


def check_recursion_boundary(boundary: Tensor, B: int, S: int, T: int) -> None:
    """Raise ``ValueError`` unless ``boundary`` is a ``[B, 4]`` int64 box inside an S x T
    lattice (``0 <= s_begin <= s_end <= S``, ``0 <= t_begin <= t_end <= T``)."""
    if not isinstance(boundary, Tensor) or boundary.dtype != torch.int64:
        got = boundary.dtype if isinstance(boundary, Tensor) else type(boundary).__name__
        raise ValueError(f"boundary must be an int64 tensor, got {got}")
    if tuple(boundary.shape) != (B, 4):
        raise ValueError(f"boundary must be [B, 4] = [{B}, 4], got {tuple(boundary.shape)}")
    s0, t0, s1, t1 = boundary.cpu().unbind(1)
    if (s0 < 0).any() or (s0 > s1).any() or (s1 > S).any():
        raise ValueError(f"boundary needs 0 <= s_begin <= s_end <= S={S}, got {boundary.tolist()}")
    if (t0 < 0).any() or (t0 > t1).any() or (t1 > T).any():
        raise ValueError(f"boundary needs 0 <= t_begin <= t_end <= T={T}, got {boundary.tolist()}")


def _check_lattice(px: Tensor, py: Tensor, names: tuple[str, str] = ("px", "py")):
    """Validate a lattice (or its occupancies) ``px [B, S, T+1]`` or ``[B, S, T]``, ``py
    [B, S+1, T]`` of one float dtype; return ``(B, S, T, regular)``."""
    x_name, y_name = names
    _check_float(x_name, px, 3)
    _check_float(y_name, py, 3)
    B, S, T1 = px.shape
    T = py.shape[2]
    if T1 not in (T, T + 1) or tuple(py.shape) != (B, S + 1, T):
        raise ValueError(
            f"{x_name} must be [B, S, T+1] or [B, S, T] and {y_name} [B, S+1, T]; got "
            f"{x_name} {tuple(px.shape)}, {y_name} {tuple(py.shape)}"
        )
    if px.dtype != py.dtype:
        raise ValueError(f"{x_name} and {y_name} dtypes differ: {px.dtype} vs {py.dtype}")
    return B, S, T, T1 == T + 1


def _check_reduction(reduction: Optional[str]) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


# ------------------------------------------------------------------ the recursion itself


def mutual_information_recursion(
    px: Tensor, py: Tensor, boundary: Optional[Tensor] = None, return_grad: bool = False
):
    """Log-partition function of the lattice ``(px, py)`` on the active backend.

    ``p[b, 0, 0] = 0``; regular (``px [B, S, T+1]``):
    ``p[s, t] = logaddexp(p[s-1, t] + px[s-1, t], p[s, t-1] + py[s, t-1])``; modified
    (``px [B, S, T]``): ``p[s, t] = logaddexp(p[s-1, t-1] + px[s-1, t-1], p[s, t-1] + py[s, t-1])``.

    Args:
      px: ``[B, S, T+1]`` or ``[B, S, T]``; py: ``[B, S+1, T]``, same float dtype.
      boundary: optional ``[B, 4]`` int64 ``(s_begin, t_begin, s_end, t_end)``.
      return_grad: also return the arc occupancies ``(px_grad, py_grad)``, shaped like
        ``px``/``py`` (the gradient of ``scores.sum()``; no autograd graph needed).
    Returns:
      ``scores [B]`` = ``p[b, s_end, t_end]``, or ``(scores, (px_grad, py_grad))``.
    """
    B, S, T, _ = _check_lattice(px, py)
    if boundary is not None:
        check_recursion_boundary(boundary, B, S, T)
        boundary = boundary.to(px.device)
    return get_recursion()(
        px.contiguous(), py.contiguous(), boundary=boundary, return_grad=return_grad
    )


# --------------------------------------------------------------------------- lattices


def rnnt_boundary(symbol_lens: Tensor, frame_lens: Tensor) -> Tensor:
    """``boundary [B, 4]`` int64 ``(0, 0, S_b, T_b)`` from ``symbol_lens [B]`` and
    ``frame_lens [B]`` (on ``symbol_lens``' device)."""
    if symbol_lens.dim() != 1 or tuple(frame_lens.shape) != tuple(symbol_lens.shape):
        raise ValueError(
            f"symbol_lens and frame_lens must both be [B], got {tuple(symbol_lens.shape)} and "
            f"{tuple(frame_lens.shape)}"
        )
    zeros = torch.zeros_like(symbol_lens, dtype=torch.int64)
    ends = (symbol_lens.to(torch.int64), frame_lens.to(zeros.device, torch.int64))
    return torch.stack([zeros, zeros, *ends], dim=1)


def _finish_lattice(px: Tensor, py: Tensor, rnnt_type: str, boundary: Optional[Tensor]):
    """``px [B, S, T]`` -> the ``rnnt_type`` lattice: regular gets a -inf pad column (``[B, S,
    T+1]``) and no emission at or after each utterance's last frame ``t_end``; constrained
    adds the blank of the next context to each emission."""
    if rnnt_type == "regular":
        px = torch.nn.functional.pad(px, (0, 1), value=float("-inf"))
        if boundary is not None:
            B, S, T1 = px.shape
            cols = torch.arange(T1, device=px.device).view(1, 1, T1)
            after_end = cols >= boundary[:, 3].view(B, 1, 1).to(px.device)
            px = px.masked_fill(after_end, float("-inf"))
    elif rnnt_type == "constrained":
        px = px + py[:, 1:, :]
    return px, py


def _check_simple_inputs(
    lm: Tensor, am: Tensor, symbols: Tensor, termination_symbol: int, boundary, rnnt_type: str
) -> None:
    _check_float("lm", lm, 3)
    _check_float("am", am, 3)
    B, T, C = am.shape
    S = lm.shape[1] - 1
    if lm.shape[0] != B or lm.shape[2] != C:
        raise ValueError(f"lm must be [B, S+1, C] with B={B}, C={C}; got {tuple(lm.shape)}")
    if lm.dtype != am.dtype:
        raise ValueError(f"lm and am dtypes differ: {lm.dtype} vs {am.dtype}")
    _check_symbols(symbols, B, S, C, termination_symbol)
    check_boundary(boundary, B, S, T, rnnt_type)


def _additive_lattice(
    lm: Tensor, am: Tensor, symbols: Tensor, blank: int, normalizers: Tensor
) -> tuple[Tensor, Tensor]:
    """Unpadded lattice of logits ``lm[b, s] + am[b, t]`` (``lm [B, S+1, C]``, ``am [B, T,
    C]``, either may be an expanded view) with log-normalizers broadcastable to ``[B, S+1,
    T]``: ``px [B, S, T]``, ``py [B, S+1, T]``."""
    B, T, _ = am.shape
    S = symbols.shape[1]
    px_am = torch.gather(am.transpose(1, 2), 1, symbols.unsqueeze(2).expand(B, S, T))
    px_lm = torch.gather(lm[:, :S], 2, symbols.unsqueeze(2))  # [B, S, 1]
    px = px_am + px_lm - normalizers[:, :S]
    py = am[:, :, blank].unsqueeze(1) + lm[:, :, blank].unsqueeze(2) - normalizers
    return px, py


def _exp_below_max(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(exp(x - max), max)`` over the last dim of ``x [B, N, C]`` (max is ``[B, N, 1]``)."""
    x_max = x.amax(dim=2, keepdim=True)
    return (x - x_max).exp(), x_max


def get_rnnt_logprobs(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Lattice ``(px, py)`` of the "simple" joiner ``log_softmax(lm[b, s] + am[b, t])``.

    Args:
      lm: ``[B, S+1, C]`` prediction-network part of the logits (row s: after s symbols).
      am: ``[B, T, C]`` encoder part of the logits.
      symbols: ``[B, S]`` int64 targets; termination_symbol: the blank id.
    Returns:
      ``px [B, S, T+1]`` (``[B, S, T]`` unless regular), ``py [B, S+1, T]``.
    """
    _check_simple_inputs(lm, am, symbols, termination_symbol, boundary, rnnt_type)
    px, py = _simple_lattice(lm, am, symbols, termination_symbol)
    return _finish_lattice(px, py, rnnt_type, boundary)


def _simple_lattice(lm: Tensor, am: Tensor, symbols: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    """Unpadded lattice of ``log_softmax(lm[b, s] + am[b, t])``: ``px [B, S, T]``, ``py
    [B, S+1, T]``."""
    am_probs, am_max = _exp_below_max(am)  # [B, T, C], [B, T, 1]
    lm_probs, lm_max = _exp_below_max(lm)  # [B, S+1, C], [B, S+1, 1]
    # log sum_c exp(lm[b, s, c] + am[b, t, c]) as [B, S+1, T] via one matmul
    probs = torch.matmul(lm_probs, am_probs.transpose(1, 2))
    normalizers = (probs + torch.finfo(am.dtype).tiny).log() + lm_max + am_max.transpose(1, 2)
    return _additive_lattice(lm, am, symbols, blank, normalizers)


def get_rnnt_logprobs_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Simple-joiner lattice interpolated in the log domain with an LM-only lattice
    (``log_softmax(lm)``) and an AM-only lattice (``am`` with a unigram LM averaged over
    the batch): ``(1 - a - l) * combined + l * lm_only + a * am_only``. Shapes as
    :func:`get_rnnt_logprobs`."""
    if not (0.0 <= lm_only_scale and 0.0 <= am_only_scale and lm_only_scale + am_only_scale < 1.0):
        raise ValueError(
            f"need lm_only_scale, am_only_scale >= 0 with sum < 1, got {lm_only_scale}, {am_only_scale}"
        )
    _check_simple_inputs(lm, am, symbols, termination_symbol, boundary, rnnt_type)
    px, py = _simple_lattice(lm, am, symbols, termination_symbol)
    B, T, C = am.shape
    am_probs, am_max = _exp_below_max(am)
    lm_probs, lm_max = _exp_below_max(lm)
    lm_sums = lm_probs.sum(dim=2, keepdim=True)  # [B, S+1, 1]
    unigram = (lm_probs / lm_sums).mean(dim=(0, 1)) + torch.finfo(lm_probs.dtype).tiny  # [C]
    am_only_norm = (torch.matmul(am_probs, unigram).log() + am_max.squeeze(2)).unsqueeze(1)
    log_unigram = unigram.log().view(1, 1, C).expand(B, lm.shape[1], C)
    px_amonly, py_amonly = _additive_lattice(
        log_unigram, am, symbols, termination_symbol, am_only_norm  # [B, 1, T]
    )
    no_am = am.new_zeros(()).expand(B, T, C)
    px_lmonly, py_lmonly = _additive_lattice(
        lm, no_am, symbols, termination_symbol, lm_sums.log() + lm_max  # [B, S+1, 1]
    )
    combined = 1.0 - lm_only_scale - am_only_scale
    # exact zeros would turn -inf * 0 into nan
    lm_only_scale = lm_only_scale or 1.0e-20
    am_only_scale = am_only_scale or 1.0e-20
    px = px * combined + px_lmonly * lm_only_scale + px_amonly * am_only_scale
    py = py * combined + py_lmonly * lm_only_scale + py_amonly * am_only_scale
    return _finish_lattice(px, py, rnnt_type, boundary)


def get_rnnt_logprobs_joint(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Lattice of a full joiner output ``logits [B, T, S+1, C]``: px ``[B, S, T+1]``, py ``[B, S+1, T]``."""
    _check_float("logits", logits, 4)
    B, T, S1, C = logits.shape
    S = S1 - 1
    _check_symbols(symbols, B, S, C, termination_symbol)
    check_boundary(boundary, B, S, T, rnnt_type)
    index = symbols.view(B, 1, S).expand(B, T, S)
    px, py = _JoinerLogprobs.apply(logits, index, termination_symbol)  # [B, T, S], [B, T, S+1]
    return _finish_lattice(px.transpose(1, 2), py.transpose(1, 2), rnnt_type, boundary)


class _JoinerLogprobs(torch.autograd.Function):
    """``log_softmax(logits)`` read at a few symbols, without a full-size log-softmax.

    ``logits [B, T, R, C]``, ``index [B, T, R']`` (``R' <= R``: the symbol of slot r) ->
    ``(sym [B, T, R'], blank [B, T, R])`` log-probs. The backward pass builds the logits'
    gradient in one full-size tensor: ``-softmax * (sum of the slot's output grads)`` plus
    the output grads scattered at the read symbols — autograd through logsumexp/gather/
    select would allocate three.
    """

    @staticmethod
    def forward(ctx, logits, index, blank):
        normalizers = torch.logsumexp(logits, dim=3)  # [B, T, R]
        R1 = index.shape[2]
        sym = (
            torch.gather(logits[:, :, :R1], 3, index.unsqueeze(3)).squeeze(3)
            - normalizers[:, :, :R1]
        )
        blank_lp = logits[..., blank] - normalizers
        ctx.save_for_backward(logits, normalizers, index)
        ctx.blank = blank
        return sym, blank_lp

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_sym, g_blank):
        logits, normalizers, index = ctx.saved_tensors
        R1 = index.shape[2]
        if g_sym is None:
            g_sym = torch.zeros_like(index, dtype=logits.dtype)
        if g_blank is None:
            g_blank = torch.zeros_like(normalizers)
        slot_total = g_blank.clone()
        slot_total[:, :, :R1] += g_sym
        grad = torch.sub(logits, normalizers.unsqueeze(3)).exp_()
        grad.mul_(slot_total.neg_().unsqueeze(3))
        grad[..., ctx.blank] += g_blank
        grad[:, :, :R1].scatter_add_(3, index.unsqueeze(3), g_sym.unsqueeze(3))
        return grad, None, None


# ------------------------------------------------------------------------------ losses


def _delay_penalty(
    px: Tensor, boundary: Optional[Tensor], rnnt_type: str, penalty: float
) -> Tensor:
    """Add ``penalty * ((T_b - 1) / 2 - t)`` to emissions at frame t (k2's delay penalty)."""
    if penalty <= 0.0:
        return px
    B, S, T1 = px.shape
    T = T1 - 1 if rnnt_type == "regular" else T1
    if boundary is None:
        offset = torch.full((B,), (T - 1) / 2, dtype=px.dtype, device=px.device)
    else:
        offset = (boundary[:, 3].to(px.device, px.dtype) - 1) / 2
    frames = torch.arange(T1, device=px.device, dtype=px.dtype).view(1, 1, T1)
    return px + penalty * (offset.view(B, 1, 1) - frames)


def _loss_from_lattice(
    px: Tensor,
    py: Tensor,
    boundary: Optional[Tensor],
    rnnt_type: str,
    delay_penalty: float,
    reduction: Optional[str],
    return_grad: bool,
):
    px = _delay_penalty(px, boundary, rnnt_type, delay_penalty)
    out = mutual_information_recursion(px, py, boundary=boundary, return_grad=return_grad)
    scores = out[0] if return_grad else out
    if reduction == "none":
        loss = -scores
    elif reduction == "sum":
        loss = -scores.sum()
    else:
        loss = -scores.mean()
    return (loss, out[1]) if return_grad else loss


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
):
    """Full RNN-T loss from joiner logits ``[B, T, S+1, C]`` (``-log p(symbols | x)``).

    Returns the loss (``[B]`` for ``reduction="none"``, else a scalar: mean over the batch
    or sum), plus ``(px_grad, py_grad)`` occupancies if ``return_grad``.
    """
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs_joint(logits, symbols, termination_symbol, boundary, rnnt_type)
    return _loss_from_lattice(px, py, boundary, rnnt_type, delay_penalty, reduction, return_grad)


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
    lm_only_scale: float = 0.0,
    am_only_scale: float = 0.0,
):
    """RNN-T loss of the "simple" additive joiner: ``lm [B, S+1, C]`` + ``am [B, T, C]``.

    With ``lm_only_scale``/``am_only_scale`` > 0 the lattice is the smoothed one of
    :func:`get_rnnt_logprobs_smoothed` (k2's ``rnnt_loss_smoothed``). ``return_grad=True``
    also returns the occupancies ``(px_grad, py_grad)`` that :func:`get_rnnt_prune_ranges`
    needs.
    """
    _check_reduction(reduction)
    if lm_only_scale or am_only_scale:
        px, py = get_rnnt_logprobs_smoothed(
            lm, am, symbols, termination_symbol, lm_only_scale, am_only_scale, boundary, rnnt_type
        )
    else:
        px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, boundary, rnnt_type)
    return _loss_from_lattice(px, py, boundary, rnnt_type, delay_penalty, reduction, return_grad)


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
):
    """k2's ``rnnt_loss_smoothed``: :func:`rnnt_loss_simple` with smoothing scales."""
    return rnnt_loss_simple(
        lm, am, symbols, termination_symbol, boundary, rnnt_type, delay_penalty, reduction,
        return_grad, lm_only_scale=lm_only_scale, am_only_scale=am_only_scale,
    )


# ----------------------------------------------------------------------------- pruning


def _monotonic_lower_bound(x: Tensor) -> Tensor:
    """Largest non-decreasing sequence that is ``<= x`` elementwise (suffix minimum)."""
    return torch.flip(torch.cummin(torch.flip(x, dims=(-1,)), dim=-1).values, dims=(-1,))


def _adjust_pruning_lower_bound(s_begin: Tensor, s_range: int) -> Tensor:
    """Make ``s_begin [B, T]`` non-decreasing, start at >= 0 and grow by < ``s_range`` per frame.

    ``s_begin[t+1] - s_begin[t] <= s_range - 1`` is the same as ``(s_range - 1) * t - s_begin[t]``
    being non-decreasing, so both constraints become monotonic lower bounds.
    """
    T = s_begin.shape[1]
    slope = (s_range - 1) * torch.arange(T, device=s_begin.device)
    s_begin = _monotonic_lower_bound(s_begin)
    s_begin = _monotonic_lower_bound(slope - s_begin).clamp(min=0)
    return slope - s_begin


def get_rnnt_prune_ranges(
    px_grad: Tensor, py_grad: Tensor, boundary: Tensor, s_range: int
) -> Tensor:
    """Symbol windows to keep per frame, from the occupancies of a (simple) RNN-T lattice.

    For each frame t the window ``[s, s + s_range)`` with the largest blank occupancy
    (minus the emission entering its first row) is chosen, then the window starts are
    made monotone and gap-free (consecutive starts differ by less than ``s_range``).

    Args:
      px_grad: ``[B, S, T+1]`` (or ``[B, S, T]``) emit occupancies; py_grad: ``[B, S+1, T]``.
      boundary: ``[B, 4]`` int64 ``(0, 0, S_b, T_b)``; ``None`` means ``(0, 0, S, T)``.
      s_range: symbols per frame to keep (raised to the minimum that keeps a path, and
        capped at S+1).
    Returns:
      ``ranges [B, T, s_range]`` int64 symbol positions, ``ranges[b, t] = s_b(t) + arange``.
    """
    B, S, T, regular = _check_lattice(px_grad, py_grad, names=("px_grad", "py_grad"))
    check_boundary(boundary, B, S, T, "regular" if regular else "modified")
    if boundary is None:
        full = torch.tensor([0, 0, S, T], device=px_grad.device)
        boundary = full.expand(B, 4)
    boundary = boundary.to(px_grad.device)
    if regular:
        s_len, t_len = boundary[:, 2], boundary[:, 3]
        needed = int(((s_len - 1).div(t_len.clamp(min=1), rounding_mode="trunc") + 2).max())
        if s_range < needed:
            log.warning("s_range=%d is too small for U/T of this batch; using %d", s_range, needed)
            s_range = needed
    s_range = min(s_range, S + 1)
    if s_range < (2 if regular else 1):
        raise ValueError(
            f"s_range must be >= {2 if regular else 1} for this lattice, got {s_range}"
        )

    num_starts = S + 2 - s_range  # window starts 0..S+1-s_range
    csum = torch.nn.functional.pad(py_grad.cumsum(dim=1), (0, 0, 1, 0))  # [B, S+2, T]
    window = csum[:, s_range : s_range + num_starts] - csum[:, :num_starts]  # [B, num_starts, T]
    entering = torch.nn.functional.pad(px_grad[:, :, :T], (0, 0, 1, 0))[:, :num_starts]
    s_begin = torch.argmax(window - entering, dim=1)  # [B, T]

    frames = torch.arange(T, device=px_grad.device).view(1, T)
    last = (boundary[:, 2] - s_range + 1).clamp(min=0).view(B, 1)
    s_begin = torch.where(frames < boundary[:, 3].view(B, 1) - 1, s_begin, last)
    s_begin = _adjust_pruning_lower_bound(s_begin, s_range if regular else 2)
    return s_begin.unsqueeze(2) + torch.arange(s_range, device=px_grad.device)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> tuple[Tensor, Tensor]:
    """Gather the kept symbol positions: ``am [B, T, C]``, ``lm [B, S+1, C]``,
    ``ranges [B, T, R]`` -> ``(am_pruned, lm_pruned)``, both ``[B, T, R, C]`` (am expanded)."""
    _check_float("am", am, 3)
    _check_float("lm", lm, 3)
    if not isinstance(ranges, Tensor) or ranges.dim() != 3 or ranges.dtype != torch.int64:
        raise ValueError("ranges must be an int64 tensor [B, T, R]")
    B, T, R = ranges.shape
    C = am.shape[2]
    if am.shape[0] != B or lm.shape[0] != B or am.shape[1] != T or lm.shape[2] != C:
        raise ValueError(
            f"shapes disagree: am {tuple(am.shape)}, lm {tuple(lm.shape)}, ranges {tuple(ranges.shape)}"
        )
    if ranges.numel() and (ranges.min() < 0 or ranges.max() >= lm.shape[1]):
        raise ValueError(f"ranges must lie in [0, S+1={lm.shape[1]})")
    am_pruned = am.unsqueeze(2).expand(B, T, R, C)
    index = ranges.reshape(B, T * R, 1).expand(B, T * R, C)
    lm_pruned = torch.gather(lm, 1, index).reshape(B, T, R, C)
    return am_pruned, lm_pruned


def get_rnnt_logprobs_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Lattice of a pruned joiner output ``logits [B, T, R, C]`` whose slot r at frame t is
    symbol position ``ranges[b, t, r]``; positions outside the window get -inf. Returns
    ``px [B, S, T+1]`` (``[B, S, T]`` unless regular), ``py [B, S+1, T]``."""
    _check_float("logits", logits, 4)
    B, T, R, C = logits.shape
    if (
        not isinstance(ranges, Tensor)
        or ranges.dtype != torch.int64
        or tuple(ranges.shape) != (B, T, R)
    ):
        raise ValueError(f"ranges must be an int64 tensor [B, T, R] = [{B}, {T}, {R}]")
    if not isinstance(symbols, Tensor) or symbols.dim() != 2:
        raise ValueError("symbols must be an int64 tensor [B, S]")
    S = symbols.shape[1]
    _check_symbols(symbols, B, S, C, termination_symbol)
    check_boundary(boundary, B, S, T, rnnt_type)
    if ranges.numel() and (ranges.min() < 0 or ranges.max() > S):
        raise ValueError(f"ranges must lie in [0, S={S}]")
    with_end = torch.cat([symbols, symbols.new_full((B, 1), termination_symbol)], dim=1)  # [B, S+1]
    pruned_symbols = torch.gather(with_end.unsqueeze(1).expand(B, T, S + 1), 2, ranges)  # [B, T, R]
    px_win, py_win = _JoinerLogprobs.apply(logits, pruned_symbols, termination_symbol)  # [B, T, R]
    full = logits.new_full((B, T, S + 1), float("-inf"))
    px = full.scatter(2, ranges, px_win)[:, :, :S].transpose(1, 2)  # [B, S, T]
    py = full.scatter(2, ranges, py_win).transpose(1, 2)  # [B, S+1, T]
    return _finish_lattice(px, py, rnnt_type, boundary)


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
):
    """RNN-T loss of a pruned joiner output ``logits [B, T, R, C]`` on ``ranges [B, T, R]``
    (from :func:`get_rnnt_prune_ranges`; joiner inputs from :func:`do_rnnt_pruning`)."""
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs_pruned(
        logits, symbols, ranges, termination_symbol, boundary, rnnt_type
    )
    return _loss_from_lattice(px, py, boundary, rnnt_type, delay_penalty, reduction, return_grad)
