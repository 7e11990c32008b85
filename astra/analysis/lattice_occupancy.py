"""Emit-arc occupancy of an RNN-T lattice (which frames carry token u), and of the model's head.

With k2's conventions ``px [B, U, T'+1]`` (log-prob of emitting y_{u+1} at frame t) and
``py [B, U+1, T']`` (blank), the occupancy ``gamma[b, u, t]`` is the posterior probability
that the lattice emits token u+1 at frame t: the gradient of log Z with respect to px
(``mutual_information_recursion(..., return_grad=True)``). Every row u sums to 1.
"""

from __future__ import annotations

import torch

import astra.lattice as lattice

LATTICES = ("simple", "full")


def lattice_occupancy(px: torch.Tensor, py: torch.Tensor, boundary: torch.Tensor | None = None):
    """``gamma [B, U, T']`` from ``px [B, U, T'+1]``, ``py [B, U+1, T']`` (float32)."""
    if px.dim() != 3 or py.dim() != 3 or px.size(1) + 1 != py.size(1) or px.size(2) != py.size(2) + 1:
        raise ValueError(
            f"expected px [B, U, T'+1] and py [B, U+1, T'], got {tuple(px.shape)} and {tuple(py.shape)}"
        )
    with torch.enable_grad():
        _, (px_grad, _) = lattice.mutual_information_recursion(
            px.detach().float().contiguous(), py.detach().float().contiguous(), boundary, return_grad=True
        )
    return px_grad[:, :, : py.size(2)].detach()


def _full_joiner_logprobs(head, encoder_out: torch.Tensor, pred: torch.Tensor, tokens: torch.Tensor):
    """px/py of the head's full joiner: ``[1, U, T'+1]``, ``[1, U+1, T']``."""
    logits = head.joint(head.encoder_proj(encoder_out)[:, :, None], head.pred_proj(pred)[:, None])
    logp = logits.float().log_softmax(dim=-1)  # [1, T', U+1, V]
    u = tokens.size(1)
    index = tokens[:, None, :, None].expand(1, logp.size(1), u, 1)
    emit = logp[:, :, :u].gather(-1, index)[..., 0].transpose(1, 2)  # [1, U, T']
    px = torch.cat([emit, torch.full_like(emit[:, :, :1], float("-inf"))], dim=2)
    py = logp[..., head.blank_id].transpose(1, 2)  # [1, U+1, T']
    return px, py


@torch.no_grad()
def model_lattice_occupancy(model, features: torch.Tensor, tokens: list[int], which: str = "simple"):
    """Occupancy ``[U, T']`` of ``model``'s RNN-T alignment head for one utterance.

    Args:
        model: an ``AstraModel`` with ``rnnt_head`` enabled (in eval mode).
        features: ``[T, F]`` raw fbank features.
        tokens: the transcript's ids y_1..y_U (no ``<sos>``/``<eos>``).
        which: ``"simple"`` (the lm+am lattice whose occupancy weights ASTRA) or
            ``"full"`` (the head's full joiner).
    Raises:
        ValueError: the model has no RNN-T head, ``which`` is unknown or ``tokens`` is empty.
    """
    if getattr(model, "rnnt", None) is None:
        raise ValueError("the checkpoint has no RNN-T alignment head (model.rnnt_head=false)")
    if which not in LATTICES:
        raise ValueError(f"lattice must be one of {LATTICES}, got {which!r}")
    if not tokens:
        raise ValueError("the transcript is empty: no lattice occupancy to compute")
    device = features.device
    layer = model.cfg.rnnt_layer
    _, lens, layers = model.forward_encoder(
        features[None], torch.tensor([features.size(0)], device=device), (layer,)
    )
    encoder_out = layers[layer].float()
    head = model.rnnt
    y = torch.tensor([tokens], dtype=torch.long, device=device)
    pred = head.predict_sequence(y).float()  # [1, U+1, P]
    boundary = torch.tensor([[0, 0, len(tokens), int(lens[0])]], dtype=torch.long, device=device)
    if which == "simple":
        px, py = lattice.get_rnnt_logprobs(
            head.simple_lm(pred), head.simple_am(encoder_out), y, head.blank_id, boundary=boundary
        )
    else:
        px, py = _full_joiner_logprobs(head, encoder_out, pred, y)
    return lattice_occupancy(px, py, boundary)[0].cpu()
