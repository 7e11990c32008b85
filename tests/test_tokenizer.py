"""Tokenizer: fixed special ids, language tags, round trips in four scripts, balancing."""

import pytest

from astra.data.tokenizer import Tokenizer, TokenizerTrainConfig, balance_languages, train_tokenizer
from astra.text_norm import normalize_text

TEXT = {
    "en_us": ["the quick brown fox jumps over the lazy dog", "speech recognition with text injection",
              "seven birds sing in the morning"],
    "ru_ru": ["быстрая коричневая лиса прыгает через ленивую собаку", "распознавание речи с текстом",
              "семь птиц поют утром"],
    "hi_in": ["तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है", "पाठ के साथ वाक् पहचान", "सात पक्षी सुबह गाते हैं"],
    "cmn_hans_cn": ["敏捷的棕色狐狸跳过了懒狗", "带文本注入的语音识别", "七只鸟在早上唱歌"],
}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    sentences = {lang: [normalize_text(s) for s in lines] * 4 for lang, lines in TEXT.items()}
    cfg = TokenizerTrainConfig(vocab_size=150, language_tags=True, character_coverage=1.0)
    return train_tokenizer(sentences, tmp_path_factory.mktemp("tok") / "tok.model", cfg)


def test_special_ids_and_language_tags(tok):
    assert (tok.blank_id, tok.unk_id, tok.sos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<blank>", "<unk>", "<sos>", "<eos>"]
    assert tok.language_ids == {"cmn_hans_cn": 4, "en_us": 5, "hi_in": 6, "ru_ru": 7}
    assert tok.language_id("hi_in") == 6
    with pytest.raises(ValueError, match="no tag"):
        tok.language_id("xx")
    assert 8 < tok.vocab_size <= 150


@pytest.mark.parametrize("lang", sorted(TEXT))
def test_round_trip_per_script(tok, lang):
    for line in TEXT[lang]:
        text = normalize_text(line)
        ids = tok.encode(text)
        assert ids and min(ids) >= 8 and tok.unk_id not in ids
        assert tok.decode(ids) == text
        # specials and language tags are dropped when decoding
        assert tok.decode([tok.sos_id, tok.language_id(lang), *ids, tok.eos_id, 0, 0]) == text


def test_unknown_characters_map_to_unk(tok):
    assert tok.unk_id in tok.encode("hello ω")


def test_reload_from_file(tok):
    again = Tokenizer(tok.model_path)
    assert again.encode("семь птиц") == tok.encode("семь птиц") and again.language_ids == tok.language_ids


def test_bpe_and_errors(tmp_path):
    bpe = train_tokenizer({"en": ["aa bb aa cc"] * 10}, tmp_path / "b.model",
                          TokenizerTrainConfig(vocab_size=20, model_type="bpe"))
    assert bpe.decode(bpe.encode("aa cc")) == "aa cc" and bpe.language_ids == {}
    with pytest.raises(ValueError, match="model_type"):
        train_tokenizer({"en": ["a"]}, tmp_path / "x.model", TokenizerTrainConfig(model_type="word"))
    with pytest.raises(ValueError, match="not found"):
        Tokenizer(tmp_path / "missing.model")


def test_balance_languages_keeps_small_languages_visible():
    out = balance_languages({"big": [f"b{i}" for i in range(900)], "small": ["s0", "s1", "s2", "s3"]}, alpha=0.5,
                            max_sentences=1000)
    assert len(out["small"]) > 4 * 10  # upsampled
    assert len(out["big"]) < 900
    assert abs(len(out["big"]) / len(out["small"]) - (900 / 4) ** 0.5) < 1.0
    natural = balance_languages({"a": ["x"] * 30, "b": ["y"] * 10}, alpha=1.0, max_sentences=10**6)
    assert (len(natural["a"]), len(natural["b"])) == (30, 10)


def test_tokenizer_train_cli(tmp_path, capsys):
    from astra.cli import main
    from astra.data.synthetic import write_local_corpus

    root = write_local_corpus(tmp_path / "c", languages=("en_us", "hi_in"), splits={"train": 4, "test": 1},
                              seconds=(0.3, 0.5), formats=("wav",), sample_rates=(16000,))
    test_line = (root / "hi_in" / "test.tsv").read_text(encoding="utf-8").splitlines()[1].split("\t")[1]
    text = tmp_path / "hi.txt"
    text.write_text(f"{test_line}\nसात पक्षी सुबह गाते हैं\n", encoding="utf-8")
    out = tmp_path / "tok.model"
    assert main(["tokenizer", "train", "--corpus", str(root), "--text", f"hi_in={text}", "--vocab-size", "80",
                 "--language-tags", "--character-coverage", "1.0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hi_in: kept 1 of 2 lines eval_overlap 1" in printed
    tok = Tokenizer(out)
    assert tok.languages == ["en_us", "hi_in"]
    assert tok.decode(tok.encode("सात पक्षी")) == "सात पक्षी"
    assert main(["tokenizer", "train", "--out", str(out)]) == 2


def test_vocabulary_too_small_is_one_line(tmp_path, capsys):
    from astra.cli import main

    text = tmp_path / "en.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 3, encoding="utf-8")
    out = tmp_path / "tok.model"
    # 26 letters + the word-boundary piece + 4 specials = 31 > 10
    assert main(["tokenizer", "train", "--text", f"en_us={text}", "--vocab-size", "10",
                 "--character-coverage", "1.0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["astra tokenizer: error: tokenizer vocabulary size 10 is too small: the text's "
                   "characters (at character coverage 1.0) plus the special pieces need at least 31; "
                   "raise the vocabulary size or lower the character coverage"]
    assert not out.exists()
    with pytest.raises(ValueError, match="no room for text pieces after the 4 special pieces and 1"):
        train_tokenizer({"en_us": ["a b"]}, out, TokenizerTrainConfig(vocab_size=5, language_tags=True))


@pytest.mark.parametrize("name, vocab",
                         [("x.v2.model", "x.v2.vocab"), ("tok.2024", "tok.2024.vocab")])
def test_output_name_with_dots_is_written_as_given(tmp_path, name, vocab):
    sentences = {"en_us": [normalize_text(s) for s in TEXT["en_us"]] * 4}
    out = tmp_path / "sub" / name
    cfg = TokenizerTrainConfig(vocab_size=40, character_coverage=1.0)
    tok = train_tokenizer(sentences, out, cfg)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([name, vocab])
    assert Tokenizer(out).vocab_size == tok.vocab_size
    assert tok.decode(tok.encode("the lazy dog")) == "the lazy dog"
