"""astra.text_norm.normalize_text: the scoring normalisation keeps scripts intact."""

from __future__ import annotations

import unicodedata

from astra.eval.metrics import score_utterance
from astra.text_norm import normalize_text


def test_hindi_keeps_matras_and_virama():
    text = "नमस्ते, दुनिया! क्या हाल है?"
    out = normalize_text(text)
    assert out == "नमस्ते दुनिया क्या हाल है"
    marks = [ch for ch in out if unicodedata.category(ch).startswith("M")]
    assert "्" in marks and "े" in marks and "ु" in marks and "ा" in marks
    assert len(marks) == sum(unicodedata.category(ch).startswith("M") for ch in text)


def test_bengali_and_thai_marks_survive():
    bengali = "আমি বাংলায় গান গাই।"
    assert normalize_text(bengali) == "আমি বাংলায় গান গাই"
    thai = "สวัสดีครับ"
    assert normalize_text(thai) == thai


def test_nfkc_lower_punctuation_symbols_whitespace():
    assert normalize_text("  Ｈｅｌｌｏ,\tWORLD!!  ") == "hello world"  # full-width -> ASCII
    assert normalize_text("a+b=c $5 — done…") == "a b c 5 done"
    assert normalize_text("ﬁne") == "fine"  # NFKC ligature
    assert normalize_text("ÉCOLE") == "école"
    assert normalize_text("?!.") == ""


def test_hindi_punctuation_only_difference_scores_zero():
    s = score_utterance("k", "hi_in", "नमस्ते, दुनिया!", "नमस्ते दुनिया")
    assert s.errors == 0 and s.counts.ref_units == 2
    # a missing matra is an error (marks are kept, not stripped)
    s2 = score_utterance("k", "hi_in", "नमस्ते दुनिया", "नमस्त दुनिया")
    assert s2.counts.substitutions == 1
