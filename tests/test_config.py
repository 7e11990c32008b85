"""astra.config: strict YAML <-> dataclass loading, overrides, one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from astra.cli import main
from astra.config import ConfigError, load_config, save_config, to_dict
from astra.train.config import TrainConfig


@dataclass
class Inner:
    rate: float = 0.5
    names: list[str] = field(default_factory=list)
    mode: Literal["a", "b"] = "a"
    limit: int | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 10
    flag: bool = False
    table: dict[str, Inner] = field(default_factory=dict)


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_are_typed(tmp_path):
    path = write(tmp_path, "inner:\n  rate: 1\n  names: [x]\nsteps: 3\ntable:\n  k: {rate: 2.5}\n")
    cfg = load_config(Outer, path, ["inner.names=[en_us, hi_in]", "flag=true", "inner.limit=7",
                                    "table.k.mode=b", "table.new.rate=1e-3"])
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert cfg.inner.names == ["en_us", "hi_in"]
    assert cfg.flag is True and cfg.steps == 3 and cfg.inner.limit == 7
    assert cfg.table["k"] == Inner(rate=2.5, mode="b")
    assert cfg.table["new"].rate == pytest.approx(1e-3)


def test_unknown_key_names_the_key(tmp_path):
    path = write(tmp_path, "inner:\n  rat: 1.0\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, path)
    msg = str(e.value)
    assert "unknown key 'inner.rat'" in msg and str(path) in msg and "\n" not in msg


def test_wrong_type_names_the_key(tmp_path):
    for text, needle in [
        ("steps: 2.5\n", "steps: expected an integer, got 2.5"),
        ("flag: 1\n", "flag: expected true/false"),
        ("inner:\n  rate: fast\n", "inner.rate: expected a number, got 'fast'"),
        ("inner:\n  names: en\n", "inner.names: expected a list"),
        ("inner:\n  mode: c\n", "inner.mode: 'c' is not one of 'a', 'b'"),
        ("inner: 3\n", "inner: expected a mapping"),
    ]:
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
            load_config(Outer, write(tmp_path, text))


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(Outer, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"cfg.yaml line 2: invalid YAML"):
        load_config(Outer, write(tmp_path, "steps: 1\n  bad: [\n"))
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(Outer, write(tmp_path, "- 1\n- 2\n"))


def test_bad_overrides(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'inner.nope'"):
        load_config(Outer, None, ["inner.nope=1"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(Outer, None, ["steps"])
    with pytest.raises(ConfigError, match="'steps' has no sub-keys"):
        load_config(Outer, None, ["steps.x=1"])
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        load_config(Outer, None, ["steps=many"])


def test_train_config_round_trip_and_validation(tmp_path):
    cfg = load_config(TrainConfig, None, ["losses.consistency=0.25", "optim.lr=3e-4", "data.languages=[hi_in]"])
    save_config(cfg, tmp_path / "saved.yaml")
    again = load_config(TrainConfig, tmp_path / "saved.yaml")
    assert to_dict(again) == to_dict(cfg)
    assert again.losses.consistency == 0.25 and again.data.languages == ["hi_in"]
    with pytest.raises(ConfigError, match="model.num_heads"):
        load_config(TrainConfig, None, ["model.d_model=100", "model.num_heads=3"])
    with pytest.raises(ConfigError, match="optim.decay='cos'"):
        load_config(TrainConfig, None, ["optim.decay=cos"])
    with pytest.raises(ConfigError, match="losses.ramps.astro: no loss of that name"):
        load_config(TrainConfig, None, ["losses.ramps.astro.start=3"])
    text = ["data.unpaired_text=[en_us=x.txt]", "data.text_ratio=0.5"]
    with pytest.raises(ConfigError, match="model.text_mask_prob=0"):
        load_config(TrainConfig, None, [*text, "model.text_mask_prob=0"])
    load_config(TrainConfig, None, [*text, "model.text_mask_prob=0", "losses.text_aligner=0"])  # no text CE
    with pytest.raises(ConfigError, match="consistency_alignment='pruned'.*losses.rnnt=0"):  # an untrained joiner
        load_config(TrainConfig, None, ["model.consistency_alignment=pruned", "losses.rnnt=0"])
    load_config(TrainConfig, None, ["model.consistency_alignment=pruned", "losses.rnnt=0.5"])
    entry = ["model.text_entry_layer=1", "model.consistency_layer=1"]  # text enters above shared layer 1
    with pytest.raises(ConfigError, match="losses.text_rnnt=0.5 .* below model.text_entry_layer=1"):
        load_config(TrainConfig, None, [*entry, "losses.text_rnnt=0.5"])
    load_config(TrainConfig, None, [*entry, "losses.text_rnnt=0"])
    for bad in ("run.num_threads=-1", "run.alignment_every=-2", "run.feature_stats_utterances=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(TrainConfig, None, [bad])


def test_cli_prints_one_line_errors(tmp_path, capsys):
    assert main(["pretrain", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config file not found" in err and "missing.yaml" in err

    path = write(tmp_path, "optim:\n  lr: 1e-3\n")
    assert main(["pretrain", "--config", str(path), "--set", "optim.learning_rate=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'optim.learning_rate'" in err

    path = write(tmp_path, "run:\n  max_steps: ten\n")
    assert main(["pretrain", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run.max_steps: expected an integer, got 'ten'" in err


def test_recipe_training_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "recipes"
    files = sorted(p for p in root.rglob("*.yaml") if "pretrain" in p.name or "finetune" in p.name)
    assert files, "no recipe training configs found"
    for path in files:
        cfg = load_config(TrainConfig, path)
        assert cfg.run.max_steps >= 1, path


def test_config_and_errors_do_not_import_the_cli():
    """The core points one way: ``astra.config`` and ``astra.errors`` load without ``astra.cli``,
    and the CLI's ``UserError`` is the one ``ConfigError`` derives from."""
    import subprocess
    import sys

    code = "import sys, astra.config, astra.errors; print('astra.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from astra.cli import UserError
    from astra.errors import ConfigError as CoreConfigError

    assert ConfigError is CoreConfigError and issubclass(ConfigError, UserError)


def test_data_subsampling_factor_is_derived_from_the_model(tmp_path):
    from astra.train.config import load_train_config

    assert load_config(TrainConfig, None, ["model.subsampling=6"]).data.subsampling_factor == 6
    path = write(tmp_path, "model:\n  subsampling: 8\n")
    assert load_train_config(path, []).data.subsampling_factor == 8
    assert load_train_config(path, ["data.subsampling_factor=8"]).data.subsampling_factor == 8
    with pytest.raises(ConfigError, match="data.subsampling_factor=4 differs from model.subsampling=8"):
        load_train_config(path, ["data.subsampling_factor=4"])


def test_literal_fields_are_checked_when_loaded_and_when_built_in_code():
    from astra.config import check_choices
    from astra.model.config import ModelConfig
    from astra.train.sections import RunConfig

    with pytest.raises(ConfigError, match="model.consistency_distance: 'l1' is not one of 'mae', 'mse'"):
        load_config(TrainConfig, None, ["model.consistency_distance=l1"])
    with pytest.raises(ConfigError, match="run.decode_method: 'greedy' is not one of 'aligner_greedy'"):
        load_config(TrainConfig, None, ["run.decode_method=greedy"])
    with pytest.raises(ValueError, match=r"model.consistency_distance='l1': use one of \('mae', 'mse'\)"):
        ModelConfig(consistency_distance="l1").validate()
    with pytest.raises(ValueError, match="run.best_metric='cer'"):
        RunConfig(best_metric="cer").validate()
    check_choices(Inner(limit=None), "inner.")  # defaults pass
    with pytest.raises(ValueError, match="inner.mode='c'"):
        check_choices(Inner(mode="c"), "inner.")


def test_the_old_astra_loss_keys_name_the_consistency_keys(tmp_path):
    path = write(tmp_path, "losses:\n  astra: 0.2\n")
    with pytest.raises(ConfigError, match="'losses.astra' was renamed: use 'losses.consistency'"):
        load_config(TrainConfig, path)
    with pytest.raises(ConfigError, match="'losses.astra' was renamed: use 'losses.consistency'"):
        load_config(TrainConfig, None, ["losses.astra=0.0"])
    with pytest.raises(ConfigError, match="'losses.ramps.astra' was renamed: use 'losses.ramps.consistency'"):
        load_config(TrainConfig, None, ["losses.ramps.astra.start=5"])
    cfg = load_config(TrainConfig, None, ["losses.consistency=0.2", "losses.ramps.consistency.start=5"])
    assert cfg.losses.consistency == 0.2 and cfg.losses.ramps["consistency"].start == 5


def test_the_old_astra_model_keys_name_the_consistency_keys(tmp_path):
    path = write(tmp_path, "model:\n  astra_layer: 1\n")
    with pytest.raises(ConfigError, match="'model.astra_layer' was renamed: use 'model.consistency_layer'"):
        load_config(TrainConfig, path)
    with pytest.raises(ConfigError, match="'model.astra' was renamed: use 'model.consistency'"):
        load_config(TrainConfig, None, ["model.astra=false"])
    renamed = "'model.astra_stop_gradient' was renamed: use 'model.consistency_stop_gradient'"
    with pytest.raises(ConfigError, match=renamed):
        load_config(TrainConfig, None, ["model.astra_stop_gradient=text"])
    cfg = load_config(TrainConfig, None, ["model.consistency=false", "model.consistency_layer=1"])
    assert cfg.model.consistency is False and cfg.model.consistency_layer == 1


def test_upgrade_model_config_renames_the_astra_fields_and_refuses_both_names():
    from astra.model.config import upgrade_model_config

    saved = {"astra_lam": 0.5, "astra_mode": "weighted_rnnt", "d_model": 64}
    assert upgrade_model_config(saved) == {"consistency_lam": 0.5, "consistency_mode": "weighted_rnnt", "d_model": 64}
    assert saved == {"astra_lam": 0.5, "astra_mode": "weighted_rnnt", "d_model": 64}  # the input is left as it was
    current = {"consistency_lam": 0.5, "d_model": 64}
    assert upgrade_model_config(current) == current
    with pytest.raises(ConfigError, match="old.yaml: model.astra_lam and model.consistency_lam are both set"):
        upgrade_model_config({"astra_lam": 0.5, "consistency_lam": 1.0}, "old.yaml")
