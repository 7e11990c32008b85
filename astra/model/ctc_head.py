"""CTC head (top-layer CTC and InterCTC): a linear layer + log-softmax, blank id 0.

Legend: B batch, T' encoder frames, U tokens, D model dim, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CtcHead(nn.Module):
    """``forward(x [B, T', D]) -> log-probs [B, T', V]``; ``loss`` sums over utterances."""

    def __init__(self, d_model: int, vocab_size: int, blank_id: int = 0) -> None:
        super().__init__()
        self.blank_id = blank_id
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).float().log_softmax(dim=-1)

    def loss(self, x: Tensor, lengths: Tensor, tokens: Tensor, token_lens: Tensor) -> Tensor:
        """Summed CTC loss (float32); impossible alignments (T' too short) give 0 (zero_infinity)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            log_probs = self.forward(x.float())
            return F.ctc_loss(
                log_probs.transpose(0, 1), tokens, lengths, token_lens,
                blank=self.blank_id, reduction="sum", zero_infinity=True,
            )

    def greedy(self, x: Tensor, lengths: Tensor) -> list[list[int]]:
        """Best path: argmax per frame, merge repeats, drop blanks."""
        best = self.proj(x).argmax(dim=-1).tolist()
        hyps = []
        for row, length in zip(best, lengths.tolist(), strict=True):
            out, prev = [], None
            for token in row[:length]:
                if token != prev and token != self.blank_id:
                    out.append(token)
                prev = token
            hyps.append(out)
        return hyps
