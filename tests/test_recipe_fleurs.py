"""The FLEURS recipe: `astra data text` (fast, on a local Wikipedia-schema corpus) and every stage
of recipes/fleurs/run.sh end to end on local copies of FLEURS and Wikipedia (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astra.data.fleurs import write_fleurs_split
from astra.data.text_corpus import read_corpus_map, split_sentences

REPO = Path(__file__).resolve().parent.parent
RUN_SH = REPO / "recipes" / "fleurs" / "run.sh"
TEXT_MAP = REPO / "recipes" / "fleurs" / "text_corpus.tsv"

# (config, espeak voice, Wikipedia code, train, dev, test sentences)
LANGS = [
    ("en_us", "en-us", "en",
     ["the cat sat on the mat", "a dog ran in the park", "the sun is warm today", "we like green tea",
      "the bird can sing", "my friend has a red car"],
     ["the river is long"], ["she reads a book"]),
    ("hi_in", "hi", "hi",
     ["मैं घर जाता हूँ", "यह एक किताब है", "पानी ठंडा है", "वह स्कूल गया", "आज मौसम अच्छा है", "हम खाना खाते हैं"],
     ["बच्चे खेल रहे हैं"], ["मेरा नाम राम है"]),
    ("cmn_hans_cn", "cmn", "zh",
     ["我们去学校", "今天天气很好", "他喜欢喝茶", "这是我的书", "妈妈在做饭", "小猫在睡觉"],
     ["我爱北京"], ["你好朋友"]),
]


def _espeak_wav(text: str, voice: str) -> bytes:
    return subprocess.run(["espeak-ng", "-v", voice, "-s", "170", "--stdout", text], capture_output=True,
                          check=True).stdout


def build_fleurs_copy(root: Path) -> Path:
    """FLEURS' parquet conversion layout: {config}/{split}/0000.parquet, espeak-ng audio (22.05 kHz)."""
    import io

    import soundfile as sf

    for config, voice, _, *splits in LANGS:
        for split, sentences in zip(("train", "validation", "test"), splits, strict=True):
            rows = []
            for i, text in enumerate(sentences):
                wav = _espeak_wav(text, voice)
                info = sf.info(io.BytesIO(wav))
                rows.append({"num_samples": int(info.frames * 16000 / info.samplerate),
                             "path": f"/fleurs/{split}/{config}_{split}_{i}.wav",
                             "audio": {"bytes": wav, "path": f"{config}_{split}_{i}.wav"},
                             "transcription": text, "raw_transcription": text})
            write_fleurs_split(rows, root, config, split)
    return root


def build_wikipedia_copy(root: Path) -> Path:
    """wikimedia/wikipedia's schema (id, url, title, text) as {dump}.{code}/train-00000-of-00001.parquet;
    every language's text contains its FLEURS dev and test sentences, which must be removed."""
    for _, _, code, train, dev, test in LANGS:
        end = "。" if code == "zh" else (" । " if code == "hi" else ". ")
        docs = [end.join([*train[:3], dev[0]]) + end, end.join([test[0], *train[3:]]) + end,
                end.join(train) + end]
        table = pa.table({"id": [str(i) for i in range(len(docs))],
                          "url": [f"https://{code}.wikipedia.org/wiki?curid={i}" for i in range(len(docs))],
                          "title": [f"t{i}" for i in range(len(docs))], "text": docs})
        folder = root / f"20231101.{code}"
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "train-00000-of-00001.parquet")
    return root


def test_text_map_covers_all_fleurs_configs():
    mapping = read_corpus_map(TEXT_MAP)
    assert len(mapping) == 102
    missing = sorted(c for c, code in mapping.items() if code is None)
    assert missing == ["kam_ke", "kea_cv", "luo_ke", "umb_ao"]
    assert mapping["nb_no"] == "no" and mapping["cmn_hans_cn"] == "zh" and mapping["yue_hant_hk"] == "zh-yue"


def test_split_sentences_scripts():
    assert split_sentences("A b. C d!\nE") == ["A b.", "C d!", "E"]
    assert split_sentences("मैं घर जाता हूँ। यह किताब है।") == ["मैं घर जाता हूँ।", "यह किताब है।"]
    assert split_sentences("我们去学校。今天很好！") == ["我们去学校。", "今天很好！"]


def test_data_text_removes_dev_test_sentences(tmp_path, capsys):
    from astra.cli import main

    fleurs = tmp_path / "fleurs"
    for config, _, _, train, dev, test in LANGS[:1]:
        for split, sentences in (("train", train), ("validation", dev), ("test", test)):
            rows = [{"num_samples": 1600, "path": f"{split}{i}.wav", "audio": {"bytes": b"", "path": "x"},
                     "transcription": s} for i, s in enumerate(sentences)]
            write_fleurs_split(rows, fleurs, config, split)
    wiki = build_wikipedia_copy(tmp_path / "wiki")
    out = tmp_path / "text"
    argv = ["data", "text", "--fleurs", "en_us,kam_ke", "--fleurs-dir", str(fleurs), "--corpus-files",
            str(wiki / "{config}" / "*.parquet"), "--max-sentences", "9", "--out", str(out),
            "--hf-cache-dir", str(tmp_path / "hf")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "kam_ke: skipped, the text corpus has no edition" in printed
    assert "en_us: 3 documents, 9 sentences, kept 6 (2 equal to a dev/test transcript removed)" in printed
    kept = (out / "en_us.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(kept) == sorted(LANGS[0][3])  # normalised; dev/test sentences and repeats gone
    assert len((out / "en_us.raw.txt").read_text(encoding="utf-8").splitlines()) == 9
    assert main([*argv[:3], "yo_xx", *argv[4:]]) == 2  # not in the map: a one-line error


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None and os.environ.get("CI") != "true",
                    reason="espeak-ng not installed (required in CI)")
def test_fleurs_recipe_end_to_end(tmp_path):
    start = time.monotonic()
    fleurs = build_fleurs_copy(tmp_path / "fleurs")
    wiki = build_wikipedia_copy(tmp_path / "wiki")
    work = tmp_path / "work"
    tiny_model = [
        "model.d_model=32", "model.num_heads=2", "model.speech_layers=1", "model.text_layers=1",
        "model.shared_layers=2", "model.inter_ctc_layer=1", "model.pred_dim=32", "model.joint_dim=32",
        "model.rnnt_pred_dim=32", "model.rnnt_joint_dim=32", "model.conv_kernel=7",
        "model.subsampling_channels=8", "data.speed_perturb=false",
    ]
    quick = ["data.num_workers=0", "data.max_batch_seconds=20", "data.max_text_tokens_per_batch=400",
             'run.mixed_precision="no"', "run.validate_every=0", "run.plot_every=0", "run.alignment_every=0",
             "run.log_every=1", "run.feature_stats_utterances=20", "optim.warmup_steps=1",
             "optim.grad_accum_steps=1", "run.keep_last=2"]
    args = ["bash", str(RUN_SH), "--langs", "en_us,hi_in,cmn_hans_cn", "--finetune-langs", "hi_in",
            "--fleurs-dir", str(fleurs), "--text-files", str(wiki / "{config}" / "*.parquet"),
            "--text-sentences", "50", "--vocab-size", "100", "--average-last", "2", "--work", str(work),
            "--lm-order", "3", "--lm-weights", "0.3,1.0", "--length-bonuses", "1",
            *[x for kv in quick for x in ("--set", kv)],
            *[x for kv in tiny_model for x in ("--pretrain-set", kv)],
            *[x for kv in ("run.max_steps=3", "run.save_every=3", "losses.ramps.consistency.start=1",
                           "losses.ramps.consistency.steps=1", "losses.ramps.text_aligner.start=0",
                           "losses.ramps.text_aligner.steps=1", "losses.identity_attention_steps=1")
              for x in ("--pretrain-set", kv)],
            *[x for kv in ("run.max_steps=2", "run.save_every=1", "run.best_metric=valid_loss")
              for x in ("--finetune-set", kv)]]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    elapsed = time.monotonic() - start

    check = (work / "check.txt").read_text(encoding="utf-8")
    assert "total: 24 utterances" in check and "0 problem(s)" in check
    for config, _, _, train, *_ in LANGS:
        kept = (work / "text" / f"{config}.txt").read_text(encoding="utf-8").splitlines()
        assert sorted(kept) == sorted(train)  # dev/test sentences and repeats removed
    assert (work / "tokenizer.model").is_file()
    for run in ("pretrain", "finetune"):
        assert (work / run / "DONE").is_file()
    assert (work / "averaged" / "model.safetensors").is_file()
    pre = json.loads((work / "eval" / "pretrain" / "results.json").read_text(encoding="utf-8"))
    assert sorted(x["language"] for x in pre["languages"]) == ["cmn_hans_cn", "en_us", "hi_in"]
    units = {x["language"]: x.get("metric") for x in pre["languages"]}
    assert units["cmn_hans_cn"] == "CER" and units["en_us"] == "WER"
    ft = json.loads((work / "eval" / "finetune" / "results.json").read_text(encoding="utf-8"))
    assert [x["language"] for x in ft["languages"]] == ["hi_in"]
    # CTC beam + LM: LM weight and bonus chosen on validation per model, then test
    for run, langs in (("pretrain", ["cmn_hans_cn", "en_us", "hi_in"]), ("finetune", ["hi_in"])):
        best = json.loads((work / "eval" / f"{run}_ctc_lm_sweep_validation" / "best.json").read_text())
        lm = json.loads((work / "eval" / f"{run}_ctc_lm" / "results.json").read_text(encoding="utf-8"))
        assert sorted(x["language"] for x in lm["languages"]) == langs
        assert lm["meta"]["method"] == "ctc_beam" and best["best_lm_weight"] in (0.3, 1.0)
        assert f"eval/{run}_ctc_lm/results.json: ctc_beam, pooled" in proc.stderr
    assert "| **pooled** (total errors" in proc.stdout and "| **macro** (mean of 3 languages)" in proc.stdout
    assert (work / "plots" / "attention.png").read_bytes()[:4] == b"\x89PNG"
    stages = [line.split("\t")[0] for line in (work / "timings.tsv").read_text().splitlines()]
    assert stages == ["check", "text", "tokenizer", "lm", "pretrain", "finetune", "average", "evaluate", "plot"]
    print(f"FLEURS recipe end to end: {elapsed:.0f} s")

    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("(skipped)") >= 8


def test_run_sh_help_and_bad_arguments():
    help_text = subprocess.run(["bash", str(RUN_SH), "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("check", "text", "tokenizer", "lm", "pretrain", "finetune", "average", "evaluate", "plot",
                 "--langs", "--gpus", "--finetune-langs", "--fleurs-dir", "--text-files", "--stage"):
        assert word in help_text, word
    for bad, message in ((["--stage", "train"], "unknown stage 'train'"),
                         (["--gpus", "3"], "--gpus must be 0, 1, 8 or 16"),
                         (["--langs"], "--langs needs a value")):
        proc = subprocess.run(["bash", str(RUN_SH), *bad], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, (bad, proc.stderr)


@pytest.mark.parametrize(("name", "processes", "machines"), [("1gpu", 1, 1), ("8gpu", 8, 1), ("2x8gpu", 16, 2)])
def test_accelerate_configs_load(name, processes, machines):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "recipes" / "fleurs" / "accelerate" / f"{name}.yaml"))
    assert (cfg.num_processes, cfg.num_machines, cfg.mixed_precision) == (processes, machines, "bf16")
