"""Aligner-Encoder decoder (Aligner-Encoders, arXiv:2502.05232): LSTM prediction network + joint network.

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

DECODE_MASKED_IDS = (0, 2)  # <blank>, <sos>: never emitted by a decoder (CONTRIBUTING.md "Tokens")


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
        self.lstm = nn.LSTM(pred_dim, pred_dim, pred_layers, batch_first=True,
                            dropout=dropout if pred_layers > 1 else 0.0)
        self.encoder_proj = nn.Linear(d_model, joint_dim)
        self.pred_proj = nn.Linear(pred_dim, joint_dim)
        self.output = nn.Linear(joint_dim, vocab_size)

    def predict(
        self, prev_tokens: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """LSTM over previous tokens: ``[B, L]`` -> ``(g [B, L, P], (h, c) each [layers, B, P])``.

        Under CPU autocast the LSTM runs in float32: oneDNN has no bfloat16 LSTM on CPUs
        without AVX-512 (e.g. an AVX2 AMD EPYC: "could not create a primitive descriptor for
        the LSTM forward propagation primitive"), and one precision on every CPU keeps runs
        comparable across machines."""
        x = self.embedding_dropout(self.embedding(prev_tokens))
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self.lstm(x.float(), None if state is None else (state[0].float(), state[1].float()))
        return self.lstm(x, state)

    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One LSTM step for decoding: ``tokens [B]``, state ``(h, c)`` each ``[layers, B, P]``
        -> ``(g [B, P], state)``. Same math as :meth:`predict` (PyTorch's gate order i, f, g, o),
        written out because a one-step ``nn.LSTM`` call is much slower on CPU (docs/model.md); the first
        layer's input gates come from a per-token table (see :meth:`input_gate_table`)."""
        x = None
        hs, cs = [], []
        for layer in range(self.lstm.num_layers):
            w_hh = getattr(self.lstm, f"weight_hh_l{layer}")
            if layer == 0:
                gates = torch.addmm(self.input_gate_table()[tokens], state[0][0], w_hh.t())
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

    def stepper(
        self, rows: int, device: torch.device, dtype: torch.dtype | None = None,
        masked_ids: tuple[int, ...] = DECODE_MASKED_IDS,
    ) -> AlignerStepper:
        """The fast decoding path for ``rows`` hypotheses (:class:`AlignerStepper`); weights
        cast to ``dtype`` (default: the parameters' dtype); ``masked_ids`` get logit ``-inf``.
        Build one per decode call."""
        return AlignerStepper(self, rows, device, dtype or self.output.weight.dtype, masked_ids)

    def input_gate_table(self) -> Tensor:
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


class AlignerStepper:
    """Fast decoding path of an :class:`AlignerDecoder` for N hypothesis rows.

    Computes exactly what ``decoder.joint(h_i, g)`` and :meth:`AlignerDecoder.step` compute,
    with the token-independent work hoisted out of the per-step loop:

    * the first layer's input gates ``W_ih embedding(v) + b_ih + b_hh`` of every token v
      (``[V, 4P]``, a lookup per step instead of a matmul);
    * the joint's encoder side ``W_e h + b_e + b_p`` of every frame (:meth:`encoder_side`,
      one batched matmul before the loop);
    * each layer's recurrent term ``W_hh h`` and the joint's prediction side ``W_p g`` come
      from one matmul of the new LSTM output with ``[W_hh; W_p]`` (last layer), so a step is
      that matmul, one add and the output layer;
    * ``<blank>`` and ``<sos>`` (``masked_ids``) get logit ``-inf`` through the output bias
      (no per-step mask);
    * every per-step tensor is a preallocated buffer (rows reordered in place for beams).

    State per row: ``rec [layers, N, 4P]`` (``W_hh h`` of each layer), ``c [layers, N, P]``,
    ``pred [N, J]`` (``W_p g``). Logits are those of the reference joint up to float rounding.
    """

    def __init__(
        self, decoder: AlignerDecoder, rows: int, device: torch.device, dtype: torch.dtype,
        masked_ids: tuple[int, ...] = DECODE_MASKED_IDS,
    ) -> None:
        lstm = decoder.lstm
        self.layers, self.rows = lstm.num_layers, rows
        width = lstm.hidden_size
        self.width = width
        self.encoder_weight = decoder.encoder_proj.weight.to(dtype)
        self.encoder_bias = (decoder.encoder_proj.bias + decoder.pred_proj.bias).to(dtype)
        self.input_gates = decoder.input_gate_table().to(dtype)  # [V, 4P]
        self.input_weights = [None] + [getattr(lstm, f"weight_ih_l{k}").t().to(dtype) for k in range(1, self.layers)]
        self.input_biases = [None] + [
            (getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")).to(dtype) for k in range(1, self.layers)
        ]
        recurrent = [getattr(lstm, f"weight_hh_l{k}") for k in range(self.layers)]
        # [P, 4P] per layer; the last one [P, 4P + J] with the joint's prediction side
        self.recurrent = [w.t().to(dtype) for w in recurrent[:-1]]
        self.recurrent.append(torch.cat([recurrent[-1], decoder.pred_proj.weight]).t().to(dtype))
        self.output_weight = decoder.output.weight.t().to(dtype)  # [J, V]
        bias = decoder.output.bias.detach().clone().to(dtype)
        bias[list(masked_ids)] = float("-inf")
        self.output_bias = bias
        joint, vocab = self.output_weight.shape
        new = dict(device=device, dtype=dtype)
        # state: rec[k] = W_hh h of layer k [N, 4P]; the last layer's row is [W_hh h, W_p g]
        # [N, 4P + J] (one matmul); c [layers, N, P]
        self.rec = [torch.zeros(rows, w.size(1), **new) for w in self.recurrent]
        self.c = torch.zeros(self.layers, rows, width, **new)
        self._spare = ([torch.empty_like(r) for r in self.rec], torch.empty_like(self.c))
        self._gates = torch.empty(rows, 4 * width, **new)
        self._h = torch.empty(rows, width, **new)
        self._hidden = torch.empty(rows, joint, **new)
        self._logits = torch.empty(rows, vocab, **new)

    @property
    def pred(self) -> Tensor:
        """``[N, J]``: the joint's prediction side ``W_p g`` of every row (a view)."""
        return self.rec[-1][:, 4 * self.width :]

    def encoder_side(self, encoder_out: Tensor) -> Tensor:
        """``[B, T', D] -> [B, T', J]``: ``W_e h + b_e + b_p`` of every frame."""
        return F.linear(encoder_out.to(self.encoder_weight.dtype), self.encoder_weight, self.encoder_bias)

    def start(self, sos_id: int, primed: tuple[Tensor, tuple[Tensor, Tensor]] | None = None) -> None:
        """Every row reads ``<sos>`` from the zero state, or continues ``primed = (g [N, P],
        (h, c) [layers, N, P])`` from :meth:`AlignerDecoder.prime`."""
        if primed is None:
            for rec in self.rec:
                rec.zero_()
            self.c.zero_()
            tokens = torch.full((self.rows,), sos_id, dtype=torch.long, device=self.c.device)
            self.advance(tokens)
            return
        g, (h, c) = primed
        dtype = self.c.dtype
        for k in range(self.layers):  # g is the last layer's h
            torch.mm(h[k].to(dtype), self.recurrent[k], out=self.rec[k])
        self.c.copy_(c.to(dtype))

    def logits(self, enc_frame: Tensor) -> Tensor:
        """``[N, V]`` joint logits of the rows' frames ``enc_frame [N, J]`` (from
        :meth:`encoder_side`); ``<blank>``/``<sos>`` are ``-inf``. A buffer, overwritten by
        the next call."""
        torch.add(enc_frame, self.pred, out=self._hidden)
        torch.tanh(self._hidden, out=self._hidden)
        return torch.addmm(self.output_bias, self._hidden, self.output_weight, out=self._logits)

    def reorder(self, parents: Tensor) -> None:
        """Row j takes the state of row ``parents[j]`` (beam search), ``parents [N]``."""
        rec, c = self._spare
        for old, new in zip(self.rec, rec, strict=True):
            torch.index_select(old, 0, parents, out=new)
        torch.index_select(self.c, 1, parents, out=c)
        self._spare = (self.rec, self.c)
        self.rec, self.c = rec, c

    def advance(self, tokens: Tensor, only: Tensor | None = None) -> None:
        """Every row reads its token ``tokens [N]``: one LSTM step (gate order i, f, g, o).
        ``only [N]`` (bool): rows where it is false keep their state (RNN-T blank frames)."""
        if only is not None:
            kept = ([r.clone() for r in self.rec], self.c.clone())
            self.advance(tokens)
            for new, old in zip(self.rec, kept[0], strict=True):
                torch.where(only[:, None], new, old, out=new)
            torch.where(only[None, :, None], self.c, kept[1], out=self.c)
            return
        width = self.width
        gates, h = self._gates, self._h
        for k in range(self.layers):
            if k == 0:
                torch.index_select(self.input_gates, 0, tokens, out=gates)
            else:
                torch.addmm(self.input_biases[k], h, self.input_weights[k], out=gates)
            gates.add_(self.rec[k][:, : 4 * width])
            gates[:, : 2 * width].sigmoid_()
            gates[:, 2 * width : 3 * width].tanh_()
            gates[:, 3 * width :].sigmoid_()
            c = self.c[k]
            c.mul_(gates[:, width : 2 * width]).addcmul_(gates[:, :width], gates[:, 2 * width : 3 * width])
            torch.tanh(c, out=h).mul_(gates[:, 3 * width :])
            torch.mm(h, self.recurrent[k], out=self.rec[k])
