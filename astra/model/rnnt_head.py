"""RNN-T alignment head: stateless prediction network + joiner, trained with pruned RNN-T.

Legend: B batch, T' encoder frames, U tokens, D model dim, P prediction width, J joint width,
V vocabulary, R prune range.

The prediction network is "stateless" (icefall/k2 style: embedding of the last ``context``
tokens + grouped Conv1d), which keeps the head light and makes beam search a lookup on the
last ``context`` tokens. The head gives

* ``rnnt_simple``: the k2 "simple" loss with the trivial joiner ``lm + am`` (smoothed), whose
  occupancies give the pruning ranges and whose lattice ``px/py`` (unsmoothed) weights the
  ASTRA consistency;
* ``rnnt``: the pruned RNN-T loss of the full joiner over R symbols per frame, whose
  lattice (``-inf`` outside the pruned ranges) can weight ASTRA instead
  (``model.consistency_alignment="pruned"``).

On unpaired text (:meth:`RnntHead.text_loss`, the ``text_rnnt`` loss) the frames are the
U+1 text-encoder outputs E, where the simple head is never trained: the R symbols kept per
frame are a diagonal band (:func:`diagonal_prune_ranges`) instead of the simple head's
choice, and no simple loss is computed.

All lattice math goes through :mod:`astra.lattice` in float32 (autocast is disabled inside).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

import astra.lattice as lattice
from astra.model.config import ModelConfig

LATTICES = ("simple", "full", "pruned")


@dataclass
class RnntLosses:
    """Summed (not averaged) losses over the batch and the unsmoothed simple lattice (what
    :meth:`RnntHead.loss` was asked for; the rest is ``None``)."""

    simple: Tensor | None  # scalar, sum over utterances (None: not asked for)
    pruned: Tensor | None  # scalar, sum over utterances (None: not asked for)
    px: Tensor | None  # [B, U, T'+1] log-prob of emitting y_{u+1} at frame t (detached; None: not asked for)
    py: Tensor | None  # [B, U+1, T'] log-prob of blank (detached; None: not asked for)
    boundary: Tensor  # [B, 4] int64 (0, 0, U_b, T'_b)
    # the full joiner's lattice on the pruned ranges (-inf outside them; detached), when asked
    px_pruned: Tensor | None = None  # [B, U, T'+1]
    py_pruned: Tensor | None = None  # [B, U+1, T']


def emit_occupancy(px: Tensor, py: Tensor, boundary: Tensor) -> Tensor:
    """Emit-arc occupancy ``gamma [B, U, T']`` of the lattice ``px [B, U, T'+1]``, ``py
    [B, U+1, T']``, ``boundary [B, 4]``: the posterior that token u+1 is emitted at frame t
    (k2's ``px_grad``). Rows ``u < U_b`` sum to 1 over ``t < T'_b``; everything outside that
    region is 0. Float32, no gradient."""
    with torch.no_grad(), torch.autocast(device_type=px.device.type, enabled=False):
        _, (px_grad, _) = lattice.mutual_information_recursion(
            px.detach().float(), py.detach().float(), boundary, return_grad=True
        )
    frames = py.size(2)
    rows = torch.arange(px.size(1), device=px.device).view(1, -1, 1)
    cols = torch.arange(frames, device=px.device).view(1, 1, -1)
    ends = boundary.to(px.device)
    valid = (rows < ends[:, 2].view(-1, 1, 1)) & (cols < ends[:, 3].view(-1, 1, 1))
    return px_grad[:, :, :frames].masked_fill(~valid, 0.0)


def diagonal_prune_ranges(boundary: Tensor, frames: int, s_range: int) -> Tensor:
    """Symbol windows along the lattice diagonal: ``ranges [B, frames, R]`` int64.

    For a text batch (T'_b = U_b + 1 frames, frame t reads token t+1) the natural path emits
    token t+1 at frame t, so it visits rows t and t+1 there. Frame t keeps rows
    ``[s_b(t), s_b(t) + R)`` with ``s_b(t) = clamp(round(t U_b / (T'_b - 1)) - (R - 2) // 2,
    0, U_b + 1 - R)`` (R = ``s_range`` capped at U+1): starts rise by at most one per frame
    when T'_b = U_b + 1, begin at 0 and end on the last row, so the band always holds a
    path. ``boundary [B, 4]`` is ``(0, 0, U_b, T'_b)``; frames past T'_b get the last start.
    """
    num_rows = int(boundary[:, 2].max()) if boundary.numel() else 0
    s_range = max(2, min(s_range, num_rows + 1))
    u_len = boundary[:, 2].view(-1, 1).float()
    t_len = boundary[:, 3].view(-1, 1)
    t = torch.arange(frames, device=boundary.device).view(1, -1)
    centre = torch.round(t.float() * u_len / (t_len - 1).clamp(min=1).float()).long()
    last = (boundary[:, 2].view(-1, 1) - s_range + 1).clamp(min=0)
    start = torch.minimum((centre - (s_range - 2) // 2).clamp(min=0), last)
    start = torch.where(t < t_len - 1, start, last)
    return start.unsqueeze(2) + torch.arange(s_range, device=boundary.device)


class RnntHead(nn.Module):
    """``loss(encoder_out [B, T', D], encoder_lens, tokens [B, U], token_lens) -> RnntLosses``.

    Sizes come from ``cfg`` (``d_model``, ``rnnt_pred_dim`` P, ``rnnt_joint_dim`` J,
    ``rnnt_context``, ``rnnt_prune_range`` R, ``rnnt_lm_only_scale``, ``rnnt_am_only_scale``).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, blank_id: int = 0, sos_id: int = 2) -> None:
        super().__init__()
        self.blank_id = blank_id
        self.sos_id = sos_id
        self.context = cfg.rnnt_context
        self.prune_range = cfg.rnnt_prune_range
        self.lm_only_scale = cfg.rnnt_lm_only_scale
        self.am_only_scale = cfg.rnnt_am_only_scale
        self.vocab_size = vocab_size
        pred_dim, joint_dim = cfg.rnnt_pred_dim, cfg.rnnt_joint_dim
        self.embedding = nn.Embedding(vocab_size, pred_dim)
        groups = pred_dim // 4 if pred_dim % 4 == 0 else 1
        self.context_conv = (
            nn.Conv1d(pred_dim, pred_dim, self.context, groups=groups, bias=False) if self.context > 1 else None
        )
        self.encoder_proj = nn.Linear(cfg.d_model, joint_dim)
        self.pred_proj = nn.Linear(pred_dim, joint_dim)
        self.output = nn.Linear(joint_dim, vocab_size)
        self.simple_am = nn.Linear(cfg.d_model, vocab_size)
        self.simple_lm = nn.Linear(pred_dim, vocab_size)

    # --- networks -------------------------------------------------------------------------
    def predict(self, history: Tensor) -> Tensor:
        """``history [B, L + context - 1]`` token ids -> ``[B, L, P]`` (one output per window)."""
        x = self.embedding(history)
        if self.context_conv is not None:
            x = self.context_conv(x.transpose(1, 2)).transpose(1, 2)
        return F.relu(x)

    def predict_sequence(self, tokens: Tensor) -> Tensor:
        """Outputs for histories ``<sos>, y_1, ..., y_U``: ``tokens [B, U] -> [B, U+1, P]``."""
        start = torch.full((tokens.size(0), self.context), self.sos_id, dtype=torch.long, device=tokens.device)
        return self.predict(torch.cat([start, tokens], dim=1))

    def joint(self, encoder_proj: Tensor, pred_proj: Tensor) -> Tensor:
        """Projected encoder ``[..., J]`` + projected prediction ``[..., J]`` -> logits ``[..., V]``."""
        return self.output(torch.tanh(encoder_proj + pred_proj))

    # --- lattices and losses -----------------------------------------------------------
    def _symbols(self, tokens: Tensor) -> Tensor:
        """Targets for the lattice: padding ids outside the vocabulary become blank."""
        return tokens.masked_fill(tokens >= self.vocab_size, self.blank_id)

    def lattice(
        self, encoder_out: Tensor, encoder_lens: Tensor, tokens: Tensor, token_lens: Tensor, which: str = "simple"
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The head's RNN-T lattice in float32: ``(px [B, U, T'+1], py [B, U+1, T'], boundary
        [B, 4])``. ``which="simple"``: the unsmoothed ``lm + am`` lattice that weights ASTRA;
        ``"full"``: the full joiner's (``[B, T', U+1, V]`` logits: mind the memory);
        ``"pruned"``: the full joiner on the pruned ranges (-inf outside them), as
        ``model.consistency_alignment="pruned"`` uses it."""
        if which not in LATTICES:
            raise ValueError(f"lattice must be one of {LATTICES}, got {which!r}")
        if which == "pruned":
            out = self.loss(encoder_out, encoder_lens, tokens, token_lens, pruned_lattice=True)
            return out.px_pruned, out.py_pruned, out.boundary
        pred = self.predict_sequence(tokens).float()  # [B, U+1, P]
        boundary = lattice.rnnt_boundary(token_lens, encoder_lens)
        symbols = self._symbols(tokens)
        with torch.autocast(device_type=encoder_out.device.type, enabled=False):
            if which == "simple":
                lm, am = self.simple_lm(pred), self.simple_am(encoder_out.float())
                px, py = lattice.get_rnnt_logprobs(lm, am, symbols, self.blank_id, boundary=boundary)
            else:
                logits = self.joint(self.encoder_proj(encoder_out.float())[:, :, None], self.pred_proj(pred)[:, None])
                px, py = lattice.get_rnnt_logprobs_joint(logits, symbols, self.blank_id, boundary=boundary)
        return px, py, boundary

    def loss(
        self, encoder_out: Tensor, encoder_lens: Tensor, tokens: Tensor, token_lens: Tensor, *,
        simple: bool = True, pruned: bool = True, with_lattice: bool = True, pruned_lattice: bool = False,
    ) -> RnntLosses:
        """Simple + pruned RNN-T losses (sums over the batch) and the simple lattice; with
        ``pruned_lattice`` (needs ``pruned``) also the pruned full-joiner lattice (detached,
        from the same logits).

        ``simple`` / ``pruned`` / ``with_lattice`` choose what is computed; what is not asked
        for is ``None`` in the result. The pruned loss needs the simple lattice's occupancies
        for its ranges, so that recursion runs (without gradient) even when only ``pruned``
        is asked for. ``tokens`` padding may hold any id (it is masked by ``boundary``).
        """
        pred = self.predict_sequence(tokens)  # [B, U+1, P]
        boundary = lattice.rnnt_boundary(token_lens, encoder_lens)
        symbols = self._symbols(tokens)
        simple_loss = pruned_loss = px = py = px_pruned = py_pruned = None
        if pruned_lattice and not pruned:
            raise ValueError("pruned_lattice needs pruned=True (it is the pruned loss's lattice)")
        with torch.autocast(device_type=encoder_out.device.type, enabled=False):
            # only the simple loss back-propagates through lm / am
            with torch.set_grad_enabled(torch.is_grad_enabled() and simple):
                lm = self.simple_lm(pred.float())
                am = self.simple_am(encoder_out.float())
                if simple or pruned:
                    with record_function("astra:rnnt_simple"):
                        simple_loss, (px_grad, py_grad) = lattice.rnnt_loss_simple(
                            lm, am, symbols, self.blank_id, boundary=boundary, reduction="sum",
                            return_grad=True, lm_only_scale=self.lm_only_scale,
                            am_only_scale=self.am_only_scale,
                        )
            if with_lattice:
                with record_function("astra:rnnt_lattice"), torch.no_grad():
                    px, py = lattice.get_rnnt_logprobs(lm, am, symbols, self.blank_id, boundary=boundary)
            if pruned:
                with record_function("astra:rnnt_pruned"):
                    ranges = lattice.get_rnnt_prune_ranges(px_grad, py_grad, boundary, self.prune_range)
                    am_pruned, lm_pruned = lattice.do_rnnt_pruning(
                        self.encoder_proj(encoder_out.float()), self.pred_proj(pred.float()), ranges
                    )
                    logits = self.joint(am_pruned, lm_pruned)  # [B, T', R, V]
                    pruned_loss = lattice.rnnt_loss_pruned(
                        logits, symbols, ranges, self.blank_id, boundary=boundary, reduction="sum"
                    )
                    if pruned_lattice:
                        with torch.no_grad():
                            px_pruned, py_pruned = lattice.get_rnnt_logprobs_pruned(
                                logits.detach(), symbols, ranges, self.blank_id, boundary=boundary
                            )
        if not simple:
            simple_loss = None  # computed for the pruning ranges only
        return RnntLosses(simple=simple_loss, pruned=pruned_loss, px=px, py=py, boundary=boundary,
                          px_pruned=px_pruned, py_pruned=py_pruned)

    def text_loss(self, encoder_out: Tensor, encoder_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> Tensor:
        """Pruned RNN-T loss (sum over the batch) on text frames ``encoder_out [B, U+1, D]``
        (``encoder_lens`` = ``token_lens + 1``) with the diagonal windows of
        :func:`diagonal_prune_ranges`: the simple head, trained on speech frames only, does
        not choose them."""
        pred = self.predict_sequence(tokens)  # [B, U+1, P]
        boundary = lattice.rnnt_boundary(token_lens, encoder_lens)
        symbols = self._symbols(tokens)
        ranges = diagonal_prune_ranges(boundary, encoder_out.size(1), self.prune_range)
        with torch.autocast(device_type=encoder_out.device.type, enabled=False), \
                record_function("astra:rnnt_pruned"):
            am_pruned, lm_pruned = lattice.do_rnnt_pruning(
                self.encoder_proj(encoder_out.float()), self.pred_proj(pred.float()), ranges
            )
            logits = self.joint(am_pruned, lm_pruned)  # [B, T', R, V]
            return lattice.rnnt_loss_pruned(logits, symbols, ranges, self.blank_id, boundary=boundary, reduction="sum")
