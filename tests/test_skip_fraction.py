"""The data.max_skip_fraction guard: one line that names the fixes for the main reason."""

import pytest

from astra.data.skips import TRANSCRIPT_TOO_LONG, UNENCODABLE_TEXT, SkipCounter, check_skip_fraction


def _refused(reason: str, skipped: int = 5, kept: int = 11, max_fraction: float = 0.2) -> str:
    counter = SkipCounter("train speech", log_examples=False)
    for i in range(skipped):
        counter.add(reason, f"ru_ru/train/{i}.wav", "ru_ru", detail="U+1=30 > T'=20")
    with pytest.raises(ValueError) as e:
        check_skip_fraction(counter, {"ru_ru": kept}, max_fraction)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_transcripts_too_long_name_vocabulary_subsampling_and_the_fraction():
    message = _refused(TRANSCRIPT_TOO_LONG)
    assert message.startswith("train speech ru_ru: 5 of 16 utterances skipped (31 % > "
                              "data.max_skip_fraction=0.2; transcript_too_long 5); mostly "
                              "transcript_too_long: ")
    assert "a bigger tokenizer vocabulary (longer pieces: astra tokenizer train --vocab-size" \
        in message
    assert "astra tokenizer extend" in message
    assert "a lower model.subsampling" in message
    assert message.endswith("or raise data.max_skip_fraction to 0.32")


def test_unencodable_text_names_tokenizer_extend_and_the_fraction():
    message = _refused(UNENCODABLE_TEXT, skipped=8, kept=2, max_fraction=0.5)
    assert "mostly unencodable_text (e.g. ru_ru/train/0.wav: U+1=30 > T'=20): " in message
    assert "astra tokenizer extend --base OLD.model --text LANG=FILE --out NEW.model" in message
    assert "finetune.tokenizer=NEW.model" in message
    assert "astra tokenizer train" in message
    assert message.endswith("or raise data.max_skip_fraction to 0.8")


def test_a_fraction_at_the_limit_passes():
    counter = SkipCounter("train speech", log_examples=False)
    counter.add(TRANSCRIPT_TOO_LONG, "a", "ru_ru")
    check_skip_fraction(counter, {"ru_ru": 4}, 0.2)  # 1 of 5 = 0.2: allowed
