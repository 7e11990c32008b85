"""Aligner-Encoder decoder (seed 000): LSTM prediction network + joint network.

Legend: B batch, T' encoder frames, L decoded positions, U tokens, D model dim,
P prediction-network width, J joint width, V vocabulary.

The i-th output token is read from encoder frame i: ``logits_i = joint(h_i, g_i)`` where
``g_i`` is the LSTM output after consuming y_{i-1} (``y_0 = <sos>``, zero initial state).
No blank, no lattice: decoding takes one LSTM step per emitted token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One LSTM step for decoding: ``tokens [B]``, state ``(h, c)`` each ``[layers, B, P]``
        -> ``(g [B, P], state)``. Same math as :meth:`predict` (PyTorch's gate order i, f, g, o),
        written out because a one-step ``nn.LSTM`` call costs ~7x more on CPU; the first
        layer's input gates come from a per-token table (see :meth:`_input_gate_table`)."""
        x = None
        hs, cs = [], []
        for layer in range(self.lstm.num_layers):
            w_hh = getattr(self.lstm, f"weight_hh_l{layer}")
            if layer == 0:
                gates = torch.addmm(self._input_gate_table()[tokens], state[0][0], w_hh.t())
            else:
                w_ih = getattr(self.lstm, f"weight_ih_l{layer}")
                b = getattr(self.lstm, f"bias_ih_l{layer}") + getattr(self.lstm, f"bias_hh_l{layer}")
                gates = torch.addmm(torch.addmm(b, x, w_ih.t()), state[0][layer], w_hh.t())
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * state[1][layer] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(c)
            hs.append(x)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))

    def _input_gate_table(self) -> Tensor:
        """``[V, 4P]`` first-layer input gates (+ both biases) of every token.

        Computed once and cached while the weights are unchanged (keyed on their version
        counters) when gradients are off; recomputed otherwise, so training is unaffected.
        """
        params = (self.embedding.weight, self.lstm.weight_ih_l0, self.lstm.bias_ih_l0, self.lstm.bias_hh_l0)
        key = tuple((p.data_ptr(), p._version) for p in params)
        cached = getattr(self, "_gate_cache", None)
        if not torch.is_grad_enabled() and cached is not None and cached[0] == key:
            return cached[1]
        table = F.linear(self.embedding.weight, self.lstm.weight_ih_l0, self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0)
        if not torch.is_grad_enabled():
            self._gate_cache = (key, table)
        return table

    def start_state(self, batch: int, device: torch.device) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(g [B, P], state)`` after reading ``<sos>`` from the zero state."""
        zeros = torch.zeros(self.lstm.num_layers, batch, self.lstm.hidden_size, device=device)
        sos = torch.full((batch,), self.sos_id, dtype=torch.long, device=device)
        return self.step(sos, (zeros, zeros.clone()))

    def joint(self, encoder_frames: Tensor, pred: Tensor) -> Tensor:
        """``joint(h [..., D], g [..., P]) -> logits [..., V]``."""
        return self.output(torch.tanh(self.encoder_proj(encoder_frames) + self.pred_proj(pred)))

    def forward(self, encoder_out: Tensor, targets: Tensor, history: Tensor | None = None) -> Tensor:
        """Teacher-forced logits for the first L frames.

        Args:
            encoder_out: ``[B, T', D]`` with T' >= L.
            targets: ``[B, L]`` targets y_1..y_U, ``<eos>``, padding.
            history: optional ``[B, K]`` tokens fed after ``<sos>`` and before y_1 (left-padded
                with ``<sos>``), as :meth:`prime` does in long-form decoding.
        Returns:
            ``[B, L, V]`` logits; position i uses frame i and y_0..y_{i-1}.
        """
        length = targets.size(1)
        if encoder_out.size(1) < length or encoder_out.size(0) != targets.size(0):
            raise ValueError(
                f"AlignerDecoder: encoder_out {tuple(encoder_out.shape)} must be [B, T', D] with "
                f"T' >= L for targets {tuple(targets.shape)} = [B, L]"
            )
        sos = torch.full_like(targets[:, :1], self.sos_id)
        prefix = sos if history is None else torch.cat([sos, history], dim=1)
        g, _ = self.predict(torch.cat([prefix, targets[:, :-1]], dim=1))
        return self.joint(encoder_out[:, :length], g[:, prefix.size(1) - 1 :])

    def prime(self, tokens: list[list[int]], device: torch.device) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run ``<sos>`` + each history through the LSTM (long-form priming).

        Returns the last output ``[B, P]`` and the state, ready to read the next frame.
        Histories may have different lengths (left-padded with ``<sos>``).
        """
        width = max((len(t) for t in tokens), default=0)
        rows = [[self.sos_id] * (width - len(t) + 1) + list(t) for t in tokens]
        g, state = self.predict(torch.tensor(rows, dtype=torch.long, device=device))
        return g[:, -1], state
