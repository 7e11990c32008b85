"""Aligner rescoring of the CTC n-best (astra.model.rescoring, ``ctc_beam_rescore``)."""

from __future__ import annotations

import math

import pytest
import torch

from astra.model import AstraModel, preset
from astra.model.ctc_beam_search import CtcHypothesis
from astra.model.rescoring import pick_rescored

VOCAB = 40
NEG = float("-inf")


def _nbest() -> list[list[CtcHypothesis]]:
    return [
        [CtcHypothesis([5, 6], -1.0, -0.5), CtcHypothesis([5, 7], -1.2, -0.6), CtcHypothesis([8], -3.0, 0.0)],
        [],
        [CtcHypothesis([9], -0.1, 0.0), CtcHypothesis([9, 9], -0.2, 0.0)],
    ]


def test_pick_follows_the_weighted_sum_and_weight_one_is_the_ctc_order():
    nbest = _nbest()
    aligner = [-5.0, -1.0, -0.5, NEG, -2.0]
    assert pick_rescored(nbest, aligner, 1.0) == [[5, 6], [], [9]]
    # weight 0: Aligner + LM; [8] scores -0.5, [5, 7] -1.6; -inf loses to -2.0
    assert pick_rescored(nbest, aligner, 0.0) == [[8], [], [9, 9]]
    # weight 0.5: [5, 6] -3.5, [5, 7] -1.7, [8] -1.75
    assert pick_rescored(nbest, aligner, 0.5) == [[5, 7], [], [9, 9]]


def test_pick_keeps_the_ctc_best_when_the_aligner_reads_none_and_refuses_bad_input():
    nbest = _nbest()
    assert pick_rescored(nbest, [NEG] * 5, 0.3) == [[5, 6], [], [9]]
    with pytest.raises(ValueError, match="ctc_weight"):
        pick_rescored(nbest, [0.0] * 5, 1.5)
    with pytest.raises(ValueError, match="4 Aligner scores for 5"):
        pick_rescored(nbest, [0.0] * 4, 0.5)


def _speech(g: torch.Generator) -> dict:
    return dict(kind="speech", features=torch.randn(2, 120, 80, generator=g), feature_lens=torch.tensor([120, 90]))


@pytest.mark.parametrize("compress", ["none", "labels"])
def test_scores_are_the_teacher_forced_log_likelihood_of_the_training_path(compress):
    """Peer: the Aligner loss of ``forward_aligner`` (label smoothing 0, summed) on the
    frames training gives a reference (compressed along its forced alignment)."""
    torch.manual_seed(0)
    options = {} if compress == "none" else dict(ctc_compress="labels", inter_ctc_layer=1, ctc_compress_align="forced")
    model = AstraModel(preset("tiny", dropout=0.0, spec_augment=False, **options), VOCAB).eval()
    g = torch.Generator().manual_seed(1)
    batch = _speech(g)
    hyps = [[[5, 6, 7], [5, 6], []], [[8, 8, 9, 10]]]
    nbest = [[CtcHypothesis(h, 0.0, 0.0) for h in found] for found in hyps]
    with torch.no_grad():
        wanted = (1,) if compress == "labels" else ()
        top, top_lens, layers = model.forward_encoder(batch["features"], batch["feature_lens"], wanted)
        frame_lens = model.frame_lengths(batch["feature_lens"])
        scores = model.aligner_log_likelihoods(top, top_lens, layers.get(1), frame_lens, nbest)
        flat = [(b, h) for b, found in enumerate(hyps) for h in found]
        for (b, h), score in zip(flat, scores.tolist(), strict=True):
            tokens = torch.tensor([h + [0]])[:, : max(len(h), 1)]
            lens = torch.tensor([len(h)])
            one = {k: v[b : b + 1] for k, v in batch.items() if torch.is_tensor(v)}
            ref_top, ref_lens, _ = model.forward_encoder(one["features"], one["feature_lens"],
                                                         references=(tokens, lens))
            loss, count, kept = model.forward_aligner(model.aligner, ref_top, ref_lens, tokens, lens)
            assert bool(kept.all()) and count == len(h) + 1
            assert score == pytest.approx(-float(loss), rel=1e-4, abs=1e-4)


def test_a_hypothesis_longer_than_the_frames_scores_minus_infinity():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", dropout=0.0, spec_augment=False), VOCAB).eval()
    batch = _speech(torch.Generator().manual_seed(2))
    with torch.no_grad():
        top, top_lens, _ = model.forward_encoder(batch["features"], batch["feature_lens"])
        too_long = [5] * int(top_lens[1])  # needs U + 1 frames
        nbest = [[CtcHypothesis([5], 0.0, 0.0)], [CtcHypothesis(too_long, 0.0, 0.0)]]
        scores = model.aligner_log_likelihoods(top, top_lens, None, model.frame_lengths(batch["feature_lens"]), nbest)
    assert math.isfinite(float(scores[0])) and float(scores[1]) == NEG


class _IdTokenizer:
    def decode(self, ids):
        return " ".join(str(i) for i in ids)


class _Batches(list):
    def skip_summary(self):
        return {}


def _eval_batches(g: torch.Generator) -> _Batches:
    """Two speech batches; the second holds an utterance too short to decode."""
    def one(lens, keys):
        return dict(kind="speech", features=torch.randn(len(lens), max(lens), 80, generator=g),
                    feature_lens=torch.tensor(lens), keys=keys, languages=["en"] * len(lens),
                    texts=["x"] * len(lens))
    return _Batches([one([150, 110, 90], ["a", "b", "c"]), one([130, 3], ["d", "short"])])


def test_one_pass_over_the_ctc_weights_decodes_as_one_pass_per_weight():
    """``decode_batches_rescored`` (search once, pick per weight) against
    ``decode_batches(method="ctc_beam_rescore")`` run once per weight; the sweep searches
    once per batch."""
    from astra.eval.evaluate import decode_batches, decode_batches_rescored, evaluate_lm_sweep

    torch.manual_seed(3)
    model = AstraModel(preset("tiny", dropout=0.0, spec_augment=False, ctc_compress="labels", inter_ctc_layer=1,
                              ctc_compress_align="forced"), VOCAB).eval()
    batches = _eval_batches(torch.Generator().manual_seed(4))
    weights = [0.0, 0.5, 1.0]
    together = decode_batches_rescored(model, _IdTokenizer(), batches, weights, beam=4, progress=False)
    apart = [decode_batches(model, _IdTokenizer(), batches, "ctc_beam_rescore", beam=4, progress=False,
                            ctc_weight=w) for w in weights]
    assert [r.hypotheses for r in together] == [r.hypotheses for r in apart]
    assert all(r.too_short == ["short"] and r.hypotheses[-1] == "" and r.keys == list("abcd") + ["short"]
               for r in together)
    assert together[0].hypotheses != together[-1].hypotheses  # the weights do pick differently here

    calls = []
    search = model.ctc_rescore_candidates
    model.ctc_rescore_candidates = lambda *a, **k: calls.append(1) or search(*a, **k)
    runs, _ = evaluate_lm_sweep(model, _IdTokenizer(), batches, ctc_weights=weights, method="ctc_beam_rescore",
                                beam=4, progress=False)
    assert len(calls) == len(batches)
    assert [point for point, _ in runs] == [(None, None, w) for w in weights]
    assert [r.decoded.hypotheses for _, r in runs] == [r.hypotheses for r in apart]
    with pytest.raises(ValueError, match="ctc_weights is empty"):
        decode_batches_rescored(model, _IdTokenizer(), batches, [], progress=False)
