"""Conformer block: macaron feed-forward, self-attention, convolution module, final LayerNorm.

Legend: B batch, T' frames, D model dim. Padded frames are zeroed before every operation that
mixes frames (attention keys, depthwise convolution), and the convolution module normalises
per utterance over its valid frames (or per frame, LayerNorm) instead of with BatchNorm, so
outputs on valid frames depend neither on padding nor on the other utterances of the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from astra.model.attention import MultiHeadSelfAttention
from astra.model.config import CONV_NORMS


class UtteranceNorm(nn.Module):
    """Per-utterance, per-channel normalisation over the valid frames, with a learned scale
    and shift: ``forward(x [B, T', D], padding_mask [B, T']) -> [B, T', D]``.

    It plays BatchNorm's role after the depthwise convolution (normalising each channel over
    time, which keeps the relative energy of frames that a per-frame LayerNorm removes) but
    its statistics come from one utterance only: no running averages, no dependence on the
    batch, the padding or the modality (speech and text share the encoder's blocks). How it
    compares with LayerNorm and BatchNorm: docs/model.md (``conv_norm``).
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        # sums over valid frames as [B, 1, T'] x [B, T', D] products and one fused scale-and-shift:
        # fewer passes over x than masked element-wise sums (tools/bench_conformer.py)
        valid = (~padding_mask)[:, None, :].to(x.dtype)  # [B, 1, T']
        count = valid.sum(dim=2, keepdim=True).clamp_min(1.0)  # [B, 1, 1]
        centred = x - torch.bmm(valid, x) / count  # two-pass variance: no E[x^2] - mean^2 cancellation
        var = torch.bmm(valid, centred * centred) / count  # [B, 1, D]
        return torch.addcmul(self.bias, centred, torch.rsqrt(var + self.eps) * self.weight)


class FeedForward(nn.Module):
    """Pre-norm position-wise feed-forward: ``[B, T', D] -> [B, T', D]``."""

    def __init__(self, d_model: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, mult * d_model),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, norm (``"utterance"``: :class:`UtteranceNorm`;
    ``"layer"``: LayerNorm per frame), SiLU, pointwise conv.

    ``forward(x [B, T', D], padding_mask [B, T']) -> [B, T', D]``.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float, norm: str = "layer") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        if norm not in CONV_NORMS:
            raise ValueError(f"conv norm {norm!r}: use one of {CONV_NORMS}")
        self.depthwise_norm = UtteranceNorm(d_model) if norm == "utterance" else nn.LayerNorm(d_model)
        self.activation = nn.SiLU()
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        x = nn.functional.glu(self.pointwise_in(self.norm(x)), dim=-1)
        x = x.masked_fill(padding_mask[:, :, None], 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        if isinstance(self.depthwise_norm, UtteranceNorm):
            x = self.depthwise_norm(x, padding_mask)
        else:
            x = self.depthwise_norm(x)
        x = self.activation(x)
        return self.dropout(self.pointwise_out(x))


class ConformerBlock(nn.Module):
    """``forward(x [B, T', D], padding_mask [B, T'] (True = pad)) -> [B, T', D]``."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ff_mult: int,
        conv_kernel: int,
        dropout: float,
        position_encoding: str,
        conv_norm: str = "layer",
    ) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_mult, dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, dropout, position_encoding)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvolutionModule(d_model, conv_kernel, dropout, conv_norm)
        self.ff2 = FeedForward(d_model, ff_mult, dropout)
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        x = torch.add(x, self.ff1(x), alpha=0.5)  # x + 0.5 * ff1(x), one op
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), padding_mask))
        x = x + self.conv(x, padding_mask)
        x = torch.add(x, self.ff2(x), alpha=0.5)
        x = self.final_norm(x)
        return x.masked_fill(padding_mask[:, :, None], 0.0)
