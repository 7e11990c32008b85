"""Beam searches against exhaustive enumeration, the fast Aligner decoding path against a slow
reference, and the tokens no decoder may emit.

Random tiny decoders (untrained, so the beam really differs from greedy); every beam here is
wide enough to keep every hypothesis, so it must find the best sequence of its topology.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from astra.model.aligner_decoder import AlignerDecoder
from astra.model.ctc_prefix_score import CtcPrefixScorer
from astra.model.decoding import aligner_beam, aligner_beam_search, aligner_greedy, rnnt_beam
from astra.model.presets import preset
from astra.model.rnnt_head import RnntHead

BLANK, SOS, EOS = 0, 2, 3
MASKED = (BLANK, SOS)
NEG_INF = float("-inf")


def _decoder(vocab: int, layers: int = 1, seed: int = 0, scale: float = 1.0) -> AlignerDecoder:
    torch.manual_seed(seed)
    decoder = AlignerDecoder(d_model=6, vocab_size=vocab, pred_dim=5, pred_layers=layers, joint_dim=7, dropout=0.0)
    with torch.no_grad():
        decoder.output.weight.mul_(scale)
    return decoder.eval()


def _masked_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.clone()
    logits[..., list(MASKED)] = NEG_INF
    return logits.log_softmax(dim=-1)


# --- exhaustive enumeration -------------------------------------------------------------------


def _aligner_sequences(decoder: AlignerDecoder, frames: torch.Tensor, length: int):
    """Every sequence of the Aligner topology on ``frames [T', D]`` with its ``log P``:
    ``(seq, log P, ends)``, ``ends``: ``<eos>`` read at frame ``len(seq) < length``;
    otherwise ``length`` tokens cut by the last frame. Depth-first over prefixes, one
    ``nn.LSTM`` step (teacher forcing) per prefix."""
    tokens = [v for v in range(decoder.vocab_size) if v not in MASKED + (EOS,)]

    def visit(seq, score, prev, state):
        g, state = decoder.predict(torch.tensor([[prev]]), state)
        logp = _masked_log_softmax(decoder.joint(frames[len(seq)], g[0, 0]))
        if len(seq) == length - 1:
            for v in tokens:
                yield seq + (v,), score + float(logp[v]), False
        for v in tokens if len(seq) < length - 1 else []:
            yield from visit(seq + (v,), score + float(logp[v]), v, state)
        yield seq, score + float(logp[EOS]), True

    yield from visit((), 0.0, SOS, None)


def _ctc_brute_force(log_probs: torch.Tensor) -> tuple[dict, dict]:
    """``[T', V]`` -> (log P of CTC paths whose output starts with h, log P of output == h)."""
    frames, vocab = log_probs.shape
    starts: dict[tuple, list] = {}
    exact: dict[tuple, list] = {}
    paths = list(itertools.product(range(vocab), repeat=frames))
    path_logp = log_probs[torch.arange(frames), torch.tensor(paths)].sum(dim=1)  # [V**T']
    for path, logp in zip(paths, path_logp, strict=True):
        out, prev = [], None
        for s in path:
            if s != prev and s != BLANK:
                out.append(s)
            prev = s
        exact.setdefault(tuple(out), []).append(logp)
        for n in range(len(out) + 1):
            starts.setdefault(tuple(out[:n]), []).append(logp)
    reduce = lambda d: {h: float(torch.logsumexp(torch.stack(v), 0)) for h, v in d.items()}  # noqa: E731
    return reduce(starts), reduce(exact)


def _aligner_exhaustive(decoder, frames, length, ctc_log_probs=None, weight=0.0) -> tuple[list[int], float]:
    """Best hypothesis of the Aligner topology over all sequences (:func:`_aligner_sequences`);
    with CTC, ``(1 - w) log P + w`` (``log P_ctc`` if it ends with ``<eos>``, else the prefix
    score)."""
    if ctc_log_probs is not None:
        starts, exact = _ctc_brute_force(ctc_log_probs[:length])
    best, best_score = None, NEG_INF
    for seq, score, ends in _aligner_sequences(decoder, frames[:length], length):
        if ctc_log_probs is not None:
            ctc = (exact if ends else starts).get(seq, NEG_INF)
            score = (1.0 - weight) * score + weight * ctc
        if score > best_score:
            best, best_score = list(seq), score
    return best, best_score


@pytest.mark.parametrize("layers", [1, 2])
@torch.no_grad()
def test_aligner_beam_is_the_exhaustive_argmax(layers):
    vocab, frames = 7, 4  # tokens 1, 4, 5, 6 (+ <eos>): 4**3 = 64 live hypotheses at most
    decoder = _decoder(vocab, layers, seed=layers, scale=2.0)
    enc = torch.randn(3, frames, 6) * 2
    lengths = torch.tensor([4, 3, 1])
    hyps, scores = aligner_beam_search(decoder, enc, lengths, EOS, beam=64)
    for b in range(3):
        want, want_score = _aligner_exhaustive(decoder, enc[b], int(lengths[b]))
        assert hyps[b] == want, b
        assert float(scores[b]) == pytest.approx(want_score, abs=1e-5)
    greedy = aligner_greedy(decoder, enc, lengths, EOS)
    assert greedy != hyps, "greedy is optimal here: the case tests nothing"


@pytest.mark.parametrize("weight", [0.3, 1.0])
@torch.no_grad()
def test_aligner_ctc_beam_is_the_exhaustive_argmax(weight):
    vocab, frames = 7, 4
    decoder = _decoder(vocab, seed=5, scale=3.0)
    torch.manual_seed(11)
    enc = torch.randn(2, frames, 6) * 2
    ctc = (torch.randn(2, frames, vocab) * 2).log_softmax(-1)
    lengths = torch.tensor([4, 3])
    hyps, scores = aligner_beam_search(decoder, enc, lengths, EOS, beam=64, ctc_log_probs=ctc, ctc_weight=weight,
                                       blank_id=BLANK, ctc_candidates=vocab)
    for b in range(2):
        want, want_score = _aligner_exhaustive(decoder, enc[b], int(lengths[b]), ctc[b], weight)
        assert hyps[b] == want, b
        assert float(scores[b]) == pytest.approx(want_score, abs=1e-4)


def _rnnt_head(vocab: int, seed: int) -> RnntHead:
    torch.manual_seed(seed)
    head = RnntHead(preset("tiny", dropout=0.0), vocab).eval()
    with torch.no_grad():
        head.output.weight.mul_(3.0)
    return head


def _rnnt_exhaustive(head: RnntHead, enc: torch.Tensor) -> list[int]:
    """Sequence with the largest total probability over all paths of one symbol (blank or
    a token) per frame, ``enc [T', D]``."""
    frames, vocab = enc.size(0), head.vocab_size
    proj = head.encoder_proj(enc)
    totals: dict[tuple, list[float]] = {}
    cache: dict[tuple, list[float]] = {}  # (frame, context) -> log-probs

    def log_probs(t: int, emitted: list[int]) -> list[float]:
        history = tuple(([head.sos_id] * head.context + emitted)[-head.context :])
        if (t, history) not in cache:
            pred = head.pred_proj(head.predict(torch.tensor([history]))[:, 0])
            cache[t, history] = head.joint(proj[t][None], pred).log_softmax(-1)[0].tolist()
        return cache[t, history]

    for path in itertools.product(range(vocab), repeat=frames):
        emitted: list[int] = []
        logp = 0.0
        for t, symbol in enumerate(path):
            logp += log_probs(t, emitted)[symbol]
            if symbol != head.blank_id:
                emitted.append(symbol)
        totals.setdefault(tuple(emitted), []).append(logp)
    merged = {seq: torch.logsumexp(torch.tensor(v), 0) for seq, v in totals.items()}
    return list(max(merged, key=merged.get))


@torch.no_grad()
def test_rnnt_modified_beam_is_the_exhaustive_argmax():
    vocab, frames = 5, 4  # 5**4 paths; at most 1 + 4 + 16 + 64 + 256 distinct sequences
    head = _rnnt_head(vocab, seed=3)
    torch.manual_seed(4)
    enc = torch.randn(2, frames, head.encoder_proj.in_features) * 2
    lengths = torch.tensor([4, 3])
    hyps = rnnt_beam(head, enc, lengths, beam=vocab**frames)
    for b in range(2):
        assert hyps[b] == _rnnt_exhaustive(head, enc[b, : int(lengths[b])]), b


# --- the fast Aligner path against a slow reference ------------------------------------------


def _reference_greedy(decoder, enc, lengths, first=None) -> list[list[int]]:
    """Per utterance, one ``nn.LSTM`` call and one ``decoder.joint`` per step."""
    hyps = []
    for b in range(enc.size(0)):
        prev, state, hyp = torch.tensor([[SOS]]), None, []
        for i in range(int(lengths[b])):
            g, state = decoder.predict(prev, state)
            token = int(first[b]) if i == 0 and first is not None else int(
                _masked_log_softmax(decoder.joint(enc[b, i], g[0, 0])).argmax())
            if token == EOS:
                break
            hyp.append(token)
            prev = torch.tensor([[token]])
        hyps.append(hyp)
    return hyps


def _reference_beam(decoder, enc, length, beam, first=None, ctc=None, weight=0.0) -> tuple[list[int], float]:
    """One utterance, hypotheses as Python lists (see :func:`aligner_beam_search` for the
    rules); the CTC prefix scores come from a scorer per hypothesis."""
    scorer = None if ctc is None else CtcPrefixScorer(ctc[None], torch.tensor([length]), BLANK, torch.tensor([0]))
    hyps = [([], 0.0, torch.tensor([[SOS]]), None, None if scorer is None else scorer.initial_state())]
    best, best_score = [], NEG_INF
    for i in range(length):
        candidates = []
        for tokens, score, prev, state, ctc_state in hyps:
            g, state = decoder.predict(prev, state)
            logp = _masked_log_softmax(decoder.joint(enc[i], g[0, 0]))
            if i == 0 and first is not None:
                logp = torch.full_like(logp, NEG_INF)
                logp[first] = 0.0
            psi = None if scorer is None else scorer.scores(ctc_state)[0]
            for v in range(decoder.vocab_size):
                aligner = score + float(logp[v])
                if aligner == NEG_INF:
                    continue
                total = aligner
                if scorer is not None:
                    ctc_score = float(ctc_state.full_score()[0]) if v == EOS else float(psi[v])
                    total = (1.0 - weight) * aligner + weight * ctc_score
                candidates.append((total, aligner, tokens, v, state, ctc_state))
        finished = [(t, tok + ([] if v == EOS else [v])) for t, _, tok, v, _, _ in candidates
                    if v == EOS or i == length - 1]
        if finished:
            top = max(finished, key=lambda c: c[0])
            if top[0] > best_score:
                best_score, best = top
        ongoing = sorted((c for c in candidates if c[3] != EOS), key=lambda c: -c[0])[:beam]
        if i == length - 1 or not ongoing or ongoing[0][0] <= best_score:
            break
        hyps = []
        for _, aligner, tokens, v, state, ctc_state in ongoing:
            next_ctc = None if scorer is None else scorer.extend(ctc_state, torch.tensor([0]), torch.tensor([v]))
            hyps.append((tokens + [v], aligner, torch.tensor([[v]]), state, next_ctc))
    return best, best_score


@pytest.mark.parametrize("layers", [1, 2])
@torch.no_grad()
def test_fast_greedy_equals_the_reference(layers):
    decoder = _decoder(11, layers, seed=7, scale=2.0)
    with torch.no_grad():
        decoder.output.bias[EOS] -= 2.0  # long hypotheses
    enc = torch.randn(4, 9, 6) * 2
    lengths = torch.tensor([9, 6, 1, 0])
    assert aligner_greedy(decoder, enc, lengths, EOS) == _reference_greedy(decoder, enc, lengths)
    first = torch.tensor([5, 7, 9, 4])
    assert aligner_greedy(decoder, enc, lengths, EOS, first_tokens=first) == _reference_greedy(
        decoder, enc, lengths, first)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("with_ctc", [False, True])
@torch.no_grad()
def test_fast_beam_equals_the_reference(layers, with_ctc):
    vocab = 11
    decoder = _decoder(vocab, layers, seed=8, scale=2.0)
    torch.manual_seed(9)
    enc = torch.randn(3, 8, 6) * 2
    lengths = torch.tensor([8, 5, 2])
    ctc = (torch.randn(3, 8, vocab) * 2).log_softmax(-1) if with_ctc else None
    options = dict(ctc_log_probs=ctc, ctc_weight=0.4, blank_id=BLANK, ctc_candidates=vocab) if with_ctc else {}
    for first in (None, torch.tensor([5, 6, 7])):
        hyps, scores = aligner_beam_search(decoder, enc, lengths, EOS, beam=3, first_tokens=first, **options)
        for b in range(3):
            want, want_score = _reference_beam(decoder, enc[b], int(lengths[b]), 3,
                                               None if first is None else int(first[b]),
                                               None if ctc is None else ctc[b], 0.4)
            assert hyps[b] == want, (b, first)
            assert float(scores[b]) == pytest.approx(want_score, abs=1e-5)


@torch.no_grad()
def test_fast_logits_equal_the_joint_and_follow_priming():
    decoder = _decoder(9, 2, seed=10)
    enc = torch.randn(3, 6)
    history = [[5, 6, 4], [7], []]
    primed = decoder.prime(history, torch.device("cpu"))
    stepper = decoder.stepper(3, torch.device("cpu"))
    stepper.start(SOS, primed)
    want = decoder.joint(enc, primed[0])
    want[:, list(MASKED)] = NEG_INF
    torch.testing.assert_close(stepper.logits(stepper.encoder_side(enc[:, None])[:, 0]), want, atol=1e-6, rtol=1e-6)
    stepper.advance(torch.tensor([8, 1, 4]))
    g, _ = decoder.step(torch.tensor([8, 1, 4]), primed[1])
    want = decoder.joint(enc, g)
    want[:, list(MASKED)] = NEG_INF
    torch.testing.assert_close(stepper.logits(stepper.encoder_side(enc[:, None])[:, 0]), want, atol=1e-6, rtol=1e-6)


# --- <blank> and <sos> are never emitted -------------------------------------------------------


@torch.no_grad()
def test_no_decode_path_emits_blank_or_sos():
    vocab = 9
    decoder = _decoder(vocab, seed=12)
    with torch.no_grad():  # the joint's largest logits: <blank>, then <sos>
        decoder.output.bias[BLANK] += 50.0
        decoder.output.bias[SOS] += 40.0
        decoder.output.bias[EOS] -= 20.0
    enc, lengths = torch.randn(2, 5, 6), torch.tensor([5, 3])
    ctc = torch.randn(2, 5, vocab).log_softmax(-1)
    first = torch.tensor([6, 7])
    outputs = [
        aligner_greedy(decoder, enc, lengths, EOS),
        aligner_greedy(decoder, enc, lengths, EOS, first_tokens=first),
        aligner_beam(decoder, enc, lengths, EOS, beam=3),
        aligner_beam(decoder, enc, lengths, EOS, beam=3, first_tokens=first),
        aligner_beam(decoder, enc, lengths, EOS, beam=3, ctc_log_probs=ctc, ctc_weight=0.3),
        aligner_beam(decoder, enc, lengths, EOS, beam=3, first_tokens=first, ctc_log_probs=ctc, ctc_weight=0.3),
    ]
    for hyps in outputs:
        assert [len(h) for h in hyps] == lengths.tolist()  # <eos> is unlikely: hypotheses run to the end
        assert not {BLANK, SOS} & {t for h in hyps for t in h}, hyps
    assert not math.isinf(float(aligner_beam_search(decoder, enc, lengths, EOS, beam=3)[1][0]))
