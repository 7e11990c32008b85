"""Decoders: Aligner greedy/beam (optionally joint with CTC prefix scores), RNN-T greedy/modified beam, CTC greedy (in ctc_head).

Every beam search takes an optional ``lm`` (:class:`astra.lm.fusion.BatchLm`): n-gram LM
shallow fusion, ``+ lm_weight log P_LM(piece | history) + length_bonus`` per piece and
``lm_weight log P_LM(</s> | history)`` where the hypothesis ends.

Legend: B batch, T' encoder frames, U tokens, D model dim, P prediction width, V vocabulary.
All functions run under ``torch.no_grad()`` on encoder outputs and return token ids per
utterance, without ``<sos>``/``<eos>``/blank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from astra.lm.fusion import BatchLm
from astra.model.aligner_decoder import AlignerDecoder, AlignerStepper
from astra.model.ctc_prefix_score import CtcPrefixScorer, CtcPrefixState
from astra.model.rnnt_head import RnntHead

CTC_CANDIDATES_PER_BEAM = 1.5  # aligner_beam with CTC: tokens scored by CTC per hypothesis, x beam


@torch.no_grad()
def aligner_greedy(
    decoder: AlignerDecoder,
    encoder_out: Tensor,
    lengths: Tensor,
    eos_id: int,
    start: tuple[Tensor, tuple[Tensor, Tensor]] | None = None,
    first_tokens: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> list[list[int]]:
    """Batched greedy Aligner decoding, O(U): token i is read from frame i.

    One LSTM step per emitted token (:class:`~astra.model.aligner_decoder.AlignerStepper`); an utterance stops at
    ``<eos>`` or at its last frame. ``<blank>`` and ``<sos>`` are never emitted.

    Args:
        encoder_out: ``[B, T', D]``; lengths ``[B]``.
        start: optional ``(g [B, P], state)`` from :meth:`AlignerDecoder.prime` (long form);
            default: ``<sos>`` and zero state.
        first_tokens: optional ``[B]`` ids forced as the first output (frame 0), e.g. the
            ``<lang:xx>`` tag a model trained with language tags emits first; it is part of
            the returned ids like a decoded one.
        dtype: compute dtype of the decoder (default: its parameters'), e.g. ``torch.bfloat16``.
    """
    batch, frames = encoder_out.size(0), encoder_out.size(1)
    device = encoder_out.device
    stepper = decoder.stepper(batch, device, dtype)
    stepper.start(decoder.sos_id, start)
    enc = stepper.encoder_side(encoder_out)  # [B, T', J]
    emitted = torch.full((batch, frames), eos_id, dtype=torch.long, device=device)
    lengths = lengths.to(device)
    active = lengths > 0
    for i in range(frames):
        if not bool(active.any()):
            break
        if i == 0 and first_tokens is not None:
            tokens = first_tokens.to(device=device, dtype=torch.long)
        else:
            tokens = stepper.logits(enc[:, i]).argmax(dim=-1)
        tokens = tokens.masked_fill(~active, eos_id)
        emitted[:, i] = tokens
        active = active & (tokens != eos_id) & (lengths > i + 1)
        if bool(active.any()):
            stepper.advance(tokens)
    hyps = []
    for row in emitted.tolist():
        hyps.append(row[: row.index(eos_id)] if eos_id in row else row)
    return hyps


@torch.no_grad()
def aligner_beam(
    decoder: AlignerDecoder, encoder_out: Tensor, lengths: Tensor, eos_id: int, beam: int = 4,
    first_tokens: Tensor | None = None, ctc_log_probs: Tensor | None = None, ctc_weight: float = 0.0,
    blank_id: int = 0, ctc_candidates: int | None = None, dtype: torch.dtype | None = None,
    lm: BatchLm | None = None,
) -> list[list[int]]:
    """Batched Aligner beam search, optionally joint with CTC prefix scores: the token ids of
    :func:`aligner_beam_search` (same arguments)."""
    return aligner_beam_search(
        decoder, encoder_out, lengths, eos_id, beam, first_tokens, ctc_log_probs, ctc_weight, blank_id,
        ctc_candidates, dtype, lm,
    )[0]


@torch.no_grad()
def aligner_beam_search(
    decoder: AlignerDecoder, encoder_out: Tensor, lengths: Tensor, eos_id: int, beam: int = 4,
    first_tokens: Tensor | None = None, ctc_log_probs: Tensor | None = None, ctc_weight: float = 0.0,
    blank_id: int = 0, ctc_candidates: int | None = None, dtype: torch.dtype | None = None,
    lm: BatchLm | None = None,
) -> tuple[list[list[int]], Tensor]:
    """Batched Aligner beam search, optionally joint with CTC prefix scores.

    At frame i each of the ``beam`` live hypotheses of an utterance is extended by every
    token but ``<blank>``/``<sos>``; ``<eos>`` ends a hypothesis (so does the utterance's
    last frame, like greedy decoding); the ``beam`` best continuations stay live. An
    utterance stops when no live hypothesis can beat its best finished one (scores only
    decrease); the best finished hypothesis is returned. ``first_tokens [B]``: as in
    :func:`aligner_greedy`, every hypothesis starts with it (at no cost).

    Score of a hypothesis h (:func:`_candidate_scores`): ``(1 - w) log P_aligner(h) + w
    psi(h)``, ``w = ctc_weight``, where ``psi`` is the CTC prefix score of ``ctc_log_probs
    [B, T', V]`` (blank ``blank_id``; :mod:`astra.model.ctc_prefix_score`) and, for a
    finished hypothesis, ``log P_ctc(h)``: CTC vetoes words the audio does not contain and
    endings that leave audio unexplained (joint CTC/attention decoding, Watanabe et al.
    2017). A hypothesis cut by the last frame keeps its prefix score. ``ctc_log_probs=None``:
    the Aligner alone. ``ctc_candidates``: CTC scores only each hypothesis'
    ``ctc_candidates`` most likely Aligner tokens, the others are dropped (ESPnet's pre-beam;
    default ``ceil(1.5 * beam)``; the vocabulary size or more: every token, ~V / C times the
    CTC cost).

    ``lm``: shallow fusion (module doc), ``</s>`` scored at ``<eos>``; a hypothesis cut by
    the last frame gets no ``</s>`` term. With ``lm.ilm_weight > 0`` the internal LM
    ``ilm_weight log P_ILM(token | history)`` is subtracted, ``P_ILM`` being the decoder's
    joint on zeroed encoder frames. A length bonus or ILM term can raise a score, so then the
    early stop is off: the search runs until every hypothesis has ended.

    Returns:
        ``(hyps, scores [B])``: the best finished hypothesis of each utterance and its score
        (``-inf`` and ``[]`` for an empty utterance).
    """
    ctc_candidates = _check_beam_options(ctc_log_probs, ctc_weight, ctc_candidates, beam)
    batch, frames = encoder_out.size(0), encoder_out.size(1)
    device = encoder_out.device
    lengths = lengths.to(device)
    stepper = decoder.stepper(batch * beam, device, dtype)  # rows b * beam + k
    stepper.start(decoder.sos_id)
    enc = stepper.encoder_side(encoder_out)  # [B, T', J]
    ctc = None
    if ctc_weight > 0:
        scorer = CtcPrefixScorer(ctc_log_probs, lengths, blank_id, torch.arange(batch, device=device).repeat_interleave(beam))
        ctc = _CtcTerm(scorer, scorer.initial_state(), ctc_weight, ctc_candidates, eos_id)
    fused = None if lm is None else _LmTerm.start(lm, stepper, encoder_out, beam)
    search = _AlignerBeam.start(batch, beam, lengths)
    for i in range(frames):
        if not bool(search.live.any()):
            break
        logp = _frame_log_probs(stepper, enc[:, i], beam, first_tokens if i == 0 else None)  # [B*K, V]
        aligner_total = search.scores[:, :, None] + logp.view(batch, beam, -1)  # [B, K, V]
        lm_total = None if fused is None else fused.totals(stepper, batch, beam)
        total = _candidate_scores(aligner_total, logp, ctc, lm_total)  # [B, K, V]
        last = search.live & (lengths == i + 1)  # on its last frame an utterance ends every hypothesis
        search.record_endings(total, last, eos_id)
        total[:, :, eos_id] = float("-inf")  # continue with the best non-<eos> extensions
        top_scores, top_index = total.view(batch, -1).topk(beam, dim=1)  # [B, K]
        can_improve = top_scores[:, 0] > search.best_scores
        if lm is not None and not lm.monotone:
            can_improve = top_scores[:, 0] > float("-inf")
        search.live = search.live & ~last & can_improve
        if not bool(search.live.any()):
            break
        flat, tokens = search.extend(top_index, aligner_total)
        if fused is not None:
            fused.extend(lm_total, top_index, flat, tokens)
        if ctc is not None:
            ctc.state = ctc.scorer.extend(ctc.state, flat, tokens)
        stepper.reorder(flat)
        stepper.advance(tokens)
    return search.best, search.best_scores


def _check_beam_options(ctc_log_probs: Tensor | None, ctc_weight: float, ctc_candidates: int | None,
                        beam: int) -> int:
    """``ValueError`` for inconsistent CTC options of :func:`aligner_beam_search`; returns the
    CTC pre-beam size (default ``ceil(1.5 * beam)``)."""
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    if ctc_weight > 0 and ctc_log_probs is None:
        raise ValueError("ctc_weight > 0 needs ctc_log_probs")
    if ctc_candidates is None:
        ctc_candidates = math.ceil(CTC_CANDIDATES_PER_BEAM * beam)
    if ctc_candidates < 1:
        raise ValueError(f"ctc_candidates must be >= 1, got {ctc_candidates}")
    return ctc_candidates


def _frame_log_probs(stepper: AlignerStepper, frame: Tensor, beam: int, forced: Tensor | None) -> Tensor:
    """``[B*K, V]`` Aligner log-probs of every live hypothesis at one frame (``frame [B, J]``,
    from :meth:`AlignerStepper.encoder_side`); ``forced [B]``: only that token, at no cost."""
    logp = stepper.logits(frame.repeat_interleave(beam, dim=0)).float().log_softmax(dim=-1)
    if forced is None:
        return logp
    forced = forced.to(device=logp.device, dtype=torch.long).repeat_interleave(beam)[:, None]
    return torch.full_like(logp, float("-inf")).scatter_(1, forced, 0.0)


@dataclass
class _AlignerBeam:
    """The hypotheses of :func:`aligner_beam_search`: ``scores [B, K]`` ``log P_aligner`` of
    the live ones (rows b * K + k, ``-inf``: none), their tokens ``history [B, K, i]``, the
    best finished one per utterance (``best``, ``best_scores [B]``) and ``live [B]``, the
    utterances still searching."""

    scores: Tensor
    history: Tensor
    best_scores: Tensor
    best: list[list[int]]
    live: Tensor

    @classmethod
    def start(cls, batch: int, beam: int, lengths: Tensor) -> _AlignerBeam:
        """One empty live hypothesis per utterance with frames (``lengths [B]``)."""
        device = lengths.device
        scores = torch.full((batch, beam), float("-inf"), device=device)
        scores[:, 0] = 0.0
        return cls(scores, torch.zeros(batch, beam, 0, dtype=torch.long, device=device),
                   torch.full((batch,), float("-inf"), device=device), [[] for _ in range(batch)], lengths > 0)

    def record_endings(self, total: Tensor, last: Tensor, eos_id: int) -> None:
        """Keep the best hypothesis ending at this frame if it beats the best so far:
        ``<eos>`` ends one, and on an utterance's last frame (``last [B]``) so does its best
        other token. ``total [B, K, V]``: scores of every one-token extension."""
        batch, beam = self.scores.shape
        end_scores = total[:, :, eos_id].clone()
        end_tokens = torch.full((batch, beam), -1, dtype=torch.long, device=total.device)
        if bool(last.any()):
            best_token = total.clone()
            best_token[:, :, eos_id] = float("-inf")
            token_scores, tokens = best_token.max(dim=-1)
            use = last[:, None] & (token_scores > end_scores)
            end_scores = torch.where(use, token_scores, end_scores)
            end_tokens = torch.where(use, tokens, end_tokens)
        end_best, end_k = end_scores.max(dim=1)
        better = self.live & (end_best > self.best_scores)
        for b in torch.nonzero(better).flatten().tolist():
            k = int(end_k[b])
            tail = [int(end_tokens[b, k])] if int(end_tokens[b, k]) >= 0 else []
            self.best[b] = self.history[b, k].tolist() + tail
        self.best_scores = torch.where(better, end_best, self.best_scores)

    def extend(self, top_index: Tensor, aligner_total: Tensor) -> tuple[Tensor, Tensor]:
        """The live hypotheses become the extensions ``top_index [B, K]`` (into ``K * V``) of
        ``aligner_total [B, K, V]``; returns their parent rows and tokens ``[B*K]`` each."""
        batch, beam, vocab = aligner_total.shape
        rows = torch.arange(batch, device=top_index.device)[:, None]
        parents, tokens = top_index // vocab, top_index % vocab
        self.history = torch.cat([self.history[rows, parents], tokens[:, :, None]], dim=2)
        self.scores = aligner_total.view(batch, -1).gather(1, top_index)
        return (rows * beam + parents).flatten(), tokens.flatten()


@dataclass
class _LmTerm:
    """The LM shallow-fusion term of :func:`aligner_beam_search`: ``states [B*K]`` LM states
    and ``scores [B, K]`` fused LM scores of the live hypotheses; ``zero_frame [B*K, J]``:
    the joint's encoder side of a zeroed encoder frame (internal LM), ``None`` without."""

    lm: BatchLm
    states: Tensor
    scores: Tensor
    zero_frame: Tensor | None

    @classmethod
    def start(cls, lm: BatchLm, stepper: AlignerStepper, encoder_out: Tensor, beam: int) -> _LmTerm:
        batch = encoder_out.size(0)
        zero_frame = None
        if lm.ilm_weight > 0:
            zero_frame = stepper.encoder_side(encoder_out.new_zeros(1, 1, encoder_out.size(2)))[0]
            zero_frame = zero_frame.expand(batch * beam, -1)
        return cls(lm, lm.initial_states(beam), torch.zeros(batch, beam, device=encoder_out.device), zero_frame)

    def totals(self, stepper: AlignerStepper, batch: int, beam: int) -> Tensor:
        """``[B, K, V]``: fused LM score of every hypothesis + token (minus the internal LM)."""
        step = self.lm.token_scores(self.states)  # [B*K, V]
        if self.zero_frame is not None:  # finite: masked tokens stay -inf through the Aligner term
            ilm = stepper.logits(self.zero_frame).float().log_softmax(dim=-1).clamp(min=-1e4)
            step = step - self.lm.ilm_weight * ilm
        return self.scores[:, :, None] + step.view(batch, beam, -1)

    def extend(self, lm_total: Tensor, top_index: Tensor, parents: Tensor, tokens: Tensor) -> None:
        """Follow :meth:`_AlignerBeam.extend` (``parents``, ``tokens [B*K]``)."""
        batch = lm_total.size(0)
        self.scores = lm_total.view(batch, -1).gather(1, top_index)
        self.states = self.lm.advance(self.states[parents], tokens)


@dataclass
class _CtcTerm:
    """The CTC prefix-score term of :func:`aligner_beam_search` (weight, pre-beam size, the
    live hypotheses' forward variables)."""

    scorer: CtcPrefixScorer
    state: CtcPrefixState
    weight: float
    candidates: int
    eos_id: int


def _candidate_scores(aligner_total: Tensor, logp: Tensor, ctc: _CtcTerm | None,
                      lm_total: Tensor | None = None) -> Tensor:
    """Score of every one-token extension of the live hypotheses: ``[B, K, V]`` (a new tensor).

    ``aligner_total [B, K, V]``: ``log P_aligner`` of hypothesis + token (``<eos>``: the
    hypothesis ends); ``logp [B*K, V]``: the step's Aligner log-probs (the CTC pre-beam).
    Without CTC the score is ``aligner_total``; with CTC ``(1 - w) aligner_total + w psi``
    (``psi``: CTC prefix score of hypothesis + token; for ``<eos>`` ``log P_ctc`` of the
    hypothesis; ``-inf`` for tokens outside the pre-beam). Every score term of a candidate
    is added here; ``lm_total [B, K, V]``: the fused LM score of hypothesis + token (see
    :func:`aligner_beam_search`), added to the total.
    """
    if ctc is None:
        return aligner_total.clone() if lm_total is None else aligner_total + lm_total
    batch, beam, vocab = aligner_total.shape
    candidates = logp.topk(min(ctc.candidates, vocab), dim=-1).indices  # [B*K, C]: the Aligner's best
    psi = torch.full_like(logp, float("-inf")).scatter_(1, candidates, ctc.scorer.scores(ctc.state, candidates))
    psi[:, ctc.eos_id] = ctc.state.full_score()
    total = (1.0 - ctc.weight) * aligner_total + ctc.weight * psi.view(batch, beam, vocab)
    if lm_total is not None:
        total = total + lm_total
    return total.masked_fill(aligner_total.isneginf(), float("-inf"))  # 0 * -inf at weight 1


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
def rnnt_beam(head: RnntHead, encoder_out: Tensor, lengths: Tensor, beam: int = 4,
              lm: BatchLm | None = None) -> list[list[int]]:
    """Modified beam search (one symbol per frame, k2/icefall style): hypotheses with the same
    token sequence are merged (log-sum-exp). ``lm``: shallow fusion (module doc) on every
    non-blank token, ``</s>`` added to each hypothesis at the end of the audio."""
    results = []
    starts = lm.initial_states() if lm is not None else None
    for b in range(encoder_out.size(0)):
        enc = head.encoder_proj(encoder_out[b, : int(lengths[b])])  # [T'_b, J]
        results.append(_rnnt_beam_one(head, enc, beam, lm, None if starts is None else starts[b : b + 1]))
    return results


def _rnnt_beam_one(head: RnntHead, enc: Tensor, beam: int, lm: BatchLm | None = None,
                   lm_start: Tensor | None = None) -> list[int]:
    device = enc.device
    hyps: list[tuple[int, ...]] = [()]
    scores = torch.zeros(1, device=device)
    lm_states = lm_start  # [N] LM state of each hypothesis
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
        vocab = logp.size(1)
        if lm is not None:
            fused = lm.token_scores(lm_states)  # [N, V]
            fused[:, head.blank_id] = 0.0  # blank moves in time, not in text
            if lm.fusion.weight > 0:
                fused[:, lm.fusion.eos_id] = float("-inf")  # </s> only at the end
            logp = logp + fused
        total = (scores[:, None] + logp).flatten()
        top_scores, top_index = total.topk(min(beam, total.numel()))
        merged: dict[tuple[int, ...], float] = {}
        merged_states: dict[tuple[int, ...], tuple[int, int]] = {}  # key -> (row, token)
        for score, index in zip(top_scores.tolist(), top_index.tolist(), strict=True):
            row, token = divmod(index, vocab)
            key = hyps[row] if token == head.blank_id else hyps[row] + (token,)
            if key in merged:
                high, low = max(merged[key], score), min(merged[key], score)
                score = high + math.log1p(math.exp(low - high))
            merged[key] = score
            merged_states.setdefault(key, (row, token))
        hyps = list(merged)
        scores = torch.tensor([merged[k] for k in hyps], device=device)
        if lm is not None:  # a merged key has one token sequence, hence one LM state
            rows, tokens = (torch.tensor(x, dtype=torch.long, device=device) for x in zip(*merged_states.values(), strict=True))
            lm_states = torch.where(tokens == head.blank_id, lm_states[rows], lm.advance(lm_states[rows], tokens))
    if lm is not None:
        scores = scores + lm.end_scores(lm_states)
    return list(hyps[int(scores.argmax())])
