"""CTC prefix beam search (astra.model.ctc_beam_search) against exhaustive enumeration."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from astra.model.ctc_beam_search import ctc_beam_nbest, ctc_beam_search, utterance_candidates
from tests.test_lm_fusion import BLANK, EOS, PEAKED, A, B, C, V, _fusion

LABELS = (A, B, C)


def _log_probs(seed: int, batch: int, frames: int) -> torch.Tensor:
    """``[B, T', V]`` random CTC log-probs over blank and A, B, C (other ids impossible)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, frames, V, generator=g) * 2.0
    impossible = torch.ones(V, dtype=torch.bool)
    impossible[[BLANK, *LABELS]] = False
    return logits.masked_fill(impossible, float("-inf")).log_softmax(dim=-1)


def _ctc_log_prob(log_probs: torch.Tensor, length: int, labels: tuple[int, ...]) -> float:
    """``log P_ctc(labels)`` of one utterance ``[T', V]`` by torch's CTC loss."""
    target = torch.tensor([labels], dtype=torch.long) if labels else torch.zeros(1, 0, dtype=torch.long)
    loss = F.ctc_loss(log_probs[None, :length].transpose(0, 1), target, torch.tensor([length]),
                      torch.tensor([len(labels)]), blank=BLANK, reduction="sum")
    return -float(loss)


def _lm_log_prob(batch_lm, row: int, labels: tuple[int, ...]) -> float:
    """The fused LM score of ``labels`` + ``</s>`` for utterance ``row``, token by token."""
    state, total = batch_lm.starts[row : row + 1], 0.0
    for token in labels:
        score, nxt = batch_lm.candidate_scores(state, torch.tensor([[token]]))
        total, state = total + float(score[0, 0]), nxt[:, 0]
    return total + float(batch_lm.end_scores(state)[0])


def _exhaustive(log_probs, lengths, batch_lm=None):
    """The best label sequence of each utterance over every sequence of <= T' labels."""
    out = []
    for b, length in enumerate(lengths.tolist()):
        candidates = [seq for n in range(length + 1) for seq in itertools.product(LABELS, repeat=n)]
        def score(seq, b=b, length=length):
            lm = 0.0 if batch_lm is None else _lm_log_prob(batch_lm, b, seq)
            return _ctc_log_prob(log_probs[b], length, seq) + lm
        best = max(candidates, key=score)
        out.append((list(best), score(best)))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_is_the_exhaustive_best_sequence(seed):
    log_probs, lengths = _log_probs(seed, 3, 4), torch.tensor([4, 3, 2])
    hyps, scores = ctc_beam_search(log_probs, lengths, BLANK, beam=81, min_token_prob=0.0)
    for (ref, ref_score), hyp, score in zip(_exhaustive(log_probs, lengths), hyps, scores.tolist(), strict=True):
        assert hyp == ref
        assert score == pytest.approx(ref_score, abs=1e-4)


@pytest.mark.parametrize("seed", [3, 4])
def test_wide_beam_with_lm_is_the_exhaustive_best_fused_sequence(seed):
    log_probs, lengths = _log_probs(seed, 2, 4), torch.tensor([4, 4])
    batch_lm = _fusion(weight=0.8, en=PEAKED["a"], de=PEAKED["b"]).for_batch(["en", "de"], "cpu")
    hyps, scores = ctc_beam_search(log_probs, lengths, BLANK, beam=81, lm=batch_lm, min_token_prob=0.0)
    for (ref, ref_score), hyp, score in zip(_exhaustive(log_probs, lengths, batch_lm), hyps, scores.tolist(),
                                            strict=True):
        assert hyp == ref
        assert score == pytest.approx(ref_score, abs=1e-4)


@pytest.mark.parametrize("seed", [5, 6])
def test_wide_beam_nbest_is_the_exhaustive_top_n_with_its_score_parts(seed):
    log_probs, lengths = _log_probs(seed, 2, 4), torch.tensor([4, 3])
    batch_lm = _fusion(weight=0.8, en=PEAKED["a"], de=PEAKED["b"]).for_batch(["en", "de"], "cpu")
    nbest = ctc_beam_nbest(log_probs, lengths, BLANK, beam=81, nbest=5, lm=batch_lm, min_token_prob=0.0)
    for b, length in enumerate(lengths.tolist()):
        every = [seq for n in range(length + 1) for seq in itertools.product(LABELS, repeat=n)]
        ctc = {seq: _ctc_log_prob(log_probs[b], length, seq) for seq in every}
        lm = {seq: _lm_log_prob(batch_lm, b, seq) for seq in every}
        top = sorted(every, key=lambda seq: -(ctc[seq] + lm[seq]))[:5]
        assert [tuple(h.tokens) for h in nbest[b]] == top
        for h in nbest[b]:
            assert h.ctc_score == pytest.approx(ctc[tuple(h.tokens)], abs=1e-4)
            assert h.lm_score == pytest.approx(lm[tuple(h.tokens)], abs=1e-4)
    top1, _ = ctc_beam_search(log_probs, lengths, BLANK, beam=81, lm=batch_lm, min_token_prob=0.0)
    assert top1 == [found[0].tokens for found in nbest]


def test_nbest_of_an_utterance_without_frames_is_empty_and_bad_sizes_are_refused():
    log_probs = _log_probs(7, 2, 3)
    nbest = ctc_beam_nbest(log_probs, torch.tensor([0, 3]), BLANK, beam=3, nbest=2)
    assert nbest[0] == [] and len(nbest[1]) == 2
    with pytest.raises(ValueError, match="nbest"):
        ctc_beam_nbest(log_probs, torch.tensor([3, 3]), BLANK, nbest=0)


def test_peaked_lm_decides_between_tied_ctc_hypotheses():
    # frame 1 is a tie between A and B; each language's LM prefers its own letter
    probs = torch.full((2, 3, V), 1e-9)
    probs[:, 0, C] = 1.0
    probs[:, 1, A] = probs[:, 1, B] = 0.5
    probs[:, 2, BLANK] = 1.0
    log_probs = (probs / probs.sum(-1, keepdim=True)).log()
    batch_lm = _fusion(weight=1.0, en=["c a", "c a a"], de=["c b", "c b b"]).for_batch(["en", "de"], "cpu")
    hyps, _ = ctc_beam_search(log_probs, torch.tensor([3, 3]), BLANK, beam=4, lm=batch_lm)
    assert hyps == [[C, A], [C, B]]


def test_narrow_beam_and_default_candidates_find_the_clear_best_path():
    probs = torch.full((1, 5, V), 1e-6)
    for t, token in enumerate([A, A, BLANK, A, C]):
        probs[0, t, token] = 1.0
    log_probs = (probs / probs.sum(-1, keepdim=True)).log()
    hyps, scores = ctc_beam_search(log_probs, torch.tensor([5]), BLANK, beam=1)
    assert hyps == [[A, A, C]] and scores.item() > -1e-3


def test_candidates_are_tokens_likely_somewhere_padded_with_blank():
    probs = torch.full((2, 2, V), 1e-6)
    probs[0, 0, A], probs[0, 1, B] = 1.0, 1.0  # utterance 0: A and B
    probs[1, 0, C], probs[1, 1, C] = 1.0, 1.0  # utterance 1: C only
    log_probs = (probs / probs.sum(-1, keepdim=True)).log()
    cand = utterance_candidates(log_probs, torch.tensor([2, 2]), BLANK, 1e-3)
    assert sorted(cand[0].tolist()) == [A, B] and sorted(cand[1].tolist()) == [BLANK, C]
    assert utterance_candidates(log_probs, torch.tensor([1, 2]), BLANK, 1e-3)[0].tolist() == [A]  # frame 1 is padding
    assert EOS in utterance_candidates(log_probs, torch.tensor([2, 2]), BLANK, 0.0)[0].tolist()


def test_empty_utterance_and_bad_options():
    log_probs = _log_probs(0, 2, 3)
    hyps, scores = ctc_beam_search(log_probs, torch.tensor([0, 3]), BLANK, beam=2)
    assert hyps[0] == [] and scores[0].isneginf() and scores[1].isfinite()
    with pytest.raises(ValueError, match="beam"):
        ctc_beam_search(log_probs, torch.tensor([3, 3]), BLANK, beam=0)
    with pytest.raises(ValueError, match="min_token_prob"):
        ctc_beam_search(log_probs, torch.tensor([3, 3]), BLANK, min_token_prob=1.0)


@pytest.mark.parametrize("seed", [5, 6])
def test_wide_beam_with_a_length_bonus_is_the_exhaustive_best(seed):
    """A bonus makes the fused score non-monotone (end detection instead of the bound)."""
    log_probs, lengths = _log_probs(seed, 2, 4), torch.tensor([4, 3])
    batch_lm = _fusion(weight=0.5, length_bonus=1.5, en=PEAKED["a"], de=PEAKED["b"]).for_batch(["en", "de"], "cpu")
    hyps, scores = ctc_beam_search(log_probs, lengths, BLANK, beam=81, lm=batch_lm, min_token_prob=0.0)
    for (ref, ref_score), hyp, score in zip(_exhaustive(log_probs, lengths, batch_lm), hyps, scores.tolist(),
                                            strict=True):
        assert hyp == ref
        assert score == pytest.approx(ref_score, abs=1e-4)


def test_end_detection_stops_a_bonus_search_early_with_the_same_result(monkeypatch):
    """With a length bonus the search used to run until the hypotheses ran out of frames (T'
    steps); end detection stops after the best ending falls far behind, same hypotheses."""
    from astra.model import ctc_beam_search as module

    g = torch.Generator().manual_seed(7)
    probs = torch.full((3, 40, V), 1e-4)
    probs[:, :, BLANK] = 1.0
    for b in range(3):  # 6 labels spread over 40 frames: a short output, many frames
        for t in torch.randperm(40, generator=g)[:6].tolist():
            probs[b, t, LABELS[(b + t) % 3]] = 3.0
    log_probs = (probs / probs.sum(-1, keepdim=True)).log()
    lengths = torch.tensor([40, 35, 30])
    batch_lm = _fusion(weight=0.3, length_bonus=2.0, en=["a b c", "c b a"]).for_batch(["en"] * 3, "cpu")
    steps = []
    real_scores = module.CtcPrefixScorer.scores
    monkeypatch.setattr(module.CtcPrefixScorer, "scores", lambda *a: steps.append(1) or real_scores(*a))
    full = ctc_beam_search(log_probs, lengths, BLANK, beam=4, lm=batch_lm, end_margin=float("inf"))
    full_steps, steps[:] = len(steps), []
    early = ctc_beam_search(log_probs, lengths, BLANK, beam=4, lm=batch_lm)
    assert early[0] == full[0] and torch.equal(early[1], full[1])
    assert max(len(h) for h in full[0]) <= 10 and len(steps) < full_steps / 2, (len(steps), full_steps)
    with pytest.raises(ValueError, match="end_steps"):
        ctc_beam_search(log_probs, lengths, BLANK, end_steps=0)
