"""End to end: ``astra evaluate`` / ``astra transcribe`` on a tiny trained checkpoint."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import jiwer
import pytest
from audio_fixtures import CONTAINERS, write_container
from tiny_eval_checkpoint import LANGUAGES, one_thread, tiny_setup

from astra.cli import main
from astra.eval.report import read_hyps_tsv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _evaluate(tiny, out, *extra):
    return main([
        "evaluate", "--checkpoint", str(tiny.checkpoint), "--data", str(tiny.corpus),
        "--output-dir", str(out), "--no-progress", *extra,
    ])


def test_evaluate_writes_consistent_outputs(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _evaluate(tiny, out) == 0
    stdout = capsys.readouterr().out
    for name in ("results.json", "results.csv", "hyps.tsv", "error_rates.png", "results.md"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "error_rates.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "results.json").read_text())
    hyps = read_hyps_tsv(out / "hyps.tsv")

    # every test utterance of both languages was decoded once
    assert data["meta"]["utterances"] == len(hyps) == 6
    assert {h["language"] for h in hyps} == set(LANGUAGES)
    assert len({h["key"] for h in hyps}) == len(hyps)

    # the utterance list re-scored independently with jiwer gives the per-language counts
    errors, units = defaultdict(int), defaultdict(int)
    for h in hyps:
        ref, hyp = h["reference"], h["hypothesis"]
        if h["language"].startswith("cmn"):
            ref_units = list(ref.replace(" ", ""))
            out_ = jiwer.process_characters(ref.replace(" ", ""), hyp.replace(" ", "") or "")
        else:
            ref_units = ref.split()
            out_ = jiwer.process_words(ref, hyp)
        e = out_.substitutions + out_.deletions + out_.insertions
        assert int(h["errors"]) == e and int(h["ref_units"]) == len(ref_units)
        errors[h["language"]] += e
        units[h["language"]] += len(ref_units)
    langs = {d["language"]: d for d in data["languages"]}
    assert langs["en_us"]["metric"] == "WER" and langs["cmn_hans_cn"]["metric"] == "CER"
    for lang in LANGUAGES:
        assert langs[lang]["errors"] == errors[lang]
        assert langs[lang]["ref_units"] == units[lang]
        assert langs[lang]["error_rate"] == pytest.approx(errors[lang] / units[lang])
    assert data["pooled"]["errors"] == sum(errors.values())
    assert data["pooled"]["error_rate"] == pytest.approx(sum(errors.values()) / sum(units.values()))
    macro = sum(errors[lang] / units[lang] for lang in LANGUAGES) / len(LANGUAGES)
    assert data["macro"]["error_rate"] == pytest.approx(macro)

    # CSV and markdown carry the same numbers
    rows = {r["language"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert float(rows["pooled"]["error_rate"]) == pytest.approx(data["pooled"]["error_rate"])
    assert float(rows["macro"]["error_rate"]) == pytest.approx(macro)
    assert int(rows["en_us"]["errors"]) == errors["en_us"]
    assert f"{100 * data['pooled']['error_rate']:.2f}" in stdout
    assert "**pooled**" in stdout and "**macro**" in stdout and "cmn_hans_cn" in stdout

    # real-time factor = decode seconds / audio seconds, reported
    meta = data["meta"]
    assert meta["audio_seconds"] > 0 and meta["decode_seconds"] > 0
    assert meta["rtf"] == pytest.approx(meta["decode_seconds"] / meta["audio_seconds"])
    assert "Real-time factor" in stdout


@pytest.mark.parametrize("method", ["aligner_beam", "aligner_ctc_beam", "rnnt_greedy", "ctc_greedy", "ctc_beam",
                                    "ctc_beam_rescore"])
def test_evaluate_other_heads_and_searches(tiny, tmp_path, method):
    out = tmp_path / method
    assert _evaluate(tiny, out, "--method", method, "--beam", "2", "--languages", "en_us") == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["method"] == method
    assert [d["language"] for d in data["languages"]] == ["en_us"]
    assert data["utterances"] == 3


def test_evaluate_no_normalize_and_default_folder(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([
        "evaluate", "--checkpoint", str(tiny.checkpoint.parent.parent), "--data", str(tiny.corpus),
        "--no-normalize", "--no-progress", "--cer-languages", "cmn", "en",
    ]) == 0
    folders = list((tmp_path / "exp" / "eval").iterdir())
    assert [f.name for f in folders] == ["run_step-00000030__corpus_test"]
    data = json.loads((folders[0] / "results.json").read_text())
    assert data["meta"]["normalize"] is False
    assert {d["metric"] for d in data["languages"]} == {"CER"}


def test_evaluate_user_errors(tiny, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tiny.checkpoint)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--data", str(tiny.corpus)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    for flag, value in (("--ctc-weight", "1.5"), ("--beam", "0")):
        for command in (["evaluate", "--data", str(tiny.corpus)], ["transcribe", str(tiny.audio)]):
            assert main([*command, "--checkpoint", str(tiny.checkpoint), flag, value]) == 2
            assert f"{flag} must be" in capsys.readouterr().err


def test_transcribe_text_json_and_long_form(tiny, tmp_path, capsys):
    assert main(["transcribe", str(tiny.audio), "--checkpoint", str(tiny.checkpoint)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{tiny.audio}\t")
    assert main([
        "transcribe", str(tiny.audio), str(tiny.long_audio), "--checkpoint", str(tiny.checkpoint),
        "--json", "--chunk-seconds", "2",
    ]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["path"] for i in items] == [str(tiny.audio), str(tiny.long_audio)]
    assert items[0]["long_form"] is False and items[1]["long_form"] is True
    assert items[1]["duration"] == pytest.approx(5.0, abs=0.01)
    assert all(isinstance(i["text"], str) for i in items)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    assert main(["transcribe", str(bad), "--checkpoint", str(tiny.checkpoint)]) == 1
    assert "skipped" in capsys.readouterr().err
    assert main(["transcribe", str(tmp_path / "missing.wav"), "--checkpoint", str(tiny.checkpoint)]) == 2


def test_transcribe_reads_every_container_and_reports_an_empty_file(tiny, tmp_path, capsys):
    import soundfile as sf

    paths = []
    for case in CONTAINERS:
        suffix, fmt, subtype, _, _ = case
        if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
            continue  # test_data_audio skips it with the reason
        paths.append(str(write_container(tmp_path, case)))
    assert len(paths) >= 10
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    code = main(["transcribe", *paths, str(empty), "--checkpoint", str(tiny.checkpoint), "--json"])
    captured = capsys.readouterr()
    items = json.loads(captured.out)
    assert code == 1 and [i["path"] for i in items] == [*paths, str(empty)]
    assert all("error" not in i and i["duration"] == pytest.approx(1.0, abs=0.01) for i in items[:-1])
    assert "empty audio file" in items[-1]["error"]
    assert f"skipped {empty}: empty audio file" in captured.err


def test_evaluate_fleurs_configs_from_a_local_parquet_copy(tiny, tmp_path):
    import soundfile as sf

    from astra.data.fleurs import write_fleurs_split

    fleurs_dir = tmp_path / "fleurs"
    for config in LANGUAGES:
        rows = []
        lines = (tiny.corpus / config / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
        for line in lines:
            rel, text = line.split("\t")[:2]
            audio = tiny.corpus / config / rel
            rows.append({
                "num_samples": sf.info(str(audio)).frames,
                "path": audio.name,
                "audio": {"bytes": audio.read_bytes(), "path": audio.name},
                "transcription": text,
            })
        write_fleurs_split(rows, fleurs_dir, config, "test")
    out = tmp_path / "eval"
    assert main([
        "evaluate", "--checkpoint", str(tiny.checkpoint), "--fleurs", *LANGUAGES,
        "--fleurs-dir", str(fleurs_dir), "--output-dir", str(out), "--no-progress",
    ]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["fleurs"] == list(LANGUAGES) and data["utterances"] == 6
    assert {d["language"]: d["metric"] for d in data["languages"]} == {
        "cmn_hans_cn": "CER", "en_us": "WER",
    }
    hyps = read_hyps_tsv(out / "hyps.tsv")
    assert all(h["key"].split("/")[0] in LANGUAGES for h in hyps)


def test_evaluate_counts_unreadable_audio_as_skipped(tiny, tmp_path, capsys):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny.corpus, corpus)
    victim = sorted((corpus / "en_us" / "audio").glob("test_*"))[0]
    victim.write_bytes(b"this is not audio")
    out = tmp_path / "eval"
    assert main([
        "evaluate", "--checkpoint", str(tiny.checkpoint), "--data", str(corpus),
        "--output-dir", str(out), "--no-progress",
    ]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["utterances"] == 5
    assert sum(data["meta"]["skipped"].values()) == 1
    assert "skipped utterances" in capsys.readouterr().out


def test_force_language_needs_a_model_with_language_tags(tiny, tmp_path, capsys):
    assert _evaluate(tiny, tmp_path / "forced", "--force-language") == 2
    assert "without language tags" in capsys.readouterr().err
    assert _evaluate(tiny, tmp_path / "forced_ctc", "--force-language", "--method", "ctc_greedy") == 2
    assert "aligner_* method" in capsys.readouterr().err
    assert not (tmp_path / "forced").exists()
