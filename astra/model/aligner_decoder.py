"""Aligner-Encoder decoder (seed 000): LSTM prediction network + joint network.

Legend: B batch, T' encoder frames, L decoded positions, U tokens, D model dim,
P prediction-network width, J joint width, V vocabulary.

The i-th output token is read from encoder frame i: ``logits_i = joint(h_i, g_i)`` where
``g_i`` is the LSTM output after consuming y_{i-1} (``y_0 = <sos>``, zero initial state).
No blank, no lattice: decoding takes one LSTM step per emitted token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AlignerDecoder(nn.Module):
    """Prediction network + joint of the Aligner (also used by InterAligner)."""

    def __init__(
        self,
        d_model: int,
        vocab_size: int,
        pred_dim: int,
        pred_layers: int,
        joint_dim: int,
        dropout: float,
        sos_id: int = 2,
    ) -> None:
        super().__init__()
        self.sos_id = sos_id
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, pred_dim)
        self.embedding_dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(pred_dim, pred_dim, pred_layers, batch_first=True, dropout=dropout if pred_layers > 1 else 0.0)
        self.encoder_proj = nn.Linear(d_model, joint_dim)
        self.pred_proj = nn.Linear(pred_dim, joint_dim)
        self.output = nn.Linear(joint_dim, vocab_size)

    def predict(self, prev_tokens: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """LSTM over previous tokens: ``[B, L]`` -> ``(g [B, L, P], (h, c) each [layers, B, P])``."""
        g, state = self.lstm(self.embedding_dropout(self.embedding(prev_tokens)), state)
        return g, state

    def joint(self, encoder_frames: Tensor, pred: Tensor) -> Tensor:
        """``joint(h [..., D], g [..., P]) -> logits [..., V]``."""
        return self.output(torch.tanh(self.encoder_proj(encoder_frames) + self.pred_proj(pred)))

    def forward(self, encoder_out: Tensor, targets: Tensor) -> Tensor:
        """Teacher-forced logits for the first L frames.

        Args:
            encoder_out: ``[B, T', D]`` with T' >= L.
            targets: ``[B, L]`` targets y_1..y_U, ``<eos>``, padding.
        Returns:
            ``[B, L, V]`` logits; position i uses frame i and y_0..y_{i-1}.
        """
        length = targets.size(1)
        sos = torch.full_like(targets[:, :1], self.sos_id)
        g, _ = self.predict(torch.cat([sos, targets[:, :-1]], dim=1))
        return self.joint(encoder_out[:, :length], g)

    def prime(self, tokens: list[list[int]], device: torch.device) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run ``<sos>`` + each history through the LSTM (long-form priming).

        Returns the last output ``[B, P]`` and the state, ready to read the next frame.
        Histories may have different lengths (left-padded with ``<sos>``).
        """
        width = max((len(t) for t in tokens), default=0)
        rows = [[self.sos_id] * (width - len(t) + 1) + list(t) for t in tokens]
        g, state = self.predict(torch.tensor(rows, dtype=torch.long, device=device))
        return g[:, -1], state
