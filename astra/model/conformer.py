"""Conformer block: macaron feed-forward, self-attention, convolution module, final LayerNorm.

Legend: B batch, T' frames, D model dim. Padded frames are zeroed before every operation that
mixes frames (attention keys, depthwise convolution), and the convolution module uses
LayerNorm instead of BatchNorm, so outputs on valid frames do not depend on padding.
"""

from __future__ import annotations

from torch import Tensor, nn

from astra.model.attention import MultiHeadSelfAttention


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
    """Pointwise conv + GLU, depthwise conv, LayerNorm, SiLU, pointwise conv.

    ``forward(x [B, T', D], padding_mask [B, T']) -> [B, T', D]``.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.activation = nn.SiLU()
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        x = nn.functional.glu(self.pointwise_in(self.norm(x)), dim=-1)
        x = x.masked_fill(padding_mask[:, :, None], 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        x = self.activation(self.depthwise_norm(x))
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
    ) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_mult, dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, dropout, position_encoding)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvolutionModule(d_model, conv_kernel, dropout)
        self.ff2 = FeedForward(d_model, ff_mult, dropout)
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), padding_mask))
        x = x + self.conv(x, padding_mask)
        x = x + 0.5 * self.ff2(x)
        x = self.final_norm(x)
        return x.masked_fill(padding_mask[:, :, None], 0.0)
