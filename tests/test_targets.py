"""astra.data.targets: the one target preparation (normalise, tokenize, language tag first)."""

from __future__ import annotations

import pytest

from astra.data.config import DataConfig
from astra.data.targets import encode_target, normalize_target, prepare_target


class LetterTokenizer:
    """One id per character (a-z -> 10..35, space -> 9), language tags ``<lang:xx>`` at 4, 5."""

    language_ids = {"en_us": 4, "hi_in": 5}

    def encode(self, text: str) -> list[int]:
        return [9 if ch == " " else 10 + ord(ch) - ord("a") for ch in text]

    def language_id(self, language: str) -> int:
        if language not in self.language_ids:
            raise ValueError(f"no <lang:{language}> piece")
        return self.language_ids[language]


def test_targets_are_normalised_only_when_asked():
    assert normalize_target("  Hello, World! ", DataConfig()) == "hello world"
    assert normalize_target("  Hello, World! ", DataConfig(normalize_transcripts=False)) == "Hello, World!"


def test_the_language_tag_leads_only_with_language_tags():
    tok = LetterTokenizer()
    assert encode_target("ab", "hi_in", tok, DataConfig()) == [10, 11]
    assert encode_target("ab", "hi_in", tok, DataConfig(language_tags=True)) == [5, 10, 11]
    assert prepare_target("A, b", "en_us", tok, DataConfig(language_tags=True)) == ("a b", [4, 10, 9, 11])
    with pytest.raises(ValueError, match="lang:fr_fr"):
        prepare_target("a", "fr_fr", tok, DataConfig(language_tags=True))
