"""n-gram LM: Kneser-Ney estimation, ARPA reading, and the batched tensor scorer against a
brute-force reading of the ARPA backoff rule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from astra.lm.arpa import read_arpa, write_arpa
from astra.lm.kneser_ney import BOS, EOS, estimate
from astra.lm.ngram_scorer import NgramScorer

TOY_ARPA = """\\data\\
ngram 1=6
ngram 2=6
ngram 3=3

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.30103
-0.60206\ta\t-0.2
-0.69897\tb\t-0.1
-1.30103\tc
-0.52288\t</s>

\\2-grams:
-0.30103\t<s> a\t-0.15
-0.69897\ta b\t-0.4
-0.39794\ta a
-0.22185\tb </s>
-0.52288\tb c
-1.0\t<s> b

\\3-grams:
-0.09691\t<s> a b
-0.15490\ta b c
-0.04576\t<s> a a

\\end\\
"""
WORDS = {"a": 4, "b": 5, "c": 6}
V, EOS_ID, UNK_ID = 7, 3, 1
LABEL_WORDS = {4: "a", 5: "b", 6: "c", EOS_ID: EOS, UNK_ID: "<unk>"}


def brute_force(arpa, history: tuple[str, ...], word: str) -> float:
    """ln P(word | history) by the ARPA rule, reading the full history (no states)."""
    total = 0.0
    for k in range(min(len(history), arpa.order - 1), -1, -1):
        ctx = history[len(history) - k:]
        if (*ctx, word) in arpa.probs[len(ctx)]:
            return (total + arpa.probs[len(ctx)][(*ctx, word)]) * math.log(10)
        total += arpa.backoffs.get(ctx, 0.0)
    return float("-inf")


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.arpa"
    path.write_text(TOY_ARPA, encoding="utf-8")
    return read_arpa(path)


def _histories(max_len: int = 3):
    for n in range(max_len + 1):
        yield from itertools.product("abc", repeat=n)


def test_scorer_matches_brute_force_arpa_reading(toy):
    scorer = NgramScorer({"xx": toy}, WORDS, V, EOS_ID, UNK_ID)
    histories = list(_histories())
    states = scorer.start(["xx"] * len(histories))
    for step in range(3):  # walk every history of length <= 3 through advance
        table = scorer.score_all(states)
        tokens = torch.tensor(sorted(LABEL_WORDS)).expand(len(histories), -1)
        picked, _ = scorer.score_tokens(states, tokens)
        for row, hist in enumerate(histories):
            context = (BOS, *hist[:step])
            for label, word in LABEL_WORDS.items():
                want = brute_force(toy, context, word)
                assert table[row, label].item() == pytest.approx(want, abs=1e-5), (context, word)
                col = sorted(LABEL_WORDS).index(label)
                assert picked[row, col].item() == pytest.approx(want, abs=1e-5), (context, word)
            for label in (0, 2):  # not LM words
                assert table[row, label].item() == float("-inf")
        nxt = torch.tensor([WORDS[h[step]] if len(h) > step else 0 for h in histories])
        moved = torch.tensor([len(h) > step for h in histories])
        states = torch.where(moved, scorer.score_tokens(states, nxt[:, None])[1][:, 0], states)
        histories_done = [h for h in histories if len(h) <= step]
        assert histories_done  # rows that stopped keep their state and stay checked above


def test_a_token_the_lm_does_not_know_leads_to_the_dead_state(toy):
    """Labels 0 and 2 are no LM word: -inf, and every later token from there is -inf too."""
    scorer = NgramScorer({"xx": toy}, WORDS, V, EOS_ID, UNK_ID)
    start = scorer.start(["xx", "xx"])
    lnp, nxt = scorer.score_tokens(start, torch.tensor([[0, 4], [2, 5]]))
    assert lnp[:, 0].tolist() == [float("-inf")] * 2 and torch.isfinite(lnp[:, 1]).all()
    assert nxt[:, 0].tolist() == [scorer.dead_state] * 2
    after, again = scorer.score_tokens(nxt[:, 0], torch.tensor(sorted(LABEL_WORDS)).expand(2, -1))
    assert after.eq(float("-inf")).all() and again.eq(scorer.dead_state).all()
    assert scorer.score_all(nxt[:, 0]).eq(float("-inf")).all()


def test_mixed_languages_use_their_own_model(toy, tmp_path):
    other = read_arpa_text(tmp_path,
                           TOY_ARPA.replace("-0.60206\ta\t", "-2.0\ta\t").replace("-0.30103\t<s> a\t", "-1.5\t<s> a\t"))
    scorer = NgramScorer({"xx": toy, "yy": other}, WORDS, V, EOS_ID, UNK_ID)
    states = scorer.start(["xx", "yy", "xx"])
    table = scorer.score_all(states)
    assert table[0, 4].item() == pytest.approx(brute_force(toy, (BOS,), "a"), abs=1e-5)
    assert table[1, 4].item() == pytest.approx(brute_force(other, (BOS,), "a"), abs=1e-5)
    assert table[0, 4].item() != pytest.approx(table[1, 4].item())
    assert torch.equal(table[0], table[2])
    with pytest.raises(ValueError, match="no LM for language"):
        scorer.start(["zz"])


def read_arpa_text(tmp_path, text: str):
    path = tmp_path / "other.arpa"
    path.write_text(text, encoding="utf-8")
    return read_arpa(path)


def test_kneser_ney_is_normalised_and_round_trips(tmp_path):
    sentences = [s.split() for s in ("a b c", "a b", "b c a", "c c a b", "a", "b a c b", "a b c")]
    model = estimate(sentences, order=3, vocabulary=["a", "b", "c", "d"])
    path = tmp_path / "kn.arpa"
    write_arpa(model, path)
    arpa = read_arpa(path)
    assert arpa.counts == model.counts and arpa.order == 3
    words = ["a", "b", "c", "d", EOS, "<unk>"]
    for hist in [(BOS,), (BOS, "a"), ("a", "b"), ("c", "c"), ("d",), ("b", "a")]:
        total = sum(math.exp(brute_force(arpa, hist, w)) for w in words)
        assert total == pytest.approx(1.0, abs=1e-5), hist
    # seen continuations are more likely than unseen ones
    assert brute_force(arpa, (BOS, "a"), "b") > brute_force(arpa, (BOS, "a"), "d")


def test_kaldilm_reads_the_written_arpa(tmp_path):
    kaldilm = pytest.importorskip("kaldilm")
    model = estimate([s.split() for s in ("a b c", "b c a", "a b")], order=3, vocabulary=["a", "b", "c"])
    write_arpa(model, tmp_path / "kn.arpa")
    (tmp_path / "words.txt").write_text(
        "\n".join(f"{w} {i}" for i, w in enumerate(["<eps>", "<s>", "</s>", "<unk>", "a", "b", "c", "#0"])) + "\n"
    )
    fst = kaldilm.arpa2fst(str(tmp_path / "kn.arpa"), disambig_symbol="#0",
                           read_symbol_table=str(tmp_path / "words.txt"))
    assert fst.strip()


@pytest.mark.parametrize("text, message", [
    ("no data here\n", "not a complete ARPA"),
    ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\ta\n\\end\\\n", "declares 2 1-grams"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\nx a\n\\end\\\n", "not a number"),
    ("\\data\\\nngram 1=1\n\n\\2-grams:\n-1 a b\n\\end\\\n", "out of order"),
])
def test_malformed_arpa_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.arpa"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_arpa(path)
