"""ASTRA alignment-weighted speech/text consistency.

From "ASTRA: Aligning Speech and Text Representations for ASR without Sampling"
(arXiv:2406.06664).

Legend: B batch, T speech frames (the frames of ``speech``, e.g. encoder frames T'),
U tokens (rows of the alignment lattice), D model dim.

The pointwise cost between speech frame t and text frame u is

    c[b, u, t] = mean_d |S[b, t, d] - E[b, u, d]|          (distance="mae", default)
    c[b, u, t] = mean_d (S[b, t, d] - E[b, u, d]) ** 2     (distance="mse")

and the alignment comes from an RNN-T lattice in k2's convention: ``px[b, u, t]`` is the
log-prob of emitting token u+1 at frame t, shape ``[B, U, T+1]`` (regular RNN-T: column T
is the "one past the last frame" pad, -inf) or ``[B, U, T]`` (modified RNN-T); ``py[b, u, t]``
is the log-prob of blank (next frame) in row u, shape ``[B, U+1, T]``.

Two forms:

* ``mode="expected"``: ``L_b = sum_{u, t<T_b} gamma[b, u, t] * c[b, u, t]`` where ``gamma``
  is the emit-arc occupancy (posterior) returned by
  ``mutual_information_recursion(px, py, boundary, return_grad=True)``. Each token row of
  ``gamma`` sums to 1, so ``L_b`` is a sum over the U_b tokens of the expected cost of the
  frame that token is emitted at.
* ``mode="weighted_rnnt"``: ``L_b = -(logZ(px - lam * c, py) - logZ(px, py))``, both
  log-partition functions from the same recursion. By Jensen ``L_b <= lam * E_gamma[c]``,
  and ``dL_b/dlam`` at ``lam = 0`` equals the expected form.

Gradients: both forms treat the lattice (``px``, ``py``) as a constant: they are detached
here, so the consistency trains only the speech and text frames (the RNN-T head is trained
by its own loss; letting the consistency move the alignment would let the head cheat by
putting mass on frames that happen to be close). In the expected form ``gamma`` is a
constant; in the weighted form the gradient reaches ``c`` through the recursion.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astra.lattice.rnnt import check_boundary, mutual_information_recursion, rnnt_boundary
from astra.losses.consistency_choices import CONSISTENCY_DISTANCES, CONSISTENCY_MODES
from astra.losses.reduction import check_reduction, reduce_per_utterance


def pairwise_cost(speech: Tensor, text: Tensor, distance: str = "mae") -> Tensor:
    """Cost ``c[b, u, t]`` between text frame u and speech frame t, averaged over D.

    Args:
      speech: ``[B, T, D]`` speech-side frames.
      text: ``[B, U, D]`` text-side frames.
      distance: ``"mae"`` (mean absolute difference) or ``"mse"`` (mean squared difference).
    Returns:
      ``[B, U, T]`` costs, differentiable in both inputs.
    """
    if distance not in CONSISTENCY_DISTANCES:
        raise ValueError(f"distance must be one of {CONSISTENCY_DISTANCES}, got {distance!r}")
    dim = speech.shape[-1]
    if distance == "mae":
        return torch.cdist(text, speech, p=1.0) / dim
    # |e - s|^2 = |e|^2 + |s|^2 - 2 e.s, without a [B, U, T, D] temporary
    sq = (
        text.pow(2).sum(-1, keepdim=True)
        + speech.pow(2).sum(-1).unsqueeze(1)
        - 2.0 * torch.bmm(text, speech.transpose(1, 2))
    )
    return sq.clamp_min(0.0) / dim


def _alignment_lattice(
    speech: Tensor, speech_lens: Tensor, text: Tensor, text_lens: Tensor, px: Tensor, py: Tensor
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Validate shapes, dtypes and lengths, then return the lattice the loss runs on:
    ``(px, py, boundary [B, 4], regular)`` with px/py detached and, for a regular (T+1
    column) lattice, no emission at frames ``t >= T_b``."""
    for name, x in (("speech", speech), ("text", text), ("px", px), ("py", py)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(f"{name} must have 3 dims, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    for name, x in (("speech_lens", speech_lens), ("text_lens", text_lens)):
        if not isinstance(x, Tensor) or x.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor of lengths")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {x.dtype}")
    B, T, D = speech.shape
    _, U, _ = text.shape
    if text.shape[0] != B or speech_lens.shape[0] != B or text_lens.shape[0] != B:
        raise ValueError(
            "batch sizes differ: speech "
            f"{B}, text {text.shape[0]}, speech_lens {speech_lens.shape[0]}, "
            f"text_lens {text_lens.shape[0]}"
        )
    if text.shape[2] != D:
        raise ValueError(f"speech has D={D} but text has D={text.shape[2]}")
    if px.shape[0] != B or py.shape[0] != B:
        raise ValueError(f"px/py batch sizes {px.shape[0]}/{py.shape[0]} differ from speech's {B}")
    if px.shape[1] != U or px.shape[2] not in (T, T + 1):
        raise ValueError(
            f"px must be [B, U, T+1] (regular) or [B, U, T] (modified) = [{B}, {U}, {T + 1} or {T}], "
            f"got {tuple(px.shape)}"
        )
    if tuple(py.shape) != (B, U + 1, T):
        raise ValueError(f"py must be [B, U+1, T] = [{B}, {U + 1}, {T}], got {tuple(py.shape)}")
    if px.dtype != py.dtype:
        raise ValueError(f"px and py dtypes differ: {px.dtype} vs {py.dtype}")
    if B == 0:
        raise ValueError("empty batch")
    if (speech_lens < 0).any() or (speech_lens > T).any():
        raise ValueError(f"speech_lens must lie in [0, {T}], got {speech_lens.tolist()}")
    if (text_lens < 0).any() or (text_lens > U).any():
        raise ValueError(f"text_lens must lie in [0, {U}], got {text_lens.tolist()}")
    regular = px.shape[2] == T + 1
    boundary = rnnt_boundary(text_lens.to(px.device), speech_lens)
    check_boundary(boundary, B, U, T, "regular" if regular else "modified")
    px, py = px.detach(), py.detach()
    if regular:
        # frames t >= T_b (including the pad column T) cannot emit: no cost is defined there
        frame = torch.arange(T + 1, device=px.device).view(1, 1, -1)
        px = px.masked_fill(frame >= boundary[:, 3].view(-1, 1, 1), float("-inf"))
    return px, py, boundary, regular


def astra_consistency(
    speech: Tensor,
    speech_lens: Tensor,
    text: Tensor,
    text_lens: Tensor,
    px: Tensor,
    py: Tensor,
    mode: str = "expected",
    distance: str = "mae",
    lam: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Alignment-weighted speech/text consistency.

    Args:
      speech: ``[B, T, D]`` speech-side frames (gradient flows into them).
      speech_lens: ``[B]`` int, valid frames per utterance (``<= T``).
      text: ``[B, U, D]`` text-side frames, one per token (gradient flows into them).
      text_lens: ``[B]`` int, valid tokens per utterance (``<= U``).
      px: ``[B, U, T+1]`` (regular) or ``[B, U, T]`` (modified) emit log-probs of the
        alignment lattice; detached here.
      py: ``[B, U+1, T]`` blank log-probs of the alignment lattice; detached here.
      mode: ``"expected"`` or ``"weighted_rnnt"`` (see the module docstring).
      distance: ``"mae"`` or ``"mse"``.
      lam: cost scale of the weighted form (ignored by ``"expected"``), > 0.
      reduction: ``"none"`` -> ``[B]`` per-utterance sums over tokens; ``"sum"`` -> their
        sum; ``"mean"`` -> their sum divided by the total number of tokens (mean per token).
    Returns:
      The loss (scalar, or ``[B]`` for ``reduction="none"``).
    """
    if mode not in CONSISTENCY_MODES:
        raise ValueError(f"mode must be one of {CONSISTENCY_MODES}, got {mode!r}")
    check_reduction("astra_consistency", reduction)
    if distance not in CONSISTENCY_DISTANCES:
        raise ValueError(f"distance must be one of {CONSISTENCY_DISTANCES}, got {distance!r}")
    if mode == "weighted_rnnt" and not lam > 0:
        raise ValueError(f"lam must be > 0 for mode='weighted_rnnt', got {lam}")
    px, py, boundary, regular = _alignment_lattice(speech, speech_lens, text, text_lens, px, py)

    cost = pairwise_cost(speech, text, distance)  # [B, U, T]
    if regular:
        cost = torch.nn.functional.pad(cost, (0, 1))  # [B, U, T+1], pad column never emitted

    if mode == "expected":
        _, (gamma, _) = mutual_information_recursion(px, py, boundary=boundary, return_grad=True)
        gamma = gamma.detach().to(cost.dtype)
        per_utt = (gamma * cost).sum(dim=(1, 2))
    else:
        log_z = mutual_information_recursion(px, py, boundary=boundary)
        log_z_cost = mutual_information_recursion(
            px - lam * cost.to(px.dtype), py, boundary=boundary
        )
        per_utt = (log_z - log_z_cost).to(cost.dtype)
    return reduce_per_utterance(per_utt, reduction, boundary[:, 2].sum())
