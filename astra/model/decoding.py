"""Decoders: Aligner greedy/beam (optionally joint with CTC prefix scores), RNN-T greedy/modified beam,
CTC greedy (in ctc_head).

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
    lm: BatchLm | None = None, ctc_lengths: Tensor | None = None,
) -> list[list[int]]:
    """Batched Aligner beam search, optionally joint with CTC prefix scores: the token ids of
    :func:`aligner_beam_search` (same arguments)."""
    return aligner_beam_search(
        decoder, encoder_out, lengths, eos_id, beam, first_tokens, ctc_log_probs, ctc_weight, blank_id,
        ctc_candidates, dtype, lm, ctc_lengths,
    )[0]


@torch.no_grad()
def aligner_beam_search(
    decoder: AlignerDecoder, encoder_out: Tensor, lengths: Tensor, eos_id: int, beam: int = 4,
    first_tokens: Tensor | None = None, ctc_log_probs: Tensor | None = None, ctc_weight: float = 0.0,
    blank_id: int = 0, ctc_candidates: int | None = None, dtype: torch.dtype | None = None,
    lm: BatchLm | None = None, ctc_lengths: Tensor | None = None,
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
    CTC cost). ``ctc_lengths [B]``: frames of ``ctc_log_probs`` when they differ from
    ``lengths`` (the Aligner's frames; CTC compression); default ``lengths``.

    ``lm``: shallow fusion (module doc), ``</s>`` scored at ``<eos>``; a hypothesis cut by
    the last frame gets no ``</s>`` term. The LM scores the pre-beam's tokens and ``<eos>``
    (:func:`_fused_scores`): the CTC pre-beam with CTC, else the ``lm.pre_beam(beam)`` most
    likely Aligner tokens. With ``lm.ilm_weight > 0`` the internal LM ``ilm_weight log
    P_ILM(token | history)`` is subtracted, ``P_ILM`` being the decoder's joint on zeroed
    encoder frames. A length bonus or ILM term can raise a score, so then the early stop is
    off: the search runs until every hypothesis has ended.

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
        ctc_lengths = lengths if ctc_lengths is None else ctc_lengths.to(device)
        scorer = CtcPrefixScorer(ctc_log_probs, ctc_lengths, blank_id,
                                 torch.arange(batch, device=device).repeat_interleave(beam))
        ctc = _CtcTerm(scorer, scorer.initial_state(), ctc_weight, ctc_candidates, eos_id)
    fused = None if lm is None else _LmTerm.start(lm, stepper, encoder_out, beam, eos_id)
    search = _AlignerBeam.start(batch, beam, lengths)
    for i in range(frames):
        if not bool(search.live.any()):
            break
        logp = _frame_log_probs(stepper, enc[:, i], beam, first_tokens if i == 0 else None)  # [B*K, V]
        tokens, aligner_total, total = _step_scores(search, logp, stepper, ctc, fused)  # [B, K, M] each
        end = eos_id if tokens is None else tokens.size(1) - 1  # the <eos> column
        last = search.live & (lengths == i + 1)  # on its last frame an utterance ends every hypothesis
        search.record_endings(total, last, end, tokens)
        total[:, :, end] = float("-inf")  # continue with the best non-<eos> extensions
        top_scores, top_index = total.view(batch, -1).topk(beam, dim=1)  # [B, K]
        can_improve = top_scores[:, 0] > search.best_scores
        if lm is not None and not lm.monotone:
            can_improve = top_scores[:, 0] > float("-inf")
        search.live = search.live & ~last & can_improve
        if not bool(search.live.any()):
            break
        flat, chosen = search.extend(top_index, aligner_total, tokens)
        if fused is not None:
            fused.extend(top_index)
        if ctc is not None:
            ctc.state = ctc.scorer.extend(ctc.state, flat, chosen)
        stepper.reorder(flat)
        stepper.advance(chosen)
    return search.best, search.best_scores


def _step_scores(search: _AlignerBeam, logp: Tensor, stepper: AlignerStepper, ctc: _CtcTerm | None,
                 fused: _LmTerm | None) -> tuple[Tensor | None, Tensor, Tensor]:
    """``(tokens, aligner_total, total)`` of one step of :func:`aligner_beam_search` from the
    Aligner's ``logp [B*K, V]``: without an LM every token (``tokens=None``, M = V), with one
    the candidates ``tokens [B*K, M]``, the pre-beam's then ``<eos>``; ``aligner_total [B, K,
    M]`` is ``log P_aligner`` of each extension, ``total [B, K, M]`` its search score."""
    batch, beam = search.scores.shape
    if fused is None:
        aligner_total = search.scores[:, :, None] + logp.view(batch, beam, -1)
        return None, aligner_total, _candidate_scores(aligner_total, logp, ctc)
    tokens = fused.candidates(logp, ctc.candidates if ctc is not None else fused.lm.pre_beam(beam))
    aligner_total = search.scores[:, :, None] + logp.gather(1, tokens).view(batch, beam, -1)
    return tokens, aligner_total, _fused_scores(aligner_total, tokens, ctc, fused.totals(stepper, tokens, batch, beam))


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
    utterances still searching.

    A step's extensions are columns ``[B, K, M]``: either every token (``tokens=None``,
    column v is token v, M = V) or the candidates ``tokens [B*K, M]`` of each row."""

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

    def record_endings(self, total: Tensor, last: Tensor, end: int, tokens: Tensor | None) -> None:
        """Keep the best hypothesis ending at this frame if it beats the best so far: column
        ``end`` (``<eos>``) ends one, and on an utterance's last frame (``last [B]``) so does
        its best other column. ``total [B, K, M]``: scores of the extensions."""
        batch, beam = self.scores.shape
        end_scores = total[:, :, end].clone()
        end_tokens = torch.full((batch, beam), -1, dtype=torch.long, device=total.device)
        if bool(last.any()):
            best_token = total.clone()
            best_token[:, :, end] = float("-inf")
            token_scores, columns = best_token.max(dim=-1)
            if tokens is not None:
                columns = tokens.gather(1, columns.view(-1, 1)).view(batch, beam)
            use = last[:, None] & (token_scores > end_scores)
            end_scores = torch.where(use, token_scores, end_scores)
            end_tokens = torch.where(use, columns, end_tokens)
        end_best, end_k = end_scores.max(dim=1)
        better = self.live & (end_best > self.best_scores)
        for b in torch.nonzero(better).flatten().tolist():
            k = int(end_k[b])
            tail = [int(end_tokens[b, k])] if int(end_tokens[b, k]) >= 0 else []
            self.best[b] = self.history[b, k].tolist() + tail
        self.best_scores = torch.where(better, end_best, self.best_scores)

    def extend(self, top_index: Tensor, aligner_total: Tensor, tokens: Tensor | None) -> tuple[Tensor, Tensor]:
        """The live hypotheses become the extensions ``top_index [B, K]`` (into ``K * M``) of
        ``aligner_total [B, K, M]``; returns their parent rows and tokens ``[B*K]`` each."""
        batch, beam, width = aligner_total.shape
        rows = torch.arange(batch, device=top_index.device)[:, None]
        parents = top_index // width
        chosen = top_index % width if tokens is None else tokens.view(batch, -1).gather(1, top_index)
        self.history = torch.cat([self.history[rows, parents], chosen[:, :, None]], dim=2)
        self.scores = aligner_total.view(batch, -1).gather(1, top_index)
        return (rows * beam + parents).flatten(), chosen.flatten()


@dataclass
class _LmTerm:
    """The LM shallow-fusion term of :func:`aligner_beam_search`: ``states [B*K]`` LM states
    and ``scores [B, K]`` fused LM scores of the live hypotheses; ``zero_frame [B*K, J]``:
    the joint's encoder side of a zeroed encoder frame (internal LM), ``None`` without."""

    lm: BatchLm
    states: Tensor
    scores: Tensor
    zero_frame: Tensor | None
    eos_id: int
    total: Tensor | None = None  # [B, K, M] of the last step
    next_states: Tensor | None = None  # [B*K, M] of the last step

    @classmethod
    def start(cls, lm: BatchLm, stepper: AlignerStepper, encoder_out: Tensor, beam: int, eos_id: int) -> _LmTerm:
        batch = encoder_out.size(0)
        zero_frame = None
        if lm.ilm_weight > 0:
            zero_frame = stepper.encoder_side(encoder_out.new_zeros(1, 1, encoder_out.size(2)))[0]
            zero_frame = zero_frame.expand(batch * beam, -1)
        scores = torch.zeros(batch, beam, device=encoder_out.device)
        return cls(lm, lm.initial_states(beam), scores, zero_frame, eos_id)

    def candidates(self, logp: Tensor, size: int) -> Tensor:
        """``[B*K, C+1]``: the ``size`` most likely tokens of ``logp [B*K, V]``, then ``<eos>``."""
        best = logp.topk(min(size, logp.size(1)), dim=1).indices
        return torch.cat([best, torch.full_like(best[:, :1], self.eos_id)], dim=1)

    def totals(self, stepper: AlignerStepper, tokens: Tensor, batch: int, beam: int) -> Tensor:
        """``[B, K, M]``: fused LM score of every hypothesis + candidate ``tokens [B*K, M]``
        (minus the internal LM); kept, with the next LM states, for :meth:`extend`."""
        step, self.next_states = self.lm.candidate_scores(self.states, tokens)
        if self.zero_frame is not None:  # finite: masked tokens stay -inf through the Aligner term
            ilm = stepper.logits(self.zero_frame).float().log_softmax(dim=-1).clamp(min=-1e4)
            step = step - self.lm.ilm_weight * ilm.gather(1, tokens)
        self.total = self.scores[:, :, None] + step.view(batch, beam, -1)
        return self.total

    def extend(self, top_index: Tensor) -> None:
        """Follow :meth:`_AlignerBeam.extend`: the chosen candidates' scores and LM states."""
        batch = top_index.size(0)
        self.scores = self.total.view(batch, -1).gather(1, top_index)
        self.states = self.next_states.view(batch, -1).gather(1, top_index).flatten()


@dataclass
class _CtcTerm:
    """The CTC prefix-score term of :func:`aligner_beam_search` (weight, pre-beam size, the
    live hypotheses' forward variables)."""

    scorer: CtcPrefixScorer
    state: CtcPrefixState
    weight: float
    candidates: int
    eos_id: int


def _candidate_scores(aligner_total: Tensor, logp: Tensor, ctc: _CtcTerm | None) -> Tensor:
    """Score of every one-token extension of the live hypotheses: ``[B, K, V]`` (a new tensor).

    ``aligner_total [B, K, V]``: ``log P_aligner`` of hypothesis + token (``<eos>``: the
    hypothesis ends); ``logp [B*K, V]``: the step's Aligner log-probs (the CTC pre-beam).
    Without CTC the score is ``aligner_total``; with CTC ``(1 - w) aligner_total + w psi``
    (``psi``: CTC prefix score of hypothesis + token; for ``<eos>`` ``log P_ctc`` of the
    hypothesis; ``-inf`` for tokens outside the pre-beam).
    """
    if ctc is None:
        return aligner_total.clone()
    batch, beam, vocab = aligner_total.shape
    candidates = logp.topk(min(ctc.candidates, vocab), dim=-1).indices  # [B*K, C]: the Aligner's best
    psi = torch.full_like(logp, float("-inf")).scatter_(1, candidates, ctc.scorer.scores(ctc.state, candidates))
    psi[:, ctc.eos_id] = ctc.state.full_score()
    total = (1.0 - ctc.weight) * aligner_total + ctc.weight * psi.view(batch, beam, vocab)
    return total.masked_fill(aligner_total.isneginf(), float("-inf"))  # 0 * -inf at weight 1


def _fused_scores(aligner_total: Tensor, tokens: Tensor, ctc: _CtcTerm | None, lm_total: Tensor) -> Tensor:
    """:func:`_candidate_scores` of the candidates ``tokens [B*K, M]`` (the pre-beam, then
    ``<eos>`` in the last column) plus the fused LM score ``lm_total [B, K, M]``:
    ``[B, K, M]`` (a new tensor). ``aligner_total [B, K, M]``: ``log P_aligner`` of hypothesis +
    candidate. ``<eos>`` is only scored in the last column (``-inf`` in the pre-beam's)."""
    batch, beam, width = aligner_total.shape
    total = aligner_total
    if ctc is not None:
        psi = torch.cat([ctc.scorer.scores(ctc.state, tokens[:, :-1]), ctc.state.full_score()[:, None]], dim=1)
        total = (1.0 - ctc.weight) * aligner_total + ctc.weight * psi.view(batch, beam, width)
    total = total + lm_total
    dropped = aligner_total.isneginf()  # (0 * -inf at CTC weight 1)
    dropped[:, :, :-1] |= (tokens[:, :-1] == tokens[:, -1:]).view(batch, beam, width - 1)
    return total.masked_fill(dropped, float("-inf"))


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
    """Modified beam search (one symbol per frame, k2/icefall style), batched over the
    utterances: at each frame the ``beam`` best one-symbol extensions (blank or a token) of
    an utterance's hypotheses are kept, those with the same token sequence merged (log-sum-exp).

    ``lm``: shallow fusion (module doc) on the pre-beam (the ``lm.pre_beam(beam)`` most likely
    symbols of each hypothesis, the blank among them and neutral to the LM; the others are
    dropped; the vocabulary size or more: every symbol), ``</s>`` added to each hypothesis at
    the end of the audio. ``encoder_out [B, T', D]``, ``lengths [B]``."""
    enc = head.encoder_proj(encoder_out)  # [B, T', J]
    frames = lengths.tolist()
    search = _RnntBeam.start(head, encoder_out.size(0), beam, lm, enc.device)
    for t in range(max(frames, default=0)):
        logp = head.joint(enc[:, t].repeat_interleave(beam, dim=0), search.pred()).log_softmax(dim=-1)
        total, tokens, states = search.extensions(logp.float())  # [B, K * M]
        top_scores, top_index = total.topk(beam, dim=1)  # [B, K]
        search.merge(top_scores, top_index, tokens, states, [n > t for n in frames])
    return search.best()


@dataclass
class _RnntBeam:
    """The hypotheses of :func:`rnnt_beam`: ``hyps[b]`` (token tuples, at most K) and
    ``scores [B, K]`` (``-inf``: no hypothesis in that slot), with ``lm_states [B, K]``."""

    head: RnntHead
    hyps: list[list[tuple[int, ...]]]
    scores: Tensor
    lm: BatchLm | None
    lm_states: Tensor | None
    cache: dict[tuple[int, ...], Tensor]
    not_proposed: Tensor | None = None  # with an LM: ``</s>`` (only at the end), unless the weight is 0

    @classmethod
    def start(cls, head: RnntHead, batch: int, beam: int, lm: BatchLm | None, device) -> _RnntBeam:
        scores = torch.full((batch, beam), float("-inf"), device=device)
        scores[:, 0] = 0.0
        if lm is None:
            return cls(head, [[()] for _ in range(batch)], scores, None, None, {})
        if head.blank_id not in lm.fusion.neutral_ids:
            raise ValueError(f"RNN-T beam + LM: the blank ({head.blank_id}) must be one of the LM's neutral ids")
        states = lm.initial_states(beam).view(batch, beam)
        eos = torch.tensor([lm.eos_id], device=device) if lm.weight > 0 else None
        return cls(head, [[()] for _ in range(batch)], scores, lm, states, {}, eos)

    def pred(self) -> Tensor:
        """``[B*K, J]``: the prediction network's output of every slot (cached per context;
        an empty slot reads the start context)."""
        head, beam = self.head, self.scores.size(1)
        start = (head.sos_id,) * head.context
        keys = [(start + h)[-head.context :] for hyps in self.hyps for h in hyps + [()] * (beam - len(hyps))]
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            tokens = torch.tensor(missing, dtype=torch.long, device=self.scores.device)
            for key, row in zip(missing, head.pred_proj(head.predict(tokens)[:, 0]), strict=True):
                self.cache[key] = row
        return torch.stack([self.cache[k] for k in keys])

    def extensions(self, logp: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Scores of the one-symbol extensions from the joint's ``logp [B*K, V]`` (overwritten
        with an LM): ``(total [B, K * M], tokens, next LM states)``; without an LM every symbol
        (M = V, the token is the index mod V, no tensors), with one the pre-beam: the C most
        likely symbols of each hypothesis, blank among them (M = C; the blank is neutral to the
        LM). A blank outside them has at most 1/(C + 1) of the probability and is dropped like
        a token; at C >= K (the default C is 2K) that never changes the top K without the LM terms."""
        batch, beam = self.scores.shape
        vocab = logp.size(1)
        if self.lm is None:
            return (self.scores[:, :, None] + logp.view(batch, beam, vocab)).view(batch, -1), None, None
        if self.not_proposed is not None:
            logp.index_fill_(1, self.not_proposed, float("-inf"))
        emit, tokens = logp.topk(min(self.lm.pre_beam(beam), vocab), dim=1)  # [B*K, C]
        fused, nxt = self.lm.candidate_scores(self.lm_states.flatten(), tokens)  # few ops: it runs every frame
        total = emit.add_(self.scores.view(-1, 1)).add_(fused)
        return total.view(batch, -1), tokens.view(batch, -1), nxt.view(batch, -1)

    def merge(self, top_scores: Tensor, top_index: Tensor, tokens: Tensor | None, states: Tensor | None,
              active: list[bool]) -> None:
        """The chosen extensions ``top_index [B, K]`` (into :meth:`extensions`' ``K * M``)
        become the hypotheses of the ``active`` utterances, merged by token sequence."""
        batch, beam = self.scores.shape
        width = tokens.size(1) // beam if tokens is not None else self.head.vocab_size
        parents = (top_index // width).tolist()
        chosen = (top_index % width if tokens is None else tokens.gather(1, top_index)).tolist()
        lm_states = None if states is None else states.gather(1, top_index).tolist()
        top, scores = top_scores.tolist(), self.scores.tolist()
        old_states = None if self.lm_states is None else self.lm_states.tolist()
        for b in (b for b in range(batch) if active[b]):
            merged: dict[tuple[int, ...], float] = {}
            state_of: dict[tuple[int, ...], int] = {}
            for k, (score, parent, token) in enumerate(zip(top[b], parents[b], chosen[b], strict=True)):
                if score == float("-inf"):
                    continue
                hyp = self.hyps[b][parent]
                key = hyp if token == self.head.blank_id else hyp + (token,)
                if key in merged:
                    high, low = max(merged[key], score), min(merged[key], score)
                    score = high + math.log1p(math.exp(low - high))
                else:
                    state_of[key] = 0 if lm_states is None else lm_states[b][k]
                merged[key] = score
            self.hyps[b] = list(merged)
            pad = beam - len(merged)
            scores[b] = [merged[h] for h in self.hyps[b]] + [float("-inf")] * pad
            if old_states is not None:
                old_states[b] = [state_of[h] for h in self.hyps[b]] + [0] * pad
        self.scores = torch.tensor(scores, device=self.scores.device)
        if old_states is not None:
            self.lm_states = torch.tensor(old_states, dtype=torch.long, device=self.scores.device)

    def best(self) -> list[list[int]]:
        """The best hypothesis of each utterance, ``</s>`` scored by the LM."""
        scores = self.scores
        if self.lm is not None:
            scores = scores + self.lm.end_scores(self.lm_states.flatten()).view_as(scores)
        return [list(hyps[k]) for hyps, k in zip(self.hyps, scores.argmax(dim=1).tolist(), strict=True)]
