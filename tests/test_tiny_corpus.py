"""The tiny recipe's corpus builder (tools/build_tiny_corpus.py, tools/tiny_corpus/)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from tiny_corpus.build import build_corpus  # noqa: E402
from tiny_corpus.fortunes import (  # noqa: E402
    FortunesMissing,
    entry_sentences,
    fortune_files,
    read_sentences,
    split_entries,
    usable,
)
from tiny_corpus.languages import LANGUAGES  # noqa: E402
from tiny_corpus.plan import TinyCorpusConfig, make_plan, split_sentences  # noqa: E402
from tiny_corpus.synth import ESPEAK_INSTALL_HINT, SynthesisError, find_espeak  # noqa: E402

IN_CI = os.environ.get("CI") == "true"
FORTUNES_INSTALLED = all(
    Path(f"/var/lib/dpkg/info/{p}.list").is_file() for lang in LANGUAGES.values() for p in lang.packages
)
needs_fortunes = pytest.mark.skipif(
    not FORTUNES_INSTALLED and not IN_CI,
    reason="fortunes packages not installed (apt-get install -y fortunes fortunes-min fortunes-de "
    "fortunes-es fortunes-it fortunes-ru); required in CI",
)
needs_espeak = pytest.mark.skipif(
    (shutil.which("espeak-ng") is None or not FORTUNES_INSTALLED) and not IN_CI,
    reason="espeak-ng or the fortunes packages not installed (tools/setup_env.sh); required in CI",
)

PAIRED = ("pretrain", "train", "validation", "test")
SMALL = dict(
    languages=["en_us", "ru_ru"],
    pretrain_sentences=10,
    train_sentences=6,
    validation_sentences=4,
    test_sentences=8,
    max_unpaired_sentences=60,
    voices_per_sentence=2,
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


# ---- reading the fortunes (fake packages: no Debian package needed) ------------------------
def fake_package(tmp_path: Path, name: str, files: dict[str, bytes]) -> tuple[Path, Path]:
    """A dpkg info folder listing ``files`` (written under a fake fortunes folder)."""
    root, info = tmp_path / "fortunes", tmp_path / "info"
    info.mkdir(exist_ok=True)
    listed = [str(root)]
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        listed.append(str(path))
    (info / f"{name}.list").write_text("\n".join(listed) + "\n", encoding="utf-8")
    return info, root


def test_entries_attributions_and_sentences():
    data = ("Eins zwei drei vier.\r\n%\nErster Satz hier ist gut. Zweiter\nSatz kommt danach, ja!\n"
            "\t\t-- Autor\n  Buch\n%\n")
    entries = [e.decode() for e in split_entries(data.encode())]
    assert entries == ["Eins zwei drei vier.",
                       "Erster Satz hier ist gut. Zweiter\nSatz kommt danach, ja!\n\t\t-- Autor\n  Buch"]
    assert entry_sentences(entries[1]) == ["Erster Satz hier ist gut.", "Zweiter Satz kommt danach, ja!"]
    # a closing quote stays with its sentence
    sentences = entry_sentences('Er sagte: "Das ist so." Dann ging er weg.')
    assert sentences == ['Er sagte: "Das ist so."', "Dann ging er weg."]


@pytest.mark.parametrize(
    "code, raw, reason",
    [
        ("en_us", "It is difficult to soar with eagles.", ""),
        ("en_us", "Only three words.", "length"),
        ("en_us", " ".join(["word"] * 15) + ".", "length"),
        ("en_us", "There were 3 of them here.", "digit"),
        ("en_us", "Mail me at foo@bar if you can.", "symbol"),
        ("en_us", "Ein schöner Tag ist heute.", "other letters"),
        ("ru_ru", "Всё течёт, всё меняется, говорил он.", ""),
        ("ru_ru", "Это был Windows в офисе.", "other letters"),
        ("de_de", "Die Straße ist heute naß und grau.", ""),
        ("it_it", "L'uomo è un animale sociale, dicono.", ""),
    ],
)
def test_usable_sentences(code, raw, reason):
    sentence, why = usable(raw, LANGUAGES[code])
    assert why == reason
    assert (sentence is None) == bool(reason)
    if sentence:
        assert sentence.raw == raw and sentence.text == sentence.text.lower()


def test_read_sentences_skips_off_dat_links_undecodable_and_duplicates(tmp_path):
    good = "Das ist ein guter Satz.\n%\nDAS ist ein GUTER Satz!\n%\nNoch ein Satz mit Worten.\n%\n".encode()
    bad = "Dies ist ein Satz gut.\n%\n".encode() + "Kaputt und \xfc kaputt hier.\n%\n".encode("latin-1")
    info, root = fake_package(tmp_path, "fortunes-de", {
        "de/a": good, "de/b": bad, "de/off/c": b"Das ist ein schlimmer Satz.\n%\n", "de/a.dat": b"\0\1",
    })
    (root / "de" / "link").symlink_to(root / "de" / "a")
    (info / "fortunes-de.list").write_text(
        (info / "fortunes-de.list").read_text() + str(root / "de" / "link") + "\n", encoding="utf-8")
    assert fortune_files(["fortunes-de"], info, root) == [root / "de" / "a", root / "de" / "b"]
    sentences, stats = read_sentences(LANGUAGES["de_de"], info, root)
    assert [s.text for s in sentences] == ["das ist ein guter satz", "noch ein satz mit worten",
                                           "dies ist ein satz gut"]
    assert stats.undecodable_entries == 1 and stats.dropped == {"duplicate": 1} and stats.files == 2


def test_missing_fortunes_package_names_the_apt_get_command(tmp_path):
    with pytest.raises(FortunesMissing, match="apt-get install -y fortunes-it"):
        read_sentences(LANGUAGES["it_it"], tmp_path, tmp_path)


# ---- planning ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"languages": ["xx_yy"]}, "languages"),
        ({"test_voices": ["m1"]}, "test_voices must not occur in train_voices"),
        ({"speed_wpm": [200, 100]}, "speed_wpm"),
        ({"voices_per_sentence": 99}, "voices_per_sentence"),
        ({"max_pool_sentences": -1}, "max_pool_sentences"),
    ],
)
def test_bad_settings_are_rejected_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        small_config(**changes).validate()


def test_split_sentences_test_first_disjoint_and_too_few_is_an_error():
    from tiny_corpus.fortunes import Sentence

    pool = [Sentence(f"s{i}", f"s{i}") for i in range(100)]
    cfg = small_config(max_unpaired_sentences=0)
    sentences, unpaired = split_sentences(cfg, "en_us", pool)
    texts = [s.text for split in PAIRED for s in sentences[split]] + [s.text for s in unpaired]
    assert sorted(texts) == sorted(s.text for s in pool)  # every sentence once
    assert {k: len(v) for k, v in sentences.items()} == {"test": 8, "validation": 4, "train": 6, "pretrain": 10}
    bigger, _ = split_sentences(small_config(pretrain_sentences=50, train_sentences=20), "en_us", pool)
    assert bigger["test"] == sentences["test"]  # test does not depend on the other sizes
    other_seed, _ = split_sentences(small_config(seed=5), "en_us", pool)
    assert other_seed["test"] == sentences["test"] and other_seed["train"] != sentences["train"]
    assert split_sentences(small_config(test_seed=5), "en_us", pool)[0]["test"] != sentences["test"]
    with pytest.raises(ValueError, match="fewer than the 28"):
        split_sentences(cfg, "en_us", pool[:27])


@needs_fortunes
def test_plan_is_deterministic_and_has_text_only_words():
    cfg = small_config(train_sentences=50, test_sentences=20, max_unpaired_sentences=0, max_pool_sentences=2000)
    first, second = make_plan(cfg), make_plan(cfg)
    for a, b in zip(first, second, strict=True):
        assert [u.sentence.raw for u in a.utterances["train"]] == [u.sentence.raw for u in b.utterances["train"]]
        assert [u.voice for u in a.utterances["test"]] == [u.voice for u in b.utterances["test"]]
        assert len(a.unpaired) == 2000 - 20 - 50 - 4 - 10
        paired = {w for split in ("pretrain", "train") for u in a.utterances[split] for w in u.sentence.text.split()}
        unpaired = {w for s in a.unpaired for w in s.text.split()}
        assert a.text_only_words and all(w in unpaired and w not in paired for w in a.text_only_words)


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
        assert len(unpaired) == SMALL["max_unpaired_sentences"] and all(unpaired)
        info = summary["languages"][code]
        assert info["usable_sentences"] > 5000 and info["undecodable_entries"] == 0
        assert info["paired_word_types"] > 20 and info["test_words"] >= 4 * SMALL["test_sentences"]


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
def test_text_only_words_are_in_unpaired_text_and_no_training_transcript(corpus):
    out, summary = corpus
    text_only = json.loads((out / "text_only_words.json").read_text(encoding="utf-8"))
    unseen_words = json.loads((out / "unseen_words.json").read_text(encoding="utf-8"))
    for code in SMALL["languages"]:
        words = set(text_only[code])
        unpaired_words = set((out / code / "unpaired.txt").read_text(encoding="utf-8").split())
        assert words <= unpaired_words
        for split in ("pretrain", "train"):
            for row in read_tsv(out / code / f"{split}.tsv"):
                assert not set(row["transcription"].split()) & words, (code, split, row["transcription"])
        paired = {w for s in ("pretrain", "train") for r in read_tsv(out / code / f"{s}.tsv")
                  for w in r["transcription"].split()}
        info = summary["languages"][code]
        for split in ("validation", "test"):
            split_words = [w for r in read_tsv(out / code / f"{split}.tsv") for w in r["transcription"].split()]
            assert sum(w in words for w in split_words) == info[f"{split}_text_only_word_occurrences"]
            unseen = sum(w not in paired and w not in unpaired_words for w in split_words)
            assert unseen == info[f"{split}_unseen_word_occurrences"]
            assert unseen == sum(w in set(unseen_words[code]) for w in split_words)
        assert info["test_text_only_word_occurrences"] > 0


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
                       test_sentences=2, max_unpaired_sentences=5, voices_per_sentence=1)
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
                       test_sentences=2, max_unpaired_sentences=5, voices_per_sentence=1, test_seed=1)
    out = tmp_path / "corpus"
    build_corpus(cfg, out, workers=2, progress=False)
    summary_file = out / "corpus.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    del summary["settings"]["test_seed"]  # as written before the setting existed
    summary_file.write_text(json.dumps(summary), encoding="utf-8")
    build_corpus(cfg, out, workers=2, progress=False)  # the default: the same corpus
    with pytest.raises(ValueError, match="test_seed"):
        build_corpus(small_config(**{**cfg.to_dict(), "test_seed": 2}), out, workers=2, progress=False)
