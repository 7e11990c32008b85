"""Batch stream: bad data skipped by name and counted, batch dicts, sharding, exact resume."""

import json

import pytest
import soundfile as sf
import torch

from astra.data.config import DataConfig
from astra.data.stream import build_eval_batches, build_train_stream, compute_feature_stats
from astra.data.synthetic import tone, write_local_corpus
from astra.data.tokenizer import TokenizerTrainConfig, train_tokenizer
from astra.data.training_text import collect_training_text


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_local_corpus(tmp_path_factory.mktemp("corpus"), splits={"train": 10, "validation": 2, "test": 2},
                              seconds=(0.8, 2.0))
    tok = train_tokenizer(collect_training_text(DataConfig(corpora=[str(root)]))[0], root / "tok.model",
                          TokenizerTrainConfig(vocab_size=60, language_tags=True, character_coverage=1.0))
    return root, tok


def _add_bad_rows(root):
    lang = root / "en_us"
    (lang / "audio" / "corrupt.wav").write_bytes(b"RIFF not really a wave file" * 20)
    (lang / "audio" / "corrupt2.flac").write_bytes(b"fLaC garbage" * 20)
    (lang / "audio" / "empty.wav").write_bytes(b"")
    sf.write(str(lang / "audio" / "short.wav"), tone(0.3, 16000), 16000)
    rows = [
        "audio/corrupt.wav\tthe fox\ten_us\tspkX\t1.0",  # duration given: fails when decoded
        "audio/corrupt2.flac\tthe dog\ten_us\tspkX\t",  # no duration: fails at the header
        "audio/empty.wav\tthe dog\ten_us\tspkX\t",
        "audio/short.wav\t ?! \ten_us\tspkX\t0.3",  # empty after normalisation
        "audio/short.wav\t" + " ".join(["quick brown fox"] * 10) + "\ten_us\tspkX\t0.3",  # key repeats...
        "audio/missing.wav\tthe fox\ten_us\tspkX\t1.0",
    ]
    rows[4] = rows[4].replace("audio/short.wav", "audio/../audio/short.wav")  # ...so give it another key
    rows.append("audio/train_0000.wav\tthe fox ω\ten_us\tspkX\t")  # duplicate key, and ω
    rows.append("audio/./train_0001.flac\tthe fox ω\ten_us\tspkX\t")  # unencodable ω
    with open(lang / "train.tsv", "a", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")


def test_bad_data_skipped_with_reasons_rest_intact(corpus, tmp_path):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(corpus[0], root)
    good = [f"{lang}/train/{line.split(chr(9))[0]}" for lang in ("en_us", "ru_ru")
            for line in (root / lang / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    assert len(good) == 20
    _add_bad_rows(root)
    tok = corpus[1]
    with pytest.raises(ValueError, match=r"train speech en_us: 7 of 18 utterances skipped \(39 % > "
                       r"data.max_skip_fraction=0.2; .*\); mostly duplicate_key: remove the repeated"):
        build_train_stream(DataConfig(corpora=[str(root)], max_batch_seconds=5.0), tok)
    stream = build_train_stream(DataConfig(corpora=[str(root)], max_batch_seconds=5.0, max_skip_fraction=0.5), tok)
    keys = [k for b in stream for k in b["keys"]]
    assert sorted(keys) == sorted(good)  # every good utterance exactly once
    assert stream.skip_summary()["speech"] == {
        "duplicate_key": 1, "empty_audio": 1, "empty_transcript": 1, "missing_audio": 1,
        "transcript_too_long": 1, "unencodable_text": 1, "unreadable_audio": 2,
    }


def test_check_cli_json_reports_problems(corpus, tmp_path, capsys):
    import shutil

    from astra.cli import main

    root = tmp_path / "c"
    shutil.copytree(corpus[0], root)
    _add_bad_rows(root)
    assert main(["data", "check", str(root), "--json", "--tokenizer", str(root / "tok.model")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"en_us", "ru_ru"}
    en = report["en_us"]["train"]
    assert en["utterances"] == 10 and en["speakers"] == 3 and en["hours"] > 0
    assert en["skipped"] == {"empty_audio": 1, "empty_transcript": 1, "missing_audio": 1, "transcript_too_long": 1,
                             "unencodable_text": 1, "unreadable_audio": 2}
    assert report["en_us"]["manifest"]["skipped"] == {"duplicate_key": 1}
    assert report["ru_ru"]["test"] == {"utterances": 2, "hours": report["ru_ru"]["test"]["hours"], "speakers": 2,
                                       "skipped": {}}
    assert main(["data", "check", str(root), "--strict"]) == 1
    out = capsys.readouterr().out
    # without a tokenizer the text checks (unencodable, too long) do not run
    assert "unreadable_audio" in out and "total: 30 utterances" in out and "duplicate_key" in out
    assert main(["data", "check", str(tmp_path / "nothing")]) == 2


def test_batch_dicts_follow_the_contract(corpus):
    root, tok = corpus
    cfg = DataConfig(corpora=[str(root)], max_batch_seconds=4.0, language_tags=True)
    stream = build_train_stream(cfg, tok)
    batch = next(iter(stream))
    B = len(batch["keys"])
    assert batch["kind"] == "speech" and B >= 1
    features = batch["features"]
    assert features.dtype == torch.float32 and features.shape[0] == B and features.shape[2] == 80
    assert batch["feature_lens"].dtype == torch.int64 and int(batch["feature_lens"].max()) == batch["features"].shape[1]
    assert batch["tokens"].dtype == torch.int64 and batch["tokens"].shape == (B, int(batch["token_lens"].max()))
    for b in range(B):
        u = int(batch["token_lens"][b])
        assert int(batch["tokens"][b, 0]) == tok.language_id(batch["languages"][b])  # <lang:xx> first
        assert (batch["tokens"][b, u:] == 0).all() and (batch["tokens"][b, :u] >= 4).all()
        assert abs(batch["durations"][b] * 100 - batch["feature_lens"][b]) < 3
        assert (batch["features"][b, batch["feature_lens"][b]:] == 0).all()
    assert batch["durations"].dtype == torch.float32 and len(batch["texts"]) == B


def _keys(batch):
    return batch["kind"], tuple(batch["keys"]) if batch["kind"] == "speech" else tuple(batch["texts"])


def test_mixed_stream_resume_ranks_and_workers(corpus, tmp_path):
    root, tok = corpus
    text = tmp_path / "en.txt"
    text.write_text("the lazy dog sings\nseven birds jump\nthe quick fox\nover the dog\n", encoding="utf-8")
    cfg = DataConfig(corpora=[str(root)], max_batch_seconds=4.0, text_ratio=0.5, unpaired_text=[f"en_us={text}"],
                     max_text_tokens_per_batch=30)
    full_stream = build_train_stream(cfg, tok, seed=4)
    full_stream.set_epoch(1)
    full = [_keys(b) for b in full_stream]
    assert len(full) == len(full_stream) and {k for k, _ in full} == {"speech", "text"}
    # mid-epoch state -> a fresh stream yields exactly the rest
    s = build_train_stream(cfg, tok, seed=4)
    s.set_epoch(1)
    it = iter(s)
    head = [_keys(next(it)) for _ in range(4)]
    state = json.loads(json.dumps(s.state_dict()))  # the state is plain JSON
    resumed = build_train_stream(cfg, tok, seed=4)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert head + [_keys(b) for b in resumed] == full
    # a state taken at the very end of an epoch resumes to nothing, then the next epoch
    end = build_train_stream(cfg, tok, seed=4)
    end.load_state_dict(full_stream.state_dict())
    assert list(end) == []
    end.set_epoch(2)
    full_stream.set_epoch(2)
    epoch2 = [_keys(b) for b in end]
    assert epoch2 == [_keys(b) for b in full_stream] and epoch2 != full
    # workers give the same batches
    cfg.num_workers = 2
    assert [_keys(b) for b in build_train_stream(cfg, tok, seed=4)] == [_keys(b) for b in build_train_stream(
        DataConfig(**{**cfg.__dict__, "num_workers": 0}), tok, seed=4)]
    # two ranks: same number of batches, speech utterances split without overlap
    cfg.num_workers = 0
    ranks = [[_keys(b) for b in build_train_stream(cfg, tok, rank=r, world_size=2, seed=4)] for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    speech = [k for r in ranks for kind, ks in r if kind == "speech" for k in ks]
    assert len(speech) == len(set(speech)) == 20


def test_unpaired_text_dedup_against_eval(corpus, tmp_path):
    root, tok = corpus
    test_line = (root / "en_us" / "test.tsv").read_text(encoding="utf-8").splitlines()[1].split("\t")[1]
    text = tmp_path / "en.txt"
    text.write_text(f"{test_line.upper()}!\nthe lazy dog\nthe lazy dog\n\n", encoding="utf-8")
    sentences, report = collect_training_text(DataConfig(corpora=[str(root)], unpaired_text=[f"en_us={text}"]))
    assert "the lazy dog" in sentences["en_us"] and test_line not in sentences["en_us"]
    assert "kept 1 of 4 lines" in report and "eval_overlap 1" in report and "duplicate_text 1" in report


def test_eval_batches_cover_split_in_fixed_order_languages_in_turn(corpus):
    root, tok = corpus
    cfg = DataConfig(corpora=[str(root)])
    a = [k for b in build_eval_batches(cfg, tok, split="validation", max_batch_seconds=2.5) for k in b["keys"]]
    b = [k for b in build_eval_batches(cfg, tok, split="validation", max_batch_seconds=100) for k in b["keys"]]
    assert len(a) == 4 and sorted(a) == sorted(b)
    assert [k.split("/")[0] for k in a] == ["en_us", "ru_ru", "en_us", "ru_ru"]  # languages take turns


def test_feature_cache_speed_perturb_and_stats(corpus, tmp_path):
    root, tok = corpus
    cfg = DataConfig(corpora=[str(root)], max_batch_seconds=100, feature_cache=str(tmp_path / "fc"))
    first = next(iter(build_train_stream(cfg, tok)))
    assert any((tmp_path / "fc").rglob("*.pt"))
    second = next(iter(build_train_stream(cfg, tok)))
    assert torch.equal(first["features"], second["features"])
    cfg_sp = DataConfig(corpora=[str(root)], max_batch_seconds=100, speed_perturb=True, speed_factors=[0.9, 1.1])
    perturbed = next(iter(build_train_stream(cfg_sp, tok)))
    assert perturbed["keys"] == first["keys"] and not torch.equal(perturbed["feature_lens"], first["feature_lens"])
    mean, std = compute_feature_stats(DataConfig(corpora=[str(root)]), max_utterances=5)
    assert mean.shape == (80,) and std.shape == (80,) and (std > 0).all()


def test_feature_cache_is_not_read_for_rewritten_audio(tmp_path):
    import os

    import numpy as np

    from astra.data.dataset import FeatureCache
    from astra.data.manifest import Utterance

    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(1600, dtype=np.float32), 16000)
    utt = Utterance(key="en_us/train/a.wav", language="en_us", split="train", transcription="a", path=str(wav))
    cache = FeatureCache(tmp_path / "fc")
    assert cache.get(utt) is None
    cache.put(utt, torch.ones(3, 80))
    assert torch.equal(cache.get(utt), torch.ones(3, 80))
    sf.write(str(wav), np.ones(3200, dtype=np.float32) * 0.1, 16000)  # the corpus rebuilt in place
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    assert cache.get(utt) is None
    in_memory = Utterance(key=utt.key, language="en_us", split="train", transcription="a", audio_bytes=b"x")
    cache.put(in_memory, torch.zeros(2, 80))
    assert cache.get(in_memory).shape == (2, 80)
    assert cache.get(Utterance(key=utt.key, language="en_us", split="train", transcription="a",
                               audio_bytes=b"y")) is None


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_encoder_frames_match_the_model_front_end(factor):
    from astra.data.dataset import subsampled_frames
    from astra.model.frontend import Conv2dSubsampling

    front = Conv2dSubsampling(80, 16, factor, 4)
    frames = torch.arange(0, 400)
    expected = front.output_lengths(frames).tolist()
    assert [subsampled_frames(t, factor) for t in frames.tolist()] == expected


def _with_czech(root, tok_root, unencodable: int, total: int = 10):
    """A ``cs_cz`` training split of ``total`` utterances, ``unencodable`` of them with
    characters the tokenizer lacks, and a validation split with one such transcript."""
    import shutil

    shutil.copytree(tok_root, root)
    cs = root / "cs_cz"
    (cs / "audio").mkdir(parents=True)
    rows = ["path\ttranscription\tlanguage\tspeaker\tduration"]
    for split, n, bad in (("train", total, unencodable), ("validation", 2, 1)):
        lines = list(rows)
        for i in range(n):
            sf.write(str(cs / "audio" / f"{split}{i}.wav"), tone(1.0, 16000), 16000)
            text = "příliš žluťoučký kůň" if i < bad else "the quick fox"
            lines.append(f"audio/{split}{i}.wav\t{text}\tcs_cz\tspk{i % 2}\t1.0")
        (cs / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_a_language_mostly_skipped_stops_before_training(corpus, tmp_path):
    root = _with_czech(tmp_path / "c", corpus[0], unencodable=8)
    cfg = DataConfig(corpora=[str(root)], max_batch_seconds=5.0)
    with pytest.raises(ValueError) as e:
        build_train_stream(cfg, corpus[1])
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("train speech cs_cz: 8 of 10 utterances skipped (80 % > data.max_skip_fraction=0.2; "
                              "unencodable_text 8); mostly unencodable_text (e.g. cs_cz/train/audio/train0.wav: "
                              "characters ")
    assert ("use a tokenizer that covers the language's characters: add its pieces with "
            "astra tokenizer extend") in message
    assert message.endswith("or raise data.max_skip_fraction to 0.8")
    build_train_stream(DataConfig(corpora=[str(root)], max_batch_seconds=5.0, max_skip_fraction=0.8), corpus[1])
    root2 = _with_czech(tmp_path / "c2", corpus[0], unencodable=2)  # 20 %: allowed
    assert build_train_stream(DataConfig(corpora=[str(root2)], max_batch_seconds=5.0), corpus[1])
    with pytest.raises(ValueError, match=r"max_skip_fraction must be in \[0, 1\], got 1.5"):
        build_train_stream(DataConfig(corpora=[str(root2)], max_skip_fraction=1.5), corpus[1])


def test_validation_reports_what_the_training_filters_would_skip(corpus, tmp_path, caplog):
    root = _with_czech(tmp_path / "c", corpus[0], unencodable=0)
    cfg = DataConfig(corpora=[str(root)], languages=["cs_cz"])
    with caplog.at_level("WARNING", logger="astra.data.stream"):
        batches = build_eval_batches(cfg, corpus[1], split="validation", report_training_skips=True)
    assert len(batches.utterances) == 2  # validation still scores every utterance
    assert ("validation validation: 1 of the 2 scored utterances would be skipped in training "
            "(unencodable_text 1); their errors count in the validation WER") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="astra.data.stream"):
        build_eval_batches(cfg, corpus[1], split="validation")  # astra evaluate: no report
    assert "would be skipped" not in caplog.text
