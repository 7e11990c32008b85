"""CTC prefix scores against brute-force path enumeration, and the joint Aligner/CTC beam search."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from astra.model.aligner_decoder import AlignerDecoder
from astra.model.ctc_prefix_score import CtcPrefixScorer
from astra.model.decoding import aligner_beam

BLANK, EOS = 0, 3


def _collapse(path) -> tuple[int, ...]:
    out, prev = [], None
    for s in path:
        if s != prev and s != BLANK:
            out.append(s)
        prev = s
    return tuple(out)


def _brute_force(log_probs: torch.Tensor) -> tuple[dict, dict]:
    """``[T, V]`` -> (log P of paths whose output starts with h, log P of output == h) per h."""
    frames, vocab = log_probs.shape
    starts: dict[tuple, list] = {}
    exact: dict[tuple, list] = {}
    for path in itertools.product(range(vocab), repeat=frames):
        logp = log_probs[torch.arange(frames), torch.tensor(path)].sum()
        out = _collapse(path)
        exact.setdefault(out, []).append(logp)
        for n in range(len(out) + 1):
            starts.setdefault(out[:n], []).append(logp)
    reduce = lambda d: {h: torch.logsumexp(torch.stack(v), 0) for h, v in d.items()}  # noqa: E731
    return reduce(starts), reduce(exact)


def _state_of(scorer: CtcPrefixScorer, hyp: tuple[int, ...]):
    state = scorer.initial_state()
    for token in hyp:
        state = scorer.extend(state, torch.tensor([0]), torch.tensor([token]))
    return state


def test_prefix_and_full_scores_match_brute_force_enumeration():
    torch.manual_seed(0)
    frames, vocab = 5, 3
    log_probs = torch.randn(frames, vocab, dtype=torch.float64).log_softmax(-1)
    starts, exact = _brute_force(log_probs)
    scorer = CtcPrefixScorer(log_probs[None].float(), torch.tensor([frames]), BLANK, torch.tensor([0]))
    checked = 0
    for length in range(4):
        for hyp in itertools.product(range(1, vocab), repeat=length):
            state = _state_of(scorer, hyp)
            want_full = exact.get(hyp, torch.tensor(float("-inf")))
            assert float(state.full_score()[0]) == pytest.approx(float(want_full), abs=1e-5)
            psi = scorer.scores(state)[0]
            assert psi[BLANK] == float("-inf")
            for token in range(1, vocab):
                want = starts.get(hyp + (token,), torch.tensor(float("-inf")))
                assert float(psi[token]) == pytest.approx(float(want), abs=1e-5), (hyp, token)
                checked += 1
    assert checked == 2 + 4 + 8 + 16


def test_full_score_is_minus_ctc_loss_and_padding_is_ignored():
    torch.manual_seed(1)
    lengths = torch.tensor([9, 6])
    log_probs = torch.randn(2, 9, 6).log_softmax(-1)
    targets = [[4, 4, 2], [5, 1]]
    scorer = CtcPrefixScorer(log_probs, lengths, BLANK, torch.tensor([0, 1]))
    state = scorer.initial_state()
    for j in range(2):  # grow both rows together; row 1 has one token fewer
        tokens = torch.tensor([targets[0][j], targets[1][j]])
        state = scorer.extend(state, torch.tensor([0, 1]), tokens)
    full_two = state.full_score()
    state = scorer.extend(state, torch.tensor([0, 1]), torch.tensor([targets[0][2], 3]))
    loss = F.ctc_loss(log_probs.transpose(0, 1), torch.tensor([4, 4, 2, 5, 1]), lengths, torch.tensor([3, 2]),
                      blank=BLANK, reduction="none", zero_infinity=False)
    assert float(state.full_score()[0]) == pytest.approx(-float(loss[0]), abs=1e-4)
    assert float(full_two[1]) == pytest.approx(-float(loss[1]), abs=1e-4)
    # row 1 alone, unpadded: same prefix scores
    alone = CtcPrefixScorer(log_probs[1:, :6], lengths[1:], BLANK, torch.tensor([0]))
    s = alone.extend(alone.initial_state(), torch.tensor([0]), torch.tensor([5]))
    padded = scorer.extend(scorer.initial_state(), torch.tensor([0, 1]), torch.tensor([5, 5]))
    assert torch.allclose(alone.scores(s)[0], scorer.scores(padded)[1], atol=1e-5)


def _uniform_decoder(vocab: int) -> AlignerDecoder:
    torch.manual_seed(0)
    decoder = AlignerDecoder(d_model=8, vocab_size=vocab, pred_dim=8, pred_layers=1, joint_dim=8, dropout=0.0)
    with torch.no_grad():
        decoder.output.weight.zero_()
        decoder.output.bias.zero_()
    return decoder.eval()


def _peaked_ctc(frame_tokens: list[int], vocab: int, frames: int) -> torch.Tensor:
    """``[1, T', V]``: frame t emits ``frame_tokens[t]`` (blank after the list) with p 0.9996."""
    logits = torch.full((frames, vocab), 0.0)
    for t in range(frames):
        logits[t, frame_tokens[t] if t < len(frame_tokens) else BLANK] = 10.0
    return logits.log_softmax(-1)[None]


def test_joint_beam_follows_ctc_when_the_aligner_knows_nothing():
    vocab, frames = 10, 8
    decoder = _uniform_decoder(vocab)
    enc = torch.randn(1, frames, 8)
    lengths = torch.tensor([frames])
    ctc = _peaked_ctc([5, 5, BLANK, 6, 7, 7], vocab, frames)
    for weight in (0.3, 1.0):
        hyp = aligner_beam(decoder, enc, lengths, EOS, beam=4, ctc_log_probs=ctc, ctc_weight=weight, blank_id=BLANK,
                           ctc_candidates=vocab)  # a uniform Aligner ranks no token above another
        assert hyp == [[5, 6, 7]], weight
    # the Aligner alone is uniform: <eos> ties with every token, the first frame ends it
    assert aligner_beam(decoder, enc, lengths, EOS, beam=4) != [[5, 6, 7]]


def test_joint_beam_at_weight_zero_is_the_aligner_beam():
    torch.manual_seed(3)
    decoder = AlignerDecoder(d_model=8, vocab_size=12, pred_dim=8, pred_layers=2, joint_dim=8, dropout=0.0).eval()
    enc = torch.randn(3, 7, 8) * 3
    lengths = torch.tensor([7, 5, 2])
    ctc = torch.randn(3, 7, 12).log_softmax(-1)
    plain = aligner_beam(decoder, enc, lengths, EOS, beam=3)
    assert aligner_beam(decoder, enc, lengths, EOS, beam=3, ctc_log_probs=ctc, ctc_weight=0.0) == plain
    joint = aligner_beam(decoder, enc, lengths, EOS, beam=3, ctc_log_probs=ctc, ctc_weight=0.5)
    assert [len(h) <= n for h, n in zip(joint, lengths.tolist(), strict=True)] == [True] * 3


def test_candidate_scores_equal_the_full_vocabulary_scores():
    torch.manual_seed(2)
    log_probs = torch.randn(2, 7, 9).log_softmax(-1)
    scorer = CtcPrefixScorer(log_probs, torch.tensor([7, 4]), BLANK, torch.tensor([0, 1]))
    state = scorer.extend(scorer.initial_state(), torch.tensor([0, 1]), torch.tensor([5, 2]))
    candidates = torch.tensor([[5, 0, 8], [2, 3, 1]])  # repeats, blank, others
    full = scorer.scores(state)
    assert torch.equal(scorer.scores(state, candidates), full.gather(1, candidates))


def test_joint_beam_with_candidates_keeps_the_result_of_a_confident_model():
    vocab, frames = 10, 8
    decoder = _uniform_decoder(vocab)
    with torch.no_grad():  # the Aligner's best tokens, at every step: 5, 7, <eos>, then 6
        decoder.output.bias[torch.tensor([5, 7, EOS])] = 2.0
        decoder.output.bias[6] = 1.0
    enc, lengths = torch.randn(1, frames, 8), torch.tensor([frames])
    ctc = _peaked_ctc([5, 5, BLANK, 6, 7, 7], vocab, frames)
    options = dict(ctc_log_probs=ctc, ctc_weight=0.3, blank_id=BLANK)
    assert aligner_beam(decoder, enc, lengths, EOS, beam=2, ctc_candidates=4, **options) == [[5, 6, 7]]
    assert aligner_beam(decoder, enc, lengths, EOS, beam=2, ctc_candidates=vocab, **options) == [[5, 6, 7]]
    # token 6 is not among the Aligner's best 3 (= the default for beam 2): the CTC head never sees it
    assert 6 not in aligner_beam(decoder, enc, lengths, EOS, beam=2, ctc_candidates=3, **options)[0]
    assert 6 not in aligner_beam(decoder, enc, lengths, EOS, beam=2, **options)[0]


def test_bad_ctc_weight_is_a_clear_error():
    decoder = _uniform_decoder(6)
    enc, lengths = torch.randn(1, 4, 8), torch.tensor([4])
    with pytest.raises(ValueError, match="ctc_weight must be in"):
        aligner_beam(decoder, enc, lengths, EOS, ctc_log_probs=torch.zeros(1, 4, 6), ctc_weight=1.5)
    with pytest.raises(ValueError, match="needs ctc_log_probs"):
        aligner_beam(decoder, enc, lengths, EOS, ctc_weight=0.3)
    with pytest.raises(ValueError, match="ctc_candidates must be"):
        aligner_beam(decoder, enc, lengths, EOS, ctc_log_probs=torch.zeros(1, 4, 6), ctc_weight=0.3, ctc_candidates=0)
    with pytest.raises(ValueError, match=r"log_probs must be \[B, T', V\]"):
        CtcPrefixScorer(torch.zeros(4, 6), lengths, BLANK, torch.tensor([0]))


def test_scorer_keeps_no_per_hypothesis_copy_of_the_vocabulary():
    # B=2 utterances x K=8 hypotheses: the scorer must not hold a [T', N, V] tensor
    frames, vocab, rows = 6, 50, torch.arange(2).repeat_interleave(8)
    log_probs = torch.randn(2, frames, vocab).log_softmax(-1)
    scorer = CtcPrefixScorer(log_probs, torch.tensor([6, 4]), BLANK, rows)
    held = sum(v.numel() for v in vars(scorer).values() if torch.is_tensor(v))
    assert held < frames * rows.numel() * vocab
    state = scorer.extend(scorer.initial_state(), torch.arange(16), torch.full((16,), 7))
    candidates = torch.tensor([[7, 9, 11]]).expand(16, 3)
    assert scorer.scores(state, candidates).shape == (16, 3)


@pytest.mark.parametrize("sharpness", [1.0, 40.0, 400.0])
def test_matrix_product_scores_equal_the_gathered_logsumexp(sharpness):
    # B=3 utterances x K=4 hypotheses (padding, repeated tokens, the empty prefix); sharpness 400
    # puts most log-probs thousands of nats down, where a product without scaling underflows
    torch.manual_seed(2)
    batch, group, frames, vocab = 3, 4, 9, 12
    log_probs = (sharpness * torch.randn(batch, frames, vocab)).log_softmax(-1)
    lengths = torch.tensor([9, 6, 4])
    rows = torch.arange(batch).repeat_interleave(group)
    product = CtcPrefixScorer(log_probs, lengths, BLANK, rows)
    gathered = CtcPrefixScorer(log_probs, lengths, BLANK, rows)
    gathered.group = 0  # the per-candidate path
    assert product.group == group
    state = product.initial_state()
    for step in range(4):
        want, got = gathered.scores(state), product.scores(state)
        assert torch.equal(want.isneginf(), got.isneginf()), step
        finite = want.isfinite()
        assert int(finite.sum()) >= batch * (vocab - 1) // 2, step
        assert torch.allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4), step
        parents = torch.arange(batch * group) // group * group + torch.randint(0, group, (batch * group,))
        fresh = torch.randint(1, vocab, (batch * group,))
        tokens = torch.where(torch.rand(batch * group) < 0.3, state.last[parents].clamp(min=1), fresh)  # repeats
        state = product.extend(state, parents, tokens)
