"""WER/CER metrics: hand-computed counts, agreement with jiwer, pooled vs macro, reports."""

from __future__ import annotations

import csv
import json

import jiwer
import pytest

from astra.eval.metrics import (
    CHAR,
    WORD,
    edit_counts,
    language_code,
    score_corpus,
    score_utterance,
    scoring_unit,
)
from astra.eval.report import markdown_table, output_dir_name, read_hyps_tsv, write_reports


@pytest.mark.parametrize(
    "ref, hyp, expected",  # expected (S, D, I, ref words), counted by hand
    [
        ("the cat sat", "the cat sat", (0, 0, 0, 3)),
        ("the cat sat", "the bat sat", (1, 0, 0, 3)),
        ("the cat sat", "the sat", (0, 1, 0, 3)),
        ("the cat sat", "oh the cat sat", (0, 0, 1, 3)),  # insertion at the start
        ("the cat sat", "the cat sat down now", (0, 0, 2, 3)),  # insertions at the end
        ("the cat sat", "", (0, 3, 0, 3)),  # empty hypothesis
        ("a b c d", "x b c y z", (2, 0, 1, 4)),
    ],
)
def test_word_counts_by_hand_and_match_jiwer(ref, hyp, expected):
    c = edit_counts(ref, hyp, WORD)
    assert (c.substitutions, c.deletions, c.insertions, c.ref_units) == expected
    assert c.error_rate == pytest.approx(sum(expected[:3]) / expected[3])
    assert c.error_rate == pytest.approx(jiwer.wer(ref, hyp))


@pytest.mark.parametrize(
    "ref, hyp, expected",  # expected (S, D, I, ref chars), counted by hand
    [
        ("今天好", "今天好", (0, 0, 0, 3)),
        ("今天好", "啊今天好呀呀", (0, 0, 3, 3)),  # insertions at both ends
        ("今天好", "", (0, 3, 0, 3)),  # empty hypothesis
        ("今天好", "明天", (1, 1, 0, 3)),
        ("abcd", "xbcdy", (1, 0, 1, 4)),
    ],
)
def test_char_counts_by_hand_and_match_jiwer_cer(ref, hyp, expected):
    c = edit_counts(ref, hyp, CHAR)
    assert (c.substitutions, c.deletions, c.insertions, c.ref_units) == expected
    assert c.error_rate == pytest.approx(jiwer.cer(ref, hyp))


def test_empty_reference_is_scored_explicitly():
    c = edit_counts("", "two words", WORD)
    assert (c.insertions, c.ref_units, c.errors) == (2, 0, 2)
    assert c.error_rate == 2.0 == jiwer.wer("", "two words")
    both = edit_counts("", "", WORD)
    assert both.errors == 0 and both.error_rate == 0.0
    s = score_utterance("k", "en", "...", "hello")  # reference empty after normalisation
    assert (s.counts.ref_units, s.counts.insertions) == (0, 1)


def test_cer_languages_are_scored_per_character():
    assert language_code("cmn_hans_cn") == "cmn"
    assert scoring_unit("cmn_hans_cn") == CHAR
    assert scoring_unit("th_th") == CHAR and scoring_unit("ja") == CHAR
    assert scoring_unit("hi_in") == WORD and scoring_unit("en_us") == WORD
    assert scoring_unit("de", cer_languages=["de_de"]) == CHAR
    # 今天天气很好 vs 今天天汽好: one substitution, one deletion over 6 characters
    s = score_utterance("u1", "cmn_hans_cn", "今天天气很好。", "今天天汽好")
    c = s.counts
    assert (c.substitutions, c.deletions, c.insertions, c.ref_units) == (1, 1, 0, 6)
    assert s.error_rate == pytest.approx(jiwer.cer("今天天气很好", "今天天汽好"))
    # spaces are not characters for CER languages
    spaced = score_utterance("u2", "th_th", "สวัสดี ครับ", "สวัสดีครับ")
    assert spaced.errors == 0 and spaced.counts.ref_units == len("สวัสดีครับ")
    # the same text in a word language is one word against two
    word = score_utterance("u3", "en", "ab cd", "abcd")
    assert word.unit == WORD and word.counts.ref_units == 2 and word.errors == 2


def test_punctuation_and_case_only_differences_score_zero():
    s = score_utterance("u", "en_us", "Hello, World! It's 5 o'clock.", "hello world it s 5 o clock")
    assert s.errors == 0
    raw = score_utterance("u", "en_us", "Hello, World!", "hello world", normalize=False)
    assert raw.errors == 2


def test_pooled_and_macro_differ_on_unbalanced_languages():
    # language A: 1 utterance, 10 words, 5 errors (rate 0.5)
    # language B: 1 utterance, 2 words, 0 errors (rate 0.0)
    ref_a = "one two three four five six seven eight nine ten"
    hyp_a = "one two three four five"
    scores, summary = score_corpus(
        ["a1", "b1"], ["aa", "bb"], [ref_a, "hello there"], [hyp_a, "hello there"]
    )
    assert [lang.language for lang in summary.languages] == ["aa", "bb"]
    assert summary.languages[0].error_rate == pytest.approx(0.5)
    assert summary.languages[1].error_rate == 0.0
    assert summary.pooled_error_rate == pytest.approx(5 / 12)
    assert summary.macro_error_rate == pytest.approx(0.25)
    assert summary.pooled.errors == sum(s.errors for s in scores) == 5


def test_score_corpus_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        score_corpus(["a"], ["en"], ["x"], [])


def test_reports_are_consistent(tmp_path):
    scores, summary = score_corpus(
        ["u1", "u2", "u3"],
        ["en_us", "en_us", "cmn_hans_cn"],
        ["the cat sat", "a dog", "今天天气很好"],
        ["the cat", "a\tdog barked", "今天天汽好"],
    )
    meta = {"checkpoint": "ckpt", "rtf": 0.125}
    paths = write_reports(tmp_path / "out", scores, summary, meta, title="test")
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    data = json.loads(paths["json"].read_text())
    assert data["meta"]["rtf"] == 0.125
    langs = {d["language"]: d for d in data["languages"]}
    assert langs["en_us"]["metric"] == "WER" and langs["cmn_hans_cn"]["metric"] == "CER"
    assert langs["en_us"]["deletions"] == 1 and langs["en_us"]["insertions"] == 1
    assert data["pooled"]["errors"] == 4 and data["pooled"]["ref_units"] == 11
    assert data["pooled"]["metric"] == "WER/CER"
    assert data["macro"]["error_rate"] == pytest.approx((2 / 5 + 2 / 6) / 2)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["language"] for r in rows] == ["cmn_hans_cn", "en_us", "pooled", "macro"]
    assert float(rows[2]["error_rate"]) == pytest.approx(4 / 11)
    hyps = read_hyps_tsv(paths["hyps"])
    assert [h["key"] for h in hyps] == ["u1", "u2", "u3"]
    assert hyps[1]["hypothesis"] == "a dog barked" and hyps[1]["errors"] == "1"
    assert sum(int(h["errors"]) for h in hyps) == data["pooled"]["errors"]
    table = markdown_table(summary, rtf=0.125)
    assert "**pooled**" in table and "**macro**" in table and "36.36" in table
    assert "Real-time factor" in table
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_output_dir_name_is_safe(tmp_path):
    name = output_dir_name(tmp_path / "run a" / "step-100", "fleurs:hi_in,ta_in/test")
    assert name == "run-a_step-100__fleurs-hi_in-ta_in-test"
    nested = output_dir_name(tmp_path / "tiny" / "checkpoints" / "step-00000030", "corpus_test")
    assert nested == "tiny_step-00000030__corpus_test"


class _FakeSubsampling:
    def min_input_frames(self):
        return 7


class _FakeModel:
    """decode() emits token 5 once per 10 frames; records the batch sizes it saw."""

    def __init__(self):
        self.speech_encoder = type("E", (), {"subsampling": _FakeSubsampling()})()
        self.seen = []

    def eval(self):
        return self

    def decode(self, batch, method="aligner_greedy", beam=4, ctc_weight=0.3):
        self.seen.append((method, batch["keys"]))
        return [[5] * (int(n) // 10) for n in batch["feature_lens"]]


class _FakeTokenizer:
    def decode(self, ids):
        return " ".join("la" for _ in ids)


def test_decode_loop_scores_rtf_and_short_audio():
    import torch

    from astra.eval.evaluate import decode_batches, evaluate_batches

    batches = [
        {
            "kind": "speech", "features": torch.zeros(2, 30, 80),
            "feature_lens": torch.tensor([30, 3]), "keys": ["a", "b"],
            "languages": ["en", "en"], "texts": ["la la la", "la"],
            "durations": torch.tensor([0.3, 0.03]),
        },
        {
            "kind": "speech", "features": torch.zeros(1, 20, 80),
            "feature_lens": torch.tensor([20]), "keys": ["c"], "languages": ["de"],
            "texts": ["la la"], "durations": torch.tensor([0.2]),
        },
    ]
    model = _FakeModel()
    result = evaluate_batches(model, _FakeTokenizer(), batches, method="ctc_greedy", progress=False)
    decoded = result.decoded
    assert decoded.hypotheses == ["la la la", "", "la la"]
    assert decoded.too_short == ["b"]
    assert model.seen == [("ctc_greedy", ["a"]), ("ctc_greedy", ["c"])]  # "b" never decoded
    assert decoded.audio_seconds == pytest.approx(0.53)
    assert decoded.rtf == pytest.approx(decoded.decode_seconds / 0.53)
    summary = result.summary
    assert [lang.language for lang in summary.languages] == ["de", "en"]
    assert summary.languages[1].counts.deletions == 1 and summary.pooled.errors == 1
    with pytest.raises(ValueError, match="unknown decoding method"):
        decode_batches(model, _FakeTokenizer(), batches, method="nope", progress=False)
