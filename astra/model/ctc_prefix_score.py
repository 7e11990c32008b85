"""CTC prefix scores of hypotheses that grow by one token per step (Watanabe et al., 2017).

Legend: B batch, N hypotheses (``B * K`` for a beam of K), T' encoder frames, V vocabulary.

The prefix score of a token sequence h is ``psi(h) = log sum P(pi)`` over the CTC paths pi
whose collapsed output *starts with* h; the score of a complete hypothesis is
``log P_ctc(h)``, the paths that collapse to exactly h (``-ctc_loss``). Both never increase
as h grows, so a beam search that adds ``ctc_weight * psi`` keeps its stopping rule.

Per hypothesis the state is the forward variables ``r_n[t]`` / ``r_b[t]``: the log
probability of the paths over frames ``0..t`` that collapse to h and end in a non-blank /
blank frame. Frames at or beyond an utterance's length emit blank with probability 1, so
``logaddexp(r_n, r_b)`` at the last padded frame is ``log P_ctc(h)`` for every utterance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEG_INF = float("-inf")
LOG_FLOOR = -1e4  # log-probs below this count as impossible (keeps cumulative sums finite)
MATMUL_MIN_SHARE = 8  # scores() uses the matrix product when C >= V / 8 candidates are scored


@dataclass
class CtcPrefixState:
    """Forward variables of N hypotheses: ``r_n``, ``r_b`` ``[T', N]``; ``last [N]`` the last
    token of each hypothesis (-1: empty)."""

    r_n: Tensor
    r_b: Tensor
    last: Tensor

    def full_score(self) -> Tensor:
        """``[N]``: ``log P_ctc(h)`` of each hypothesis as a complete output."""
        return torch.logaddexp(self.r_n[-1], self.r_b[-1])


class CtcPrefixScorer:
    """Prefix scores for N hypotheses over the CTC log-probs of B utterances.

    Args:
        log_probs: ``[B, T', V]`` CTC log-probabilities (blank included).
        lengths: ``[B]`` valid frames per utterance.
        blank_id: the CTC blank.
        rows: ``[N]`` utterance index of each hypothesis (e.g. ``arange(B).repeat_interleave(K)``).

    Memory: one masked float32 copy of ``log_probs`` (``[T', B, V]``), the blank column of
    every hypothesis (``[T', N]``) and, when the hypotheses come in equal groups per utterance
    (``rows = arange(B).repeat_interleave(K)``, as the beam searches make them), the
    probabilities ``[B, T', V]`` in float64 for :meth:`scores`; never a per-hypothesis copy of
    the vocabulary (``[T', N, V]``).

    :meth:`scores` sums ``phi[t-1] x_c[t]`` over the frames (probability space). With the
    grouped layout and many candidates (``C * MATMUL_MIN_SHARE >= V``) that sum is one batched
    matrix product ``[B, K, T'] x [B, T', V]`` per step in float64, each operand scaled by its
    maximum (the hypothesis' over frames, the token's over frames); the sums that still
    underflow (every term below ``e^-745`` of the maxima: hopeless extensions, about 5 % of
    the entries in the tiny recipe's search) are redone exactly. Otherwise it gathers the
    candidate columns (``[T', N, C]``) and takes a ``logsumexp`` over frames. The product made
    the tiny recipe's CTC beam + LM decodes about 3x faster (docs/model.md, *Decoding*).
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank_id: int, rows: Tensor) -> None:
        if log_probs.dim() != 3:
            raise ValueError(f"log_probs must be [B, T', V], got shape {tuple(log_probs.shape)}")
        batch, frames, _ = log_probs.shape
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must be [{batch}], got shape {tuple(lengths.shape)}")
        x = log_probs.float().transpose(0, 1)  # [T', B, V]
        beyond = torch.arange(frames, device=x.device)[:, None] >= lengths.to(x.device)[None, :]  # [T', B]
        x = x.masked_fill(beyond[:, :, None], NEG_INF)
        x[:, :, blank_id] = x[:, :, blank_id].masked_fill(beyond, 0.0)
        self.x = x  # [T', B, V]
        self.rows = rows.to(x.device)  # [N]
        self.x_blank = x[:, :, blank_id][:, self.rows]  # [T', N]
        self.blank_id = blank_id
        self.group = _group_size(self.rows, batch)  # K if rows = arange(B).repeat_interleave(K)
        if self.group:
            # per (utterance, token) maximum over frames m [B, 1, V] and exp(x - m) [B, T', V]
            peak = x.amax(dim=0)[:, None, :].double()
            self.possible = peak.isfinite()  # [B, 1, V]: the token has a frame with p > 0
            self.peak = torch.where(self.possible, peak, 0.0)
            self.probs = (x.transpose(0, 1).double() - self.peak).exp()

    def _columns(self, tokens: Tensor) -> Tensor:
        """``[T', N, C]``: log-probs of ``tokens [N, C]`` at every frame of each hypothesis'
        utterance (a gather of ``T' x N x C`` values)."""
        return self.x[:, self.rows[:, None], tokens]

    def initial_state(self) -> CtcPrefixState:
        """The empty hypothesis: only blank frames so far."""
        r_b = self.x_blank.cumsum(dim=0)
        n = r_b.size(1)
        return CtcPrefixState(torch.full_like(r_b, NEG_INF), r_b,
                              torch.full((n,), -1, dtype=torch.long, device=r_b.device))

    @staticmethod
    def _phi(r_n: Tensor, r_b: Tensor, last: Tensor, tokens: Tensor) -> Tensor:
        """``[T', N, C]``: log-prob of the paths for h that may be followed by a new frame of
        token ``tokens [N, C]`` (``r_b`` only when it repeats h's last token ``last [N]``)."""
        repeat = (tokens == last[:, None])[None]  # [1, N, C]
        return torch.where(repeat, r_b[:, :, None], torch.logaddexp(r_n, r_b)[:, :, None])

    def scores(self, state: CtcPrefixState, tokens: Tensor | None = None) -> Tensor:
        """``[N, C]``: ``psi(h + c)`` for the candidate tokens c of each hypothesis, ``tokens
        [N, C]`` (default: every token, C = V; the blank's score is -inf; callers score an end
        of hypothesis with :meth:`CtcPrefixState.full_score`)."""
        n, vocab = self.rows.numel(), self.x.size(2)
        if tokens is None:
            tokens = torch.arange(vocab, device=self.x.device).expand(n, vocab)
        if self.group and tokens.size(1) * MATMUL_MIN_SHARE >= vocab:
            return self._product_scores(state, tokens).masked_fill(tokens == self.blank_id, NEG_INF)
        x_c = self._columns(tokens)  # [T', N, C]
        phi = self._phi(state.r_n, state.r_b, state.last, tokens)
        empty = (state.last < 0)[:, None]  # only the empty hypothesis may start at frame 0
        first = torch.where(empty, x_c[0], torch.full_like(x_c[0], NEG_INF))  # [N, C]
        later = phi[:-1] + x_c[1:]  # [T'-1, N, C]: paths whose first frame of c is t >= 1
        psi = torch.logsumexp(torch.cat([first[None], later], dim=0), dim=0)
        return psi.masked_fill(tokens == self.blank_id, NEG_INF)

    def _product_scores(self, state: CtcPrefixState, tokens: Tensor) -> Tensor:
        """``[N, C]``: ``psi(h + c)`` of ``tokens [N, C]`` from one batched matrix product over
        frames for the whole vocabulary (class doc; grouped layout only; the blank's score is
        left to the caller)."""
        frames, n = state.r_n.shape
        batch, group = n // self.group, self.group
        # weights w[t] of the paths for h that may be followed by a first frame t of c:
        # phi[t-1] for t >= 1, and 1 at t = 0 for the empty hypothesis
        empty = state.last < 0
        phi = torch.logaddexp(state.r_n, state.r_b).double()  # [T', N] (non-repeating tokens)
        w = torch.cat([torch.where(empty, 0.0, NEG_INF)[None].to(phi), phi[:-1]])  # [T', N]
        top = w.amax(dim=0)  # [N]
        top = torch.where(top.isneginf(), 0.0, top)
        scaled = (w - top).exp().T.reshape(batch, group, frames)  # [B, K, T']
        columns = tokens.view(batch, group, -1)  # [B, K, C]
        sums = torch.bmm(scaled, self.probs).gather(2, columns).view(n, -1)  # [N, C]
        psi = sums.log() + self.peak.expand(-1, group, -1).gather(2, columns).view(n, -1) + top[:, None]
        # a sum that underflowed (every term below e^-745 of the maxima, yet not impossible):
        # those entries exactly, with a logsumexp over frames
        possible = self.possible.expand(-1, group, -1).gather(2, columns).view(n, -1)
        lost = (sums == 0) & possible & w.isfinite().any(dim=0)[:, None]
        if bool(lost.any()):
            hyp, column = lost.nonzero(as_tuple=True)
            terms = w[:, hyp] + self.x[:, self.rows[hyp], tokens[hyp, column]].double()  # [T', S]
            psi[hyp, column] = torch.logsumexp(terms, dim=0)
        # a repeat of h's last token continues only from blank-ending paths: r_b
        repeat = (tokens == state.last[:, None]) & ~empty[:, None]
        if bool(repeat.any()):
            x_last = self._columns(state.last.clamp(min=0)[:, None])[:, :, 0]  # [T', N]
            rep = torch.logsumexp(state.r_b[:-1] + x_last[1:], dim=0)  # [N]
            psi = torch.where(repeat, rep[:, None].double(), psi)
        return psi.float()

    def extend(self, state: CtcPrefixState, parents: Tensor, tokens: Tensor) -> CtcPrefixState:
        """Forward variables of ``h[parents[j]] + tokens[j]`` for each new hypothesis j
        (``parents``, ``tokens`` ``[N]``); the new hypothesis j keeps row j's utterance.

        The recursions ``r_n[t] = (r_n[t-1] + phi[t-1]) x_c[t]`` and ``r_b[t] = (r_b[t-1] +
        r_n[t-1]) x_b[t]`` (probability space) are first-order linear, so each is one
        cumulative sum and one ``logcumsumexp`` over T' instead of a loop over frames."""
        phi = self._phi(state.r_n[:, parents], state.r_b[:, parents], state.last[parents], tokens[:, None])
        phi = phi[:, :, 0].double()  # [T', N]
        x_c = self._columns(tokens[:, None])[:, :, 0].double().clamp(min=LOG_FLOOR)  # [T', N]
        x_b = self.x_blank.double().clamp(min=LOG_FLOOR)
        empty = state.last[parents] < 0
        # r_n: a path starts its first frame of c at s (s = 0 only for the empty prefix)
        start = torch.cat([torch.where(empty, 0.0, NEG_INF)[None].to(phi), phi[:-1]])  # [T', N]
        r_n = _linear_recursion(start, x_c)
        r_b = _linear_recursion(torch.cat([torch.full_like(r_n[:1], NEG_INF), r_n[:-1]]), x_b)
        return CtcPrefixState(r_n.float(), r_b.float(), tokens.clone())


def _group_size(rows: Tensor, batch: int) -> int:
    """K if ``rows [N]`` is ``arange(B).repeat_interleave(K)``, else 0."""
    n = rows.numel()
    if batch == 0 or n == 0 or n % batch:
        return 0
    group = n // batch
    expected = torch.arange(batch, device=rows.device).repeat_interleave(group)
    return group if torch.equal(rows, expected) else 0


def _linear_recursion(start: Tensor, log_x: Tensor) -> Tensor:
    """``r[t] = logaddexp(r[t-1], start[t]) + log_x[t]`` with ``r[-1] = -inf`` for all t at
    once: ``r[t] = C[t] + logcumsumexp_s(start[s] - C[s-1])``, C the cumulative sum of
    ``log_x`` (``[T', N]``, float64 and finite, so the differences stay exact)."""
    cum = log_x.cumsum(dim=0)
    before = torch.cat([torch.zeros_like(cum[:1]), cum[:-1]])
    return cum + torch.logcumsumexp(start - before, dim=0)
