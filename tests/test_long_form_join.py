"""Long-form joins: a word boundary separates the texts of consecutive chunks."""

from __future__ import annotations

import pytest

from astra.data.tokenizer import TokenizerTrainConfig, train_tokenizer
from astra.model.long_form import join_chunks

TEXT = ["on saturday the green park was full", "the green bird sang on saturday", "they met on the green"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    cfg = TokenizerTrainConfig(vocab_size=40, character_coverage=1.0)
    return train_tokenizer({"en": TEXT * 4}, tmp_path_factory.mktemp("tok") / "tok.model", cfg)


def test_two_chunks_keep_the_word_boundary_between_them(tok):
    first = tok.encode("on saturday")
    # the second chunk starts with pieces that carry no word-start mark (a chunk cut inside
    # a phrase), as the Aligner may emit them after a primed prediction network
    inner = [tok.sp.piece_to_id(c) for c in "the"]
    assert tok.unk_id not in inner
    second = inner + tok.encode("green")
    assert tok.decode(first + second) == "on saturdaythe green"  # what joining the ids gives
    assert join_chunks(tok, [first, second]) == "on saturday the green"
    assert join_chunks(tok, [first, [], tok.encode("the green")]) == "on saturday the green"
    assert join_chunks(tok, []) == ""
