"""``astra.inference.load_model`` (checkpoint, exported folder, Hub repo id), ``astra export``
and the refusal of pickled weights."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from astra.cli import main
from astra.inference import HUB_FILES, load_model, locate_model
from astra.model.config import ModelConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained ``tiny`` checkpoint (en_us + ru_ru tokenizer) and its corpus."""
    from astra.config import save_config
    from astra.data.synthetic import write_local_corpus
    from astra.data.tokenizer import TokenizerTrainConfig, train_tokenizer
    from astra.model import AstraModel, preset
    from astra.text_norm import normalize_text
    from astra.train.checkpoint import save_model_weights
    from astra.train.config import TrainConfig

    root = tmp_path_factory.mktemp("inference")
    corpus = write_local_corpus(root / "corpus", ("en_us", "ru_ru"), splits={"train": 4, "test": 2},
                                seconds=(1.0, 1.5))
    sentences = {}
    for lang in ("en_us", "ru_ru"):
        lines = (corpus / lang / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
        sentences[lang] = [normalize_text(line.split("\t")[1]) for line in lines]
    ckpt = root / "run" / "checkpoints" / "step-00000005"
    ckpt.mkdir(parents=True)
    tok = train_tokenizer(sentences, ckpt / "tokenizer.model", TokenizerTrainConfig(vocab_size=50, alpha=1.0))
    cfg = TrainConfig()
    cfg.model = preset("tiny", spec_augment=False, dropout=0.0)
    cfg.data.corpora = [str(corpus)]
    cfg.data.unpaired_text = [f"en_us={root / 'secret' / 'en.txt'}"]
    torch.manual_seed(0)
    save_config(cfg, ckpt / "config.yaml")
    save_model_weights(AstraModel(cfg.model, tok.vocab_size), ckpt / "model.safetensors")
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 5, "valid": {"wer/en_us": 0.5}}))
    return ckpt, corpus


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_model_from_checkpoint_and_run_folder(tiny):
    ckpt, _ = tiny
    loaded = load_model(ckpt.parent.parent)  # run folder: its latest checkpoint
    assert loaded.files.folder == ckpt.resolve() and loaded.files.kind == "checkpoint"
    assert not loaded.model.training and loaded.tokenizer.vocab_size == loaded.model.vocab_size
    assert loaded.config.model.d_model == loaded.model.cfg.d_model
    with pytest.raises(ValueError, match="no such folder"):
        load_model(ckpt.parent / "nothing-here")


def test_export_writes_a_hub_folder_that_loads_back(tiny, tmp_path, capsys):
    ckpt, corpus = tiny
    out = tmp_path / "astra-tiny"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out),
                 "--eval-root", str(tmp_path / "no-evals")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                    "tokenizer.model"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "astra" and config["vocab_size"] == load_model(ckpt).tokenizer.vocab_size
    assert "secret" not in (out / "config.json").read_text()  # no local paths
    assert config["training"]["corpora"] == ["corpus"] and config["training"]["steps"] == 5
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: astra" in card
    assert "No `astra evaluate` results" in card and "| en_us | WER | 50.00 |" in card
    assert "astra export --checkpoint" in card
    exported, original = load_model(out), load_model(ckpt)
    assert exported.files.kind == "export" and _same_weights(exported.model, original.model)
    assert exported.config.data == original.config.data.__class__(
        **{**original.config.data.__dict__, "corpora": [], "unpaired_text": [], "tokenizer": None}
    )
    # an export into a non-empty folder is refused
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_export_card_carries_the_evaluation_table_and_command(tiny, tmp_path):
    ckpt, corpus = tiny
    evals = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(corpus), "--no-progress",
                 "--output-root", str(evals)]) == 0
    results = json.loads(next(evals.glob("*/results.json")).read_text())
    out = tmp_path / "card"
    assert main(["export", "--checkpoint", str(ckpt.parent.parent), "--out", str(out),
                 "--eval-root", str(evals)]) == 0
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    metrics = {r["dataset"]["config"]: r["metrics"][0] for r in meta["model-index"][0]["results"]}
    for lang in results["languages"]:
        assert metrics[lang["language"]]["value"] == round(100 * lang["error_rate"], 2)
        assert f"| {lang['language']} | {lang['metric']} | {lang['utterances']} |" in card
    assert f"astra evaluate --checkpoint {ckpt.resolve()} --data {corpus}" in card
    assert "No `astra evaluate` results" not in card
    assert set(meta["language"]) == {"en", "ru"}


def test_hub_repo_id_is_downloaded_without_pickles(tiny, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    ckpt, corpus = tiny
    out = tmp_path / "hub"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    capsys.readouterr()
    asked = []

    def fake_snapshot_download(**kwargs):
        asked.append(kwargs)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    audio = sorted((corpus / "en_us" / "audio").glob("test_*"))[0]
    assert main(["transcribe", str(audio), "--checkpoint", "someone/astra-tiny@v1"]) == 0
    assert capsys.readouterr().out.startswith(str(audio))
    assert asked[0]["repo_id"] == "someone/astra-tiny" and asked[0]["revision"] == "v1"
    assert asked[0]["allow_patterns"] == HUB_FILES
    assert not any(p.endswith((".bin", ".pt", ".pkl", ".ckpt")) for p in asked[0]["allow_patterns"])
    files = locate_model("someone/astra-tiny")
    assert files.repo_id == "someone/astra-tiny" and files.kind == "export"
    # a repo id that cannot be fetched is one line
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda **kw: (_ for _ in ()).throw(OSError("offline")))
    assert main(["transcribe", str(audio), "--checkpoint", "someone/missing"]) == 2
    assert "could not be fetched: offline" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["pytorch_model.bin", "model.safetensors"])
def test_pickled_weights_are_refused_unread(tiny, tmp_path, monkeypatch, capsys, layout):
    ckpt, corpus = tiny
    good = tmp_path / "good"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(good)]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.json", "tokenizer.model"):
        (bad / name).write_bytes((good / name).read_bytes())
    torch.save(load_model(good).model.state_dict(), bad / layout)  # a pickle
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(ValueError, match="pickle"):
        load_model(bad)
    audio = sorted((corpus / "en_us" / "audio").glob("test_*"))[0]
    assert main(["transcribe", str(audio), "--checkpoint", str(bad)]) == 2
    assert "refused" in capsys.readouterr().err


def test_check_safetensors_accepts_a_header_length_that_reads_pk(tmp_path):
    """A safetensors header of 0x4B50 bytes starts the file with ``PK`` and is still valid."""
    import json as json_

    from safetensors.torch import load_file

    from astra.inference import check_safetensors

    meta = {"__metadata__": {"pad": ""}}
    meta["__metadata__"]["pad"] = "x" * (0x4B50 - len(json_.dumps(meta)))
    header = json_.dumps(meta).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    assert path.read_bytes()[:2] == b"PK"
    check_safetensors(path)
    assert load_file(str(path)) == {}
    (tmp_path / "junk.safetensors").write_bytes(b"hello world, not weights")
    with pytest.raises(ValueError, match="not a safetensors file"):
        check_safetensors(tmp_path / "junk.safetensors")


def test_weights_that_do_not_fit_the_config_are_one_error(tiny, tmp_path):
    ckpt, _ = tiny
    out = tmp_path / "exp"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    config["model"]["pred_dim"] = config["model"]["pred_dim"] * 2
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="weights do not fit its config"):
        load_model(out)
    (out / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not an astra model config"):
        load_model(out)


def test_inference_and_evaluation_do_not_import_the_training_package(tmp_path):
    """Layers point one way: loading a model and evaluating it need nothing of ``astra.train``
    (checkpoint paths live in ``astra.checkpoint_paths``), even when a run folder is resolved
    to its latest checkpoint."""
    import subprocess
    import sys

    step = tmp_path / "run" / "checkpoints" / "step-00000003"
    step.mkdir(parents=True)
    for name in ("model.safetensors", "config.yaml", "tokenizer.model", "trainer_state.json"):
        (step / name).write_text("{}")
    modules = "astra.inference, astra.eval, astra.eval.evaluate, astra.eval.transcribe, astra.eval.report"
    code = (f"import sys, {modules}; found = astra.inference.locate_model({str(tmp_path / 'run')!r}); "
            "print(found.folder.name, sorted(m for m in sys.modules if m.startswith('astra.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "step-00000003 []"


OLD_CONSISTENCY_FIELDS = dict(  # older versions' names of the consistency loss's model fields
    astra=True, astra_layer=1, astra_mode="weighted_rnnt", astra_distance="mse", astra_lam=0.5,
    astra_alignment="pruned", astra_stop_gradient="text",
)


def test_old_checkpoints_with_zero_for_off_and_astra_names_still_load(tiny, tmp_path, caplog):
    """Older versions saved "off" layer indices as 0 and named the consistency loss's fields
    ``astra*``; such checkpoints load (0 as null, the fields under their new names, an INFO
    line for each), and a config written today with 0 for an off-switch is refused with the
    fix in the message."""
    import shutil

    from astra.config import ConfigError, load_config
    from astra.train.config import TrainConfig, load_train_config

    ckpt, _ = tiny
    old = tmp_path / "old"
    shutil.copytree(ckpt, old)
    raw = yaml.safe_load((old / "config.yaml").read_text(encoding="utf-8"))
    for name in ModelConfig.RENAMED_KEYS.values():
        del raw["model"][name]
    raw["model"].update(inter_aligner_layer=0, transduction_kl_layer=0, **OLD_CONSISTENCY_FIELDS)
    (old / "config.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    with caplog.at_level("INFO", logger="astra.model.config"):
        loaded = load_model(old)
    messages = [record.getMessage() for record in caplog.records]
    assert any("model.astra, model.astra_alignment" in m and "read as model.consistency, "
               "model.consistency_alignment" in m for m in messages), messages
    assert any("model.inter_aligner_layer, model.transduction_kl_layer = 0 read as null" in m for m in messages)
    model_cfg = loaded.config.model
    new_fields = {new: getattr(model_cfg, new) for new in ModelConfig.RENAMED_KEYS.values()}
    assert new_fields == {ModelConfig.RENAMED_KEYS[old]: value for old, value in OLD_CONSISTENCY_FIELDS.items()}
    assert loaded.model.cfg == model_cfg
    assert model_cfg.inter_aligner_layer is None and model_cfg.transduction_kl_layer is None
    finetune = tmp_path / "finetune.yaml"
    finetune.write_text("optim:\n  lr: 1.0e-4\n", encoding="utf-8")
    assert load_train_config(finetune, [], init=old).model == model_cfg  # astra finetune --init OLD
    assert loaded.config.model.inter_ctc_layer == loaded.model.cfg.inter_ctc_layer >= 1
    assert _same_weights(loaded.model, load_model(ckpt).model)
    with pytest.raises(ConfigError, match="model.inter_aligner_layer=0: use null for off"):
        load_config(TrainConfig, None, ["model.inter_aligner_layer=0"])
    assert load_config(TrainConfig, None, ["model.inter_ctc_layer=null"]).model.inter_ctc_layer is None
