"""Multi-head self-attention with rotary (default) or relative position encoding.

Legend: B batch, T' frames, D model dim, H heads, d = D / H.

Normal training uses :func:`torch.nn.functional.scaled_dot_product_attention`. Two switches,
both plain attributes set by :class:`astra.model.AstraModel`:

* ``store_weights``: compute the softmax explicitly and keep ``last_weights [B, H, T', T']``
  (diagnostics, :meth:`AstraModel.attention_maps`); off by default, so no cost otherwise.
* ``keep_attention_with_grad``: the same, but ``attention_with_grad`` keeps the weights with
  their gradient (used by the lattice-guided self-transduction loss on one layer).
* ``identity``: the identity warm-up of "The Conformer Encoder May Reverse the Time Dimension"
  (arXiv:2410.00680) — the attention matrix is fixed to the identity, i.e. the output at frame
  t is ``out_proj(value(x_t))``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from astra.model.config import POSITION_ENCODINGS


@functools.lru_cache(maxsize=16)
def rotary_tables(length: int, head_dim: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin tables ``[T', d]`` of rotary position embedding (base 10000), full width for
    :func:`apply_rotary`: ``cos`` holds the d/2 angles' cosines twice, ``sin`` their sines
    negated, then the sines. Cached, so the layers of a stack and the steps of equal-length
    batches build them once; built outside inference mode, so that tables first made by an
    evaluation (``torch.inference_mode``) can later be saved for backward in training."""
    with torch.inference_mode(False):
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
        angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
        cos, sin = angles.cos(), angles.sin()
        return torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x [B, H, T', d]`` by position, rotate-half convention (pairs i, i + d/2):
    ``(x1 cos - x2 sin, x2 cos + x1 sin)``, computed as ``x * cos + roll(x, d/2) * sin`` -
    three ops, fewer passes over x than the halves and a concatenation (tools/bench_conformer.py)."""
    return torch.addcmul(x * cos, x.roll(x.size(-1) // 2, dims=-1), sin)


def relative_sinusoids(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Sinusoidal embeddings ``[2T'-1, D]`` of relative positions T'-1, T'-2, ..., -(T'-1)."""
    positions = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(2 * length - 1, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(positions * div)
    table[:, 1::2] = torch.cos(positions * div)
    return table.to(dtype)


def relative_shift(scores: Tensor) -> Tensor:
    """``[B, H, T', 2T'-1]`` scores over relative positions -> ``[B, H, T', T']`` where entry
    (i, j) is the score of relative position i - j."""
    b, h, t, _ = scores.shape
    scores = scores.contiguous()
    return scores.as_strided(
        (b, h, t, t),
        (scores.stride(0), scores.stride(1), scores.stride(2) - 1, 1),
        storage_offset=scores.storage_offset() + t - 1,
    )


class MultiHeadSelfAttention(nn.Module):
    """``forward(x [B, T', D], padding_mask [B, T'] (True = pad)) -> [B, T', D]``."""

    def __init__(self, d_model: int, num_heads: int, dropout: float, position_encoding: str = "rope") -> None:
        super().__init__()
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(f"position_encoding={position_encoding!r}: use one of {POSITION_ENCODINGS}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.position_encoding = position_encoding
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        if position_encoding == "rel_pos":
            self.pos_proj = nn.Linear(d_model, d_model, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(num_heads, self.head_dim))
            self.pos_bias_v = nn.Parameter(torch.zeros(num_heads, self.head_dim))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)
        self.store_weights = False
        self.identity = False
        self.last_weights: Tensor | None = None
        self.keep_attention_with_grad = False  # keep the weights *with* gradient (transduction KL)
        self.attention_with_grad: Tensor | None = None

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = (self._split(part) for part in self.qkv(x).chunk(3, dim=-1))  # [B, H, T', d]
        if self.identity:
            if self.store_weights:
                eye = torch.eye(t, device=x.device, dtype=x.dtype)
                self.last_weights = eye.expand(b, self.num_heads, t, t).clone()
            return self.out_proj(v.transpose(1, 2).reshape(b, t, d))

        bias: Tensor | None = None  # additive float mask [B, H, T', T'] (rel_pos only)
        if self.position_encoding == "rope":
            cos, sin = rotary_tables(t, self.head_dim, x.device, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        else:
            pos = self.pos_proj(relative_sinusoids(t, d, x.device, x.dtype))  # [2T'-1, D]
            pos = pos.view(2 * t - 1, self.num_heads, self.head_dim).permute(1, 2, 0)  # [H, d, 2T'-1]
            q_v = q + self.pos_bias_v[None, :, None, :]
            bias = relative_shift(torch.matmul(q_v, pos)) / math.sqrt(self.head_dim)
            q = q + self.pos_bias_u[None, :, None, :]

        keep = ~padding_mask[:, None, None, :]  # [B, 1, 1, T'] True = attend
        dropout = self.dropout if self.training else 0.0
        if self.store_weights or self.keep_attention_with_grad:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if bias is not None:
                scores = scores + bias
            weights = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)
            if self.store_weights:
                self.last_weights = weights.detach()
            if self.keep_attention_with_grad:
                self.attention_with_grad = weights
            context = torch.matmul(F.dropout(weights, dropout, self.training), v)
        else:
            mask = keep if bias is None else bias.masked_fill(~keep, float("-inf"))
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out_proj(context.transpose(1, 2).reshape(b, t, d))
