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
  (``model.astra_alignment="pruned"``).

All lattice math goes through :mod:`astra.lattice` in float32 (autocast is disabled inside).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import astra.lattice as lattice
from astra.model.config import ModelConfig

LATTICES = ("simple", "full", "pruned")


@dataclass
class RnntLosses:
    """Summed (not averaged) losses over the batch and the unsmoothed simple lattice."""

    simple: Tensor  # scalar, sum over utterances
    pruned: Tensor  # scalar, sum over utterances
    px: Tensor  # [B, U, T'+1] log-prob of emitting y_{u+1} at frame t (detached)
    py: Tensor  # [B, U+1, T'] log-prob of blank (detached)
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
        ``model.astra_alignment="pruned"`` uses it."""
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
        self, encoder_out: Tensor, encoder_lens: Tensor, tokens: Tensor, token_lens: Tensor,
        pruned_lattice: bool = False,
    ) -> RnntLosses:
        """Simple + pruned RNN-T losses (sums over the batch) and the simple lattice; with
        ``pruned_lattice`` also the pruned full-joiner lattice (detached, from the same logits).

        ``tokens`` padding may hold any id (it is masked by ``boundary``).
        """
        pred = self.predict_sequence(tokens)  # [B, U+1, P]
        boundary = lattice.rnnt_boundary(token_lens, encoder_lens)
        symbols = self._symbols(tokens)
        with torch.autocast(device_type=encoder_out.device.type, enabled=False):
            lm = self.simple_lm(pred.float())
            am = self.simple_am(encoder_out.float())
            simple, (px_grad, py_grad) = lattice.rnnt_loss_simple(
                lm, am, symbols, self.blank_id, boundary=boundary, reduction="sum", return_grad=True,
                lm_only_scale=self.lm_only_scale, am_only_scale=self.am_only_scale,
            )
            px, py = lattice.get_rnnt_logprobs(lm.detach(), am.detach(), symbols, self.blank_id, boundary=boundary)
            ranges = lattice.get_rnnt_prune_ranges(px_grad, py_grad, boundary, self.prune_range)
            am_pruned, lm_pruned = lattice.do_rnnt_pruning(
                self.encoder_proj(encoder_out.float()), self.pred_proj(pred.float()), ranges
            )
            logits = self.joint(am_pruned, lm_pruned)  # [B, T', R, V]
            pruned = lattice.rnnt_loss_pruned(logits, symbols, ranges, self.blank_id, boundary=boundary, reduction="sum")
            px_pruned = py_pruned = None
            if pruned_lattice:
                with torch.no_grad():
                    px_pruned, py_pruned = lattice.get_rnnt_logprobs_pruned(
                        logits.detach(), symbols, ranges, self.blank_id, boundary=boundary
                    )
        return RnntLosses(simple=simple, pruned=pruned, px=px, py=py, boundary=boundary,
                          px_pruned=px_pruned, py_pruned=py_pruned)
