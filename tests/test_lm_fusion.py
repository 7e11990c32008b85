"""LM shallow fusion in the three beam searches: weight 0 is the plain beam exactly, a peaked
LM decides between acoustically tied hypotheses, each utterance uses its language's LM, the
internal-LM term and the length bonus do what they say, and a wide fused Aligner beam is the
exhaustive argmax of the fused score."""

from __future__ import annotations

import pytest
import torch

from astra.lm.fusion import LmFusion
from astra.lm.kneser_ney import estimate
from astra.lm.ngram_scorer import NgramScorer
from astra.model.aligner_decoder import AlignerDecoder
from astra.model.decoding import aligner_beam_search, rnnt_beam
from astra.model.presets import preset
from astra.model.rnnt_head import RnntHead

BLANK, UNK, SOS, EOS, A, B, C = range(7)
V = 7
WORDS = {"a": A, "b": B, "c": C}


class _Arpa:  # an NgramModel read back as an Arpa (same fields)
    def __init__(self, model):
        self.order, self.probs, self.backoffs = model.order, model.probs, model.backoffs


def _fusion(weight=1.0, length_bonus=0.0, ilm_weight=0.0, **texts) -> LmFusion:
    """An LmFusion with one LM per language trained on ``texts[lang]`` (sentences)."""
    models = {lang: _Arpa(estimate([s.split() for s in sents], 3, WORDS)) for lang, sents in texts.items()}
    scorer = NgramScorer(models, WORDS, V, EOS, UNK)
    return LmFusion(scorer, weight, EOS, length_bonus, ilm_weight, neutral_ids=(BLANK, SOS))


PEAKED = {"a": ["a"] * 20 + ["c"], "b": ["b"] * 20 + ["c"]}


def _tied_aligner() -> tuple[AlignerDecoder, torch.Tensor, torch.Tensor]:
    """An Aligner whose logits are ``10 tanh(frame)`` (no history): frame 0 says a or b (tied),
    frame 1 says <eos>; 2 utterances of 2 frames, ``encoder_out [2, 2, 7]``."""
    decoder = AlignerDecoder(d_model=V, vocab_size=V, pred_dim=4, pred_layers=1, joint_dim=V, dropout=0.0).eval()
    with torch.no_grad():
        decoder.encoder_proj.weight.copy_(torch.eye(V))
        decoder.encoder_proj.bias.zero_()
        decoder.pred_proj.weight.zero_()
        decoder.pred_proj.bias.zero_()
        decoder.output.weight.copy_(10 * torch.eye(V))
        decoder.output.bias.zero_()
    frames = -torch.ones(2, 2, V)
    frames[:, 0, A] = frames[:, 0, B] = 1.0
    frames[:, 1, EOS] = 1.0
    return decoder, frames, torch.tensor([2, 2])


def _tied_ctc() -> torch.Tensor:
    """``[2, 2, V]`` CTC log-probs symmetric in a and b."""
    probs = torch.full((2, 2, V), 0.01)
    probs[:, 0, A] = probs[:, 0, B] = 0.4
    probs[:, 1, BLANK] = 0.9
    return (probs / probs.sum(-1, keepdim=True)).log()


def _tied_rnnt() -> tuple[RnntHead, torch.Tensor, torch.Tensor]:
    """An RNN-T head whose joint is its output bias: one frame, a and b tied, blank unlikely."""
    torch.manual_seed(0)
    head = RnntHead(preset("tiny", dropout=0.0), V).eval()
    with torch.no_grad():
        head.output.weight.zero_()
        head.output.bias.fill_(-5.0)
        head.output.bias[A] = head.output.bias[B] = 2.0
    return head, torch.randn(2, 1, head.encoder_proj.in_features), torch.tensor([1, 1])


def _aligner(lm_fusion, languages, ctc=False):
    decoder, enc, lens = _tied_aligner()
    lm = None if lm_fusion is None else lm_fusion.for_batch(languages, "cpu")
    extra = dict(ctc_log_probs=_tied_ctc(), ctc_weight=0.3) if ctc else {}
    return aligner_beam_search(decoder, enc, lens, EOS, beam=3, lm=lm, **extra)


def _rnnt(lm_fusion, languages):
    head, enc, lens = _tied_rnnt()
    lm = None if lm_fusion is None else lm_fusion.for_batch(languages, "cpu")
    return rnnt_beam(head, enc, lens, beam=3, lm=lm)


@torch.no_grad()
@pytest.mark.parametrize("ctc", [False, True])
def test_peaked_lm_decides_between_tied_aligner_hypotheses(ctc):
    hyps, scores = _aligner(None, None, ctc)
    assert hyps[0] in ([A], [B]) and scores[0] == scores[1]
    for lang, token in (("a", A), ("b", B)):
        hyps, _ = _aligner(_fusion(**PEAKED), [lang, lang], ctc)
        assert hyps == [[token], [token]], lang


@torch.no_grad()
def test_peaked_lm_decides_between_tied_rnnt_hypotheses():
    assert _rnnt(None, None)[0] in ([A], [B])
    for lang, token in (("a", A), ("b", B)):
        assert _rnnt(_fusion(**PEAKED), [lang, lang]) == [[token], [token]], lang


@torch.no_grad()
def test_mixed_language_batch_uses_each_utterances_lm():
    fusion = _fusion(**PEAKED)
    assert _aligner(fusion, ["a", "b"])[0] == [[A], [B]]
    assert _aligner(fusion, ["b", "a"], ctc=True)[0] == [[B], [A]]
    assert _rnnt(fusion, ["b", "a"]) == [[B], [A]]
    with pytest.raises(ValueError, match="no LM for language"):
        fusion.for_batch(["a", "zz"], "cpu")


def _random_aligner(seed: int):
    torch.manual_seed(seed)
    decoder = AlignerDecoder(d_model=6, vocab_size=V, pred_dim=5, pred_layers=1, joint_dim=7, dropout=0.0).eval()
    return decoder, torch.randn(3, 5, 6) * 2, torch.tensor([5, 4, 2])


@torch.no_grad()
@pytest.mark.parametrize("ctc", [False, True])
def test_weight_zero_is_the_plain_aligner_beam(ctc):
    decoder, enc, lens = _random_aligner(1)
    extra = {}
    if ctc:
        torch.manual_seed(2)
        extra = dict(ctc_log_probs=torch.randn(3, 5, V).log_softmax(-1), ctc_weight=0.4)
    plain_hyps, plain_scores = aligner_beam_search(decoder, enc, lens, EOS, beam=3, **extra)
    lm = _fusion(weight=0.0, **PEAKED).for_batch(["a", "b", "a"], "cpu")
    hyps, scores = aligner_beam_search(decoder, enc, lens, EOS, beam=3, lm=lm, **extra)
    assert hyps == plain_hyps
    assert torch.equal(scores, plain_scores)
    # and a real weight does change the search (the test can fail)
    heavy = _fusion(weight=5.0, **PEAKED).for_batch(["a", "b", "a"], "cpu")
    assert not torch.equal(aligner_beam_search(decoder, enc, lens, EOS, beam=3, lm=heavy, **extra)[1], plain_scores)


@torch.no_grad()
def test_weight_zero_is_the_plain_rnnt_beam():
    torch.manual_seed(3)
    head = RnntHead(preset("tiny", dropout=0.0), V).eval()
    with torch.no_grad():
        head.output.weight.mul_(3.0)
    enc = torch.randn(3, 4, head.encoder_proj.in_features) * 2
    lens = torch.tensor([4, 3, 2])
    plain = rnnt_beam(head, enc, lens, beam=3)
    assert rnnt_beam(head, enc, lens, beam=3,
                     lm=_fusion(weight=0.0, **PEAKED).for_batch(["a", "b", "a"], "cpu")) == plain


@torch.no_grad()
def test_ilm_subtraction_removes_a_history_free_decoders_own_score():
    """With a joint that ignores the encoder, the decoder on zeroed frames is the decoder:
    at ilm_weight 1 the Aligner term cancels and the score is the LM's log P of the hypothesis."""
    decoder, enc, lens = _random_aligner(4)
    with torch.no_grad():
        decoder.encoder_proj.weight.zero_()
    fusion = _fusion(weight=1.0, ilm_weight=1.0, a=["a b", "a b c", "b"])
    hyps, scores = aligner_beam_search(decoder, enc, lens, EOS, beam=4, lm=fusion.for_batch(["a"] * 3, "cpu"))
    scorer = fusion.scorer
    checked = 0
    for b, hyp in enumerate(hyps):
        state = scorer.start(["a"])
        want = 0.0
        for token in [*hyp, EOS]:
            lp, state_k = scorer.score_tokens(state, torch.tensor([[token]]))
            want += float(lp[0, 0])
            state = state_k[:, 0]
        if len(hyp) < int(lens[b]):  # ended by <eos> (a cut hypothesis has no </s> term)
            assert float(scores[b]) == pytest.approx(want, abs=1e-4), b
            checked += 1
    assert checked > 0


@torch.no_grad()
def test_length_bonus_lengthens_the_hypothesis():
    decoder, enc, lens = _random_aligner(5)
    fusion = _fusion(weight=0.1, a=["a b c", "c b a"])
    short, _ = aligner_beam_search(decoder, enc, lens, EOS, beam=3, lm=fusion.for_batch(["a"] * 3, "cpu"))
    fusion.length_bonus = 50.0
    long, _ = aligner_beam_search(decoder, enc, lens, EOS, beam=3, lm=fusion.for_batch(["a"] * 3, "cpu"))
    assert [len(h) for h in long] == lens.tolist()  # every frame emits a piece
    assert sum(map(len, long)) > sum(map(len, short))


def test_negative_weights_are_rejected():
    with pytest.raises(ValueError, match="LM weight must be >= 0"):
        _fusion(weight=-0.1, a=["a"])
    with pytest.raises(ValueError, match="ILM weight must be >= 0"):
        _fusion(ilm_weight=-1.0, a=["a"])


@torch.no_grad()
def test_candidate_scores_of_every_token_are_the_full_table():
    """The pre-beam path with every token as a candidate equals scoring the full table."""
    fusion = _fusion(weight=0.7, length_bonus=0.2, a=["a b c", "c b a", "a a"])
    lm = fusion.for_batch(["a", "a"], "cpu")
    states = lm.initial_states()
    states = fusion.scorer.score_tokens(states, torch.tensor([[A], [B]]))[1][:, 0]
    fused, _ = lm.candidate_scores(states, torch.arange(V).expand(2, -1))
    table = fusion.scorer.score_all(states)
    want = 0.7 * table + 0.2
    want[:, EOS] = 0.7 * table[:, EOS]
    want[:, [BLANK, SOS]] = 0.0
    torch.testing.assert_close(fused, want)


@torch.no_grad()
def test_pre_beam_bounds_what_the_lm_can_choose_and_every_token_is_full_scoring():
    decoder, enc, lens = _random_aligner(6)
    fusion = _fusion(weight=2.0, a=["c c c", "c c"])
    full = aligner_beam_search(decoder, enc, lens, EOS, beam=3, lm=fusion.for_batch(["a"] * 3, "cpu"))
    fusion.candidates = V  # every token: the full-scoring search
    wide = aligner_beam_search(decoder, enc, lens, EOS, beam=3, lm=fusion.for_batch(["a"] * 3, "cpu"))
    fusion.candidates = 1  # only the Aligner's best token (and <eos>) per hypothesis
    narrow = aligner_beam_search(decoder, enc, lens, EOS, beam=3, lm=fusion.for_batch(["a"] * 3, "cpu"))
    assert wide[1].ge(narrow[1]).all() and not torch.equal(wide[1], narrow[1])  # here the pre-beam matters
    assert wide[1].ge(full[1] - 1e-6).all()
    with pytest.raises(ValueError, match="LM candidates must be >= 1"):
        LmFusion(fusion.scorer, 1.0, EOS, candidates=0)


def _fused_exhaustive(decoder: AlignerDecoder, frames: torch.Tensor, fusion: LmFusion) -> tuple[list[int], float]:
    """The best sequence of the Aligner topology on ``frames [T', D]`` by enumeration, scored
    as the module doc of :mod:`astra.lm.fusion` says: per token ``log P_aligner + w log P_LM +
    bonus - ilm log P_ILM``; an ``<eos>`` ending adds ``log P_aligner(<eos>) + w log P(</s>)
    - ilm log P_ILM(<eos>)``; a sequence cut by the last frame has no ending term."""
    length = frames.size(0)
    scorer, zero = fusion.scorer, torch.zeros(frames.size(1))

    def log_softmax(logits):
        logits = logits.clone()
        logits[..., [BLANK, SOS]] = float("-inf")
        return logits.log_softmax(dim=-1)

    def step_score(seq, prev, state, lm_state, token):
        g, state = decoder.predict(torch.tensor([[prev]]), state)
        aligner = float(log_softmax(decoder.joint(frames[len(seq)], g[0, 0]))[token])
        ilm = float(log_softmax(decoder.joint(zero, g[0, 0]))[token])
        lnp, next_lm = scorer.score_tokens(lm_state, torch.tensor([[token]]))
        bonus = 0.0 if token == EOS else fusion.length_bonus
        return aligner + fusion.weight * float(lnp[0, 0]) + bonus - fusion.ilm_weight * ilm, state, next_lm[:, 0]

    best, best_score = None, float("-inf")

    def visit(seq, score, prev, state, lm_state):
        nonlocal best, best_score
        end, _, _ = step_score(seq, prev, state, lm_state, EOS)
        candidates = [(seq, score + end)]
        for token in (UNK, A, B, C):
            gain, next_state, next_lm = step_score(seq, prev, state, lm_state, token)
            if len(seq) + 1 == length:
                candidates.append((seq + [token], score + gain))  # cut by the last frame
            else:
                visit(seq + [token], score + gain, token, next_state, next_lm)
        for hyp, total in candidates:
            if total > best_score:
                best, best_score = hyp, total

    visit([], 0.0, SOS, None, scorer.start(["a"]))
    return best, best_score


@torch.no_grad()
@pytest.mark.parametrize("length_bonus, ilm_weight", [(0.0, 0.0), (1.5, 0.0), (0.0, 0.6), (0.8, 0.4)])
def test_fused_aligner_beam_is_the_exhaustive_argmax(length_bonus, ilm_weight):
    """A beam wide enough to keep every hypothesis (4**2 live at 3 frames) with every token a
    candidate returns the enumerated argmax of the fused score, with its score."""
    decoder, enc, _ = _random_aligner(7)
    with torch.no_grad():
        decoder.output.weight.mul_(3.0)
    enc, lens = enc[:, :3], torch.tensor([3, 2, 1])
    fusion = _fusion(weight=0.8, length_bonus=length_bonus, ilm_weight=ilm_weight, a=["a b c", "c b", "a a b"])
    fusion.candidates = V
    hyps, scores = aligner_beam_search(decoder, enc, lens, EOS, beam=64, lm=fusion.for_batch(["a"] * 3, "cpu"))
    plain, _ = aligner_beam_search(decoder, enc, lens, EOS, beam=64)
    for b in range(3):
        want, want_score = _fused_exhaustive(decoder, enc[b, : int(lens[b])], fusion)
        assert hyps[b] == want, b
        assert float(scores[b]) == pytest.approx(want_score, abs=1e-4), b
    assert hyps != plain, "the LM changes nothing here: the case tests nothing"


def test_fusion_config_sweeps_every_weight_and_bonus_pair():
    from astra.lm.config import LmFusionConfig

    cfg = LmFusionConfig(lm_dir="lm", lm_weights=[0.1, 0.5], length_bonuses=[0.0, 1.0, 2.0])
    assert cfg.sweep_points() == [(0.1, 0.0), (0.1, 1.0), (0.1, 2.0), (0.5, 0.0), (0.5, 1.0), (0.5, 2.0)]
    assert cfg.is_sweep and not LmFusionConfig(lm_dir="lm").is_sweep
    for bad, message in (([], "needs at least one value"), ([float("inf")], "must be finite")):
        with pytest.raises(ValueError, match=message):
            LmFusionConfig(lm_dir="lm", length_bonuses=bad).check()
