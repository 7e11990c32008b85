"""Speech, text and shared encoders (stacks of Conformer blocks).

Legend: B batch, T input frames (10 ms), T' encoder frames, U tokens, D model dim, F features.
Every ``forward`` takes and returns lengths; outputs are zero on padded frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from astra.model.config import ModelConfig
from astra.model.conformer import ConformerBlock
from astra.model.frontend import Conv2dSubsampling, lengths_to_padding_mask


def _blocks(cfg: ModelConfig, count: int) -> nn.ModuleList:
    return nn.ModuleList(
        ConformerBlock(
            cfg.d_model, cfg.num_heads, cfg.ff_mult, cfg.conv_kernel, cfg.dropout, cfg.position_encoding, cfg.conv_norm
        )
        for _ in range(count)
    )


def _run_blocks(blocks: nn.ModuleList, x: Tensor, lengths: Tensor) -> Tensor:
    """Zero the padded frames of ``x [B, T', D]``, then run ``blocks``; ``[B, T', D]``."""
    pad = lengths_to_padding_mask(lengths, x.size(1))
    x = x.masked_fill(pad[:, :, None], 0.0)
    for block in blocks:
        x = block(x, pad)
    return x


class SpeechEncoder(nn.Module):
    """Conv2d subsampling + N Conformer blocks.

    ``forward(features [B, T, F] (normalised), lengths [B]) -> (S [B, T', D], lengths' [B])``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        channels = cfg.subsampling_channels or cfg.d_model
        self.subsampling = Conv2dSubsampling(cfg.num_features, cfg.d_model, cfg.subsampling, channels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = _blocks(cfg, cfg.speech_layers)

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = self.subsampling(features, lengths)
        return _run_blocks(self.blocks, self.dropout(x), lengths), lengths


class TextEncoder(nn.Module):
    """Token embedding + M Conformer blocks, one frame per token (no upsampling).

    ``forward(tokens [B, U], lengths [B], masked=None) -> (E [B, U, D], lengths [B])``;
    ``masked [B, U]`` (bool) replaces those tokens' embeddings by a learned mask vector
    (text masking, ``cfg.text_mask_prob > 0``; the vector exists only then).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, cfg.d_model)
        self.mask_embedding = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.text_mask_prob > 0 else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = _blocks(cfg, cfg.text_layers)

    def forward(self, tokens: Tensor, lengths: Tensor, masked: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.embedding(tokens)
        if masked is not None:
            if self.mask_embedding is None:
                raise ValueError("text masking needs model.text_mask_prob > 0 (no mask vector was built)")
            x = torch.where(masked[:, :, None], self.mask_embedding.to(x.dtype), x)
        return _run_blocks(self.blocks, self.dropout(x), lengths), lengths


class SharedEncoder(nn.Module):
    """K Conformer blocks shared by speech (S) and text (E) inputs.

    ``forward(x [B, T', D], lengths [B], return_layers=(k, ...)) -> (H [B, T', D],
    {k: output after block k [B, T', D]})``; layer 0 is the input itself.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.blocks = _blocks(cfg, cfg.shared_layers)

    def forward(
        self, x: Tensor, lengths: Tensor, return_layers: Sequence[int] = (), num_blocks: int | None = None,
        first_block: int = 0,
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """``num_blocks`` stops after that many blocks (default: all); H is then layer k.
        ``first_block``: ``x`` is layer ``first_block``'s output (the blocks after it run)."""
        pad = lengths_to_padding_mask(lengths, x.size(1))
        wanted = set(return_layers)
        layers: dict[int, Tensor] = {first_block: x} if first_block in wanted else {}
        for index, block in enumerate(self.blocks[first_block:num_blocks], start=first_block + 1):
            x = block(x, pad)
            if index in wanted:
                layers[index] = x
        return x, layers
