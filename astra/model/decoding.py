"""Decoders: Aligner greedy/beam, RNN-T greedy/modified beam, CTC greedy (in ctc_head).

Legend: B batch, T' encoder frames, U tokens, D model dim, P prediction width, V vocabulary.
All functions run under ``torch.no_grad()`` on encoder outputs and return token ids per
utterance, without ``<sos>``/``<eos>``/blank.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astra.model.aligner_decoder import AlignerDecoder
from astra.model.rnnt_head import RnntHead


@torch.no_grad()
def aligner_greedy(
    decoder: AlignerDecoder,
    encoder_out: Tensor,
    lengths: Tensor,
    eos_id: int,
    start: tuple[Tensor, tuple[Tensor, Tensor]] | None = None,
) -> list[list[int]]:
    """Batched greedy Aligner decoding, O(U): token i is read from frame i.

    One LSTM step per emitted token; an utterance stops at ``<eos>`` or at its last frame.

    Args:
        encoder_out: ``[B, T', D]``; lengths ``[B]``.
        start: optional ``(g [B, P], state)`` from :meth:`AlignerDecoder.prime` (long form);
            default: ``<sos>`` and zero state.
    """
    batch, frames = encoder_out.size(0), encoder_out.size(1)
    device = encoder_out.device
    enc = decoder.encoder_proj(encoder_out)  # [B, T', J], projected once
    if start is None:
        g, state = decoder.predict(torch.full((batch, 1), decoder.sos_id, dtype=torch.long, device=device))
        g = g[:, 0]
    else:
        g, state = start
    hyps: list[list[int]] = [[] for _ in range(batch)]
    active = lengths > 0
    for i in range(frames):
        if not bool(active.any()):
            break
        logits = decoder.output(torch.tanh(enc[:, i] + decoder.pred_proj(g)))
        tokens = logits.argmax(dim=-1)
        for b in torch.nonzero(active & (tokens != eos_id)).flatten().tolist():
            hyps[b].append(int(tokens[b]))
        active = active & (tokens != eos_id) & (lengths > i + 1)
        if not bool(active.any()):
            break
        out, state = decoder.predict(tokens[:, None], state)
        g = out[:, 0]
    return hyps


@torch.no_grad()
def aligner_beam(
    decoder: AlignerDecoder, encoder_out: Tensor, lengths: Tensor, eos_id: int, beam: int = 4
) -> list[list[int]]:
    """Aligner beam search: at frame i every live hypothesis is extended by its ``beam`` best
    tokens; ``<eos>`` (or the last frame) ends a hypothesis; the best total log-prob wins."""
    results = []
    for b in range(encoder_out.size(0)):
        enc = decoder.encoder_proj(encoder_out[b, : int(lengths[b])])  # [T'_b, J]
        results.append(_aligner_beam_one(decoder, enc, eos_id, beam))
    return results


def _aligner_beam_one(decoder: AlignerDecoder, enc: Tensor, eos_id: int, beam: int) -> list[int]:
    device = enc.device
    g, (h, c) = decoder.predict(torch.full((1, 1), decoder.sos_id, dtype=torch.long, device=device))
    g = g[:, 0]
    live_tokens: list[list[int]] = [[]]
    live_scores = torch.zeros(1, device=device)
    finished: list[tuple[float, list[int]]] = []
    for i in range(enc.size(0)):
        logp = decoder.output(torch.tanh(enc[i][None] + decoder.pred_proj(g))).log_softmax(dim=-1)  # [N, V]
        total = (live_scores[:, None] + logp).flatten()
        top_scores, top_index = total.topk(min(beam, total.numel()))
        vocab = logp.size(1)
        rows, next_tokens, next_scores = [], [], []
        for score, index in zip(top_scores.tolist(), top_index.tolist(), strict=True):
            row, token = divmod(index, vocab)
            if token == eos_id:
                finished.append((score, live_tokens[row]))
            else:
                rows.append(row)
                next_tokens.append(token)
                next_scores.append(score)
        best_finished = max((s for s, _ in finished), default=float("-inf"))
        if not rows or max(next_scores) <= best_finished:
            break
        if i == enc.size(0) - 1:  # out of frames: live hypotheses end without <eos>
            finished += [(s, live_tokens[r] + [t]) for r, t, s in zip(rows, next_tokens, next_scores, strict=True)]
            break
        index = torch.tensor(rows, device=device)
        live_tokens = [live_tokens[r] + [t] for r, t in zip(rows, next_tokens, strict=True)]
        live_scores = torch.tensor(next_scores, device=device)
        out, (h, c) = decoder.predict(torch.tensor(next_tokens, device=device)[:, None], (h[:, index], c[:, index]))
        g = out[:, 0]
    if not finished:
        return []
    return max(finished, key=lambda item: item[0])[1]


@torch.no_grad()
def rnnt_greedy(head: RnntHead, encoder_out: Tensor, lengths: Tensor, max_symbols: int = 3) -> list[list[int]]:
    """Batched RNN-T greedy search, at most ``max_symbols`` tokens per frame."""
    batch, frames = encoder_out.size(0), encoder_out.size(1)
    device = encoder_out.device
    enc = head.encoder_proj(encoder_out)  # [B, T', J]
    history = torch.full((batch, head.context), head.sos_id, dtype=torch.long, device=device)
    pred = head.pred_proj(head.predict(history)[:, 0])  # [B, J]
    hyps: list[list[int]] = [[] for _ in range(batch)]
    for t in range(frames):
        active = lengths > t
        for _ in range(max_symbols):
            tokens = head.joint(enc[:, t], pred).argmax(dim=-1)
            emit = active & (tokens != head.blank_id)
            if not bool(emit.any()):
                break
            for b in torch.nonzero(emit).flatten().tolist():
                hyps[b].append(int(tokens[b]))
            history = torch.where(emit[:, None], torch.cat([history[:, 1:], tokens[:, None]], dim=1), history)
            pred = torch.where(emit[:, None], head.pred_proj(head.predict(history)[:, 0]), pred)
            active = emit
    return hyps


@torch.no_grad()
def rnnt_beam(head: RnntHead, encoder_out: Tensor, lengths: Tensor, beam: int = 4) -> list[list[int]]:
    """Modified beam search (one symbol per frame, k2/icefall style): hypotheses with the same
    token sequence are merged (log-sum-exp)."""
    results = []
    for b in range(encoder_out.size(0)):
        enc = head.encoder_proj(encoder_out[b, : int(lengths[b])])  # [T'_b, J]
        results.append(_rnnt_beam_one(head, enc, beam))
    return results


def _rnnt_beam_one(head: RnntHead, enc: Tensor, beam: int) -> list[int]:
    device = enc.device
    hyps: list[tuple[int, ...]] = [()]
    scores = torch.zeros(1, device=device)
    start = [head.sos_id] * head.context
    cache: dict[tuple[int, ...], Tensor] = {}

    def pred_of(tokens_list: list[tuple[int, ...]]) -> Tensor:
        missing = [t for t in tokens_list if (tuple(start) + t)[-head.context :] not in cache]
        if missing:
            keys = [(tuple(start) + t)[-head.context :] for t in missing]
            out = head.pred_proj(head.predict(torch.tensor(keys, dtype=torch.long, device=device))[:, 0])
            for key, row in zip(keys, out, strict=True):
                cache[key] = row
        return torch.stack([cache[(tuple(start) + t)[-head.context :]] for t in tokens_list])

    for t in range(enc.size(0)):
        logp = head.joint(enc[t][None], pred_of(hyps)).log_softmax(dim=-1)  # [N, V]
        total = (scores[:, None] + logp).flatten()
        top_scores, top_index = total.topk(min(beam, total.numel()))
        vocab = logp.size(1)
        merged: dict[tuple[int, ...], Tensor] = {}
        for score, index in zip(top_scores, top_index.tolist(), strict=True):
            row, token = divmod(index, vocab)
            key = hyps[row] if token == head.blank_id else hyps[row] + (token,)
            merged[key] = torch.logaddexp(merged[key], score) if key in merged else score
        hyps = list(merged)
        scores = torch.stack([merged[k] for k in hyps])
    return list(hyps[int(scores.argmax())])
