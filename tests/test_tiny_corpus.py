"""The tiny recipe's corpus builder (tools/build_tiny_corpus.py, tools/tiny_corpus/)."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from tiny_corpus.build import build_corpus  # noqa: E402
from tiny_corpus.grammar import SentenceGrammar  # noqa: E402
from tiny_corpus.lexicon import LANGUAGES  # noqa: E402
from tiny_corpus.plan import TinyCorpusConfig, make_plan  # noqa: E402
from tiny_corpus.synth import ESPEAK_INSTALL_HINT, SynthesisError, find_espeak  # noqa: E402

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and os.environ.get("CI") != "true",
    reason="espeak-ng not installed (apt-get install -y espeak-ng); required in CI",
)

PAIRED = ("pretrain", "train", "validation", "test")
SMALL = dict(
    languages=["en_us", "ru_ru"],
    pretrain_sentences=10,
    train_sentences=6,
    validation_sentences=4,
    test_sentences=8,
    unpaired_sentences=60,
    voices_per_sentence=2,
    pretrain_pseudo_word_fraction=0.5,
)


def small_config(**changes) -> TinyCorpusConfig:
    return TinyCorpusConfig(**{**SMALL, **changes})


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "corpus"
    summary = build_corpus(small_config(), out, workers=2, progress=False)
    return out, summary


# ---- text generation (no espeak needed) -------------------------------------------------
def test_every_language_generates_distinct_normalised_sentences():
    for code, lang in LANGUAGES.items():
        grammar = SentenceGrammar(lang, ["bicycle", "yellow", "paint"])
        rng = random.Random(0)
        sentences = [grammar.sample(rng) for _ in range(300)]
        texts = {s.text for s in sentences}
        assert len(texts) > 250, code
        for s in sentences:
            assert 2 <= len(s.text.split()) <= 12, (code, s.raw)
            assert s.raw[0].isupper() and s.raw.endswith("."), (code, s.raw)
            assert not grammar.uses_held_out(s)
            assert not set(s.text.split()) & grammar.text_only_words, (code, s.text)


def test_text_only_words_are_words_of_held_out_concepts_only():
    grammar = SentenceGrammar(LANGUAGES["ru_ru"], ["vase", "paint"])
    assert grammar.text_only_words == {"ваза", "вазу", "покрасил", "покрасила"}
    assert not grammar.text_only_words & grammar.paired_vocabulary
    # Italian "ha dipinto": "ha" is shared with other verbs, so only "dipinto" is text-only
    assert SentenceGrammar(LANGUAGES["it_it"], ["paint"]).text_only_words == {"dipinto"}


def test_unknown_held_out_concept_is_a_clear_error():
    with pytest.raises(ValueError, match="unicorn"):
        SentenceGrammar(LANGUAGES["en_us"], ["unicorn"])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"languages": ["xx_yy"]}, "languages"),
        ({"test_voices": ["m1"]}, "test_voices must not occur in train_voices"),
        ({"test_text_only_fraction": 1.5}, "test_text_only_fraction"),
        ({"speed_wpm": [200, 100]}, "speed_wpm"),
        ({"voices_per_sentence": 99}, "voices_per_sentence"),
        ({"pretrain_pseudo_word_fraction": -0.1}, "pretrain_pseudo_word_fraction"),
    ],
)
def test_bad_settings_are_rejected_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        small_config(**changes).validate()


def test_plan_is_deterministic_and_splits_are_disjoint():
    cfg = small_config(train_sentences=50, test_sentences=20, unpaired_sentences=300)
    first, second = make_plan(cfg), make_plan(cfg)
    for a, b in zip(first, second, strict=True):
        assert [u.sentence.raw for u in a.utterances["train"]] == [u.sentence.raw for u in b.utterances["train"]]
        assert [u.voice for u in a.utterances["test"]] == [u.voice for u in b.utterances["test"]]
        sets = {split: {u.sentence.text for u in rows} for split, rows in a.utterances.items()}
        sets["unpaired"] = {s.text for s in a.unpaired}
        names = sorted(sets)
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                assert not sets[x] & sets[y], (a.code, x, y)
    # a bigger training set leaves the test set as it was
    bigger = make_plan(small_config(train_sentences=80, test_sentences=20, unpaired_sentences=300))
    for a, b in zip(first, bigger, strict=True):
        assert [u.sentence.text for u in a.utterances["test"]] == [u.sentence.text for u in b.utterances["test"]]


def test_made_up_words_are_spelled_from_the_inventory_and_never_a_lexicon_word():
    from tiny_corpus.pseudowords import SPELLINGS

    for code, lang in LANGUAGES.items():
        grammar = SentenceGrammar(lang, ["bicycle", "yellow", "paint"])
        source = grammar.pseudo_words()
        letters = set("".join(SPELLINGS[code].onsets + SPELLINGS[code].vowels + SPELLINGS[code].codas))
        rng = random.Random(1)
        words = [source.word(rng) for _ in range(300)]
        assert len(set(words)) > 250, code  # thousands of spellings, not a few
        assert all(set(w) <= letters and len(w) >= 4 for w in words), code
        assert not set(words) & grammar.lexicon_words, code
        assert grammar.text_only_words <= grammar.lexicon_words
    # Russian made-up nouns are indeclinable neuters ending in a vowel, like loanwords
    source = SentenceGrammar(LANGUAGES["ru_ru"]).pseudo_words()
    nouns = [source.noun(random.Random(i)) for i in range(50)]
    assert all(n.gender == "n" and n.nom[-1] in "оеиу" and n.form("acc") == n.nom for n in nouns)
    # German nouns are capitalised
    assert SentenceGrammar(LANGUAGES["de_de"]).pseudo_words().noun(random.Random(0)).nom[0].isupper()


def test_only_pretrain_sentences_get_made_up_words():
    plain = make_plan(small_config(pretrain_sentences=400, pretrain_pseudo_word_fraction=0.0))
    spelled = make_plan(small_config(pretrain_sentences=400, pretrain_pseudo_word_fraction=0.25))
    for a, b in zip(plain, spelled, strict=True):
        assert not any(u.sentence.pseudo_words for rows in a.utterances.values() for u in rows)
        for split in ("test", "validation", "train"):  # the evaluation data does not change
            assert [u.sentence.raw for u in a.utterances[split]] == [u.sentence.raw for u in b.utterances[split]]
        assert not any(s.pseudo_words for s in b.unpaired)
        pretrain = [u.sentence for u in b.utterances["pretrain"]]
        with_made_up = [s for s in pretrain if s.pseudo_words]
        # the name and the object noun are each made up with probability 0.25
        assert 0.2 < len(with_made_up) / len(pretrain) < 0.45, b.code
        grammar = SentenceGrammar(LANGUAGES[b.code], small_config().held_out_concepts)
        for s in with_made_up:
            assert set(s.pseudo_words) <= set(s.text.split()), s.text
            assert not set(s.pseudo_words) & grammar.lexicon_words
            assert not set(s.text.split()) & grammar.text_only_words


def test_a_request_the_grammar_cannot_meet_fails_clearly():
    from tiny_corpus.plan import _draw_unique

    grammar = SentenceGrammar(LANGUAGES["en_us"], [])  # nothing held out ...
    with pytest.raises(ValueError, match="could only draw 0 of 1"):
        # ... so no sentence can use a held-out concept
        _draw_unique(grammar, random.Random(0), 1, set(), True, True, "test")


def test_missing_espeak_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("ESPEAK_NG", str(tmp_path / "no-such-espeak"))
    with pytest.raises(SynthesisError) as info:
        find_espeak()
    assert str(info.value) == ESPEAK_INSTALL_HINT
    assert "apt-get install -y espeak-ng" in str(info.value)


# ---- the built corpus --------------------------------------------------------------------
@needs_espeak
def test_layout_and_manifest_columns(corpus):
    out, summary = corpus
    assert (out / "corpus.json").is_file() and (out / "text_only_words.json").is_file()
    assert summary["status"] == "complete"
    for code in SMALL["languages"]:
        for split in ("pretrain", "train", "validation", "test"):
            rows = read_tsv(out / code / f"{split}.tsv")
            assert rows, (code, split)
            assert list(rows[0]) == ["path", "transcription", "raw_transcription", "language", "speaker", "duration"]
            for row in rows:
                assert (out / code / row["path"]).is_file()
                assert row["language"] == LANGUAGES[code].name
        for split in ("pretrain", "train"):
            expected = SMALL[f"{split}_sentences"] * SMALL["voices_per_sentence"]
            assert len(read_tsv(out / code / f"{split}.tsv")) == expected
        unpaired = (out / code / "unpaired.txt").read_text(encoding="utf-8").splitlines()
        assert len(unpaired) == SMALL["unpaired_sentences"] and all(unpaired)
        splits = summary["languages"][code]["splits"]
        assert splits["pretrain"]["sentences_with_made_up_words"] > 0
        assert all(splits[s]["sentences_with_made_up_words"] == 0 for s in ("train", "validation", "test"))


@needs_espeak
def test_audio_is_16k_mono_speech_with_matching_durations(corpus):
    import numpy as np
    import soundfile as sf

    out, _ = corpus
    for code in SMALL["languages"]:
        for row in read_tsv(out / code / "test.tsv")[:4]:
            samples, rate = sf.read(str(out / code / row["path"]), dtype="float32", always_2d=True)
            assert rate == 16_000 and samples.shape[1] == 1
            assert abs(samples.shape[0] / rate - float(row["duration"])) < 1e-3
            assert 0.5 < float(row["duration"]) < 8.0
            assert float(np.sqrt(np.mean(samples**2))) > 0.01  # not silence


@needs_espeak
def test_splits_share_no_sentence_and_test_voice_is_unseen(corpus):
    out, summary = corpus
    for code in SMALL["languages"]:
        texts = {s: {r["transcription"] for r in read_tsv(out / code / f"{s}.tsv")} for s in PAIRED}
        texts["unpaired"] = set((out / code / "unpaired.txt").read_text(encoding="utf-8").splitlines())
        for a in texts:
            for b in texts:
                if a < b:
                    assert not texts[a] & texts[b], (code, a, b)
        speakers = {s: {r["speaker"] for r in read_tsv(out / code / f"{s}.tsv")} for s in PAIRED}
        assert not speakers["test"] & (speakers["pretrain"] | speakers["train"] | speakers["validation"])
        assert speakers["test"] <= set(summary["test_voices"])


@needs_espeak
def test_text_only_words_occur_only_in_unpaired_text_and_test(corpus):
    out, summary = corpus
    text_only = json.loads((out / "text_only_words.json").read_text(encoding="utf-8"))
    for code in SMALL["languages"]:
        words = set(text_only[code])
        assert words
        for split in ("pretrain", "train", "validation"):
            for row in read_tsv(out / code / f"{split}.tsv"):
                assert not set(row["transcription"].split()) & words, (code, split, row["transcription"])
        test_words = [w for r in read_tsv(out / code / "test.tsv") for w in r["transcription"].split()]
        occurrences = sum(w in words for w in test_words)
        assert occurrences >= SMALL["test_sentences"] // 2
        assert occurrences == summary["languages"][code]["test_text_only_word_occurrences"]
        unpaired_words = set((out / code / "unpaired.txt").read_text(encoding="utf-8").split())
        assert words & unpaired_words


@needs_espeak
def test_astra_reads_the_corpus(corpus):
    from astra.data.local_corpus import find_manifests, load_local_corpus

    out, _ = corpus
    found = find_manifests(out)
    assert set(found) == set(SMALL["languages"])
    assert all(set(splits) == set(PAIRED) for splits in found.values())
    utts = load_local_corpus(out, splits=["test"])
    assert len(utts) == 2 * SMALL["test_sentences"]
    assert all(u.duration and u.speaker and Path(u.path).is_file() for u in utts)


@needs_espeak
def test_rerun_skips_done_work_and_refuses_other_settings(corpus):
    out, summary = corpus
    wav = next((out / "en_us" / "audio" / "train").glob("*.wav"))
    manifest = out / "en_us" / "train.tsv"
    stamps = (wav.stat().st_mtime_ns, manifest.stat().st_mtime_ns)
    again = build_corpus(small_config(), out, workers=2, progress=False)
    assert again == summary
    assert (wav.stat().st_mtime_ns, manifest.stat().st_mtime_ns) == stamps
    with pytest.raises(ValueError, match="train_sentences"):
        build_corpus(small_config(train_sentences=13), out, workers=2, progress=False)


@needs_espeak
def test_interrupted_build_is_finished(tmp_path):
    cfg = small_config(languages=["en_us"], pretrain_sentences=0, train_sentences=3, validation_sentences=1,
                       test_sentences=2, unpaired_sentences=5, voices_per_sentence=1)
    out = tmp_path / "corpus"
    build_corpus(cfg, out, workers=2, progress=False)
    victim = out / "en_us" / "audio" / "test" / "en_us_test_00001.wav"
    victim.unlink()
    (out / "en_us" / "test.tsv").unlink()
    summary = build_corpus(cfg, out, workers=2, progress=False)
    assert victim.is_file() and (out / "en_us" / "test.tsv").is_file()
    assert summary["synthesis"]["utterances"] == 1


@needs_espeak
def test_a_corpus_built_before_a_setting_existed_counts_as_its_default(tmp_path):
    cfg = small_config(languages=["en_us"], pretrain_sentences=0, train_sentences=2, validation_sentences=1,
                       test_sentences=2, unpaired_sentences=5, voices_per_sentence=1,
                       pretrain_pseudo_word_fraction=0.0)
    out = tmp_path / "corpus"
    build_corpus(cfg, out, workers=2, progress=False)
    summary_file = out / "corpus.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    del summary["settings"]["pretrain_pseudo_word_fraction"]  # as written before the setting existed
    summary_file.write_text(json.dumps(summary), encoding="utf-8")
    build_corpus(cfg, out, workers=2, progress=False)  # the default: the same corpus
    with pytest.raises(ValueError, match="pretrain_pseudo_word_fraction"):
        build_corpus(small_config(**{**cfg.to_dict(), "pretrain_pseudo_word_fraction": 0.5}), out, workers=2,
                     progress=False)
