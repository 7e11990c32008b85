"""Checkpoint retention, weight loading reports and averaging (no training)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from astra.checkpoint_paths import latest_checkpoint
from astra.train import checkpoint as ckpt


def fake_checkpoint(root, step: int, metric: float | None, weight: float):
    folder = root / ckpt.checkpoint_name(step)
    folder.mkdir(parents=True)
    save_file({"w": torch.full((2, 2), weight), "n": torch.tensor([step])}, str(folder / ckpt.MODEL_FILE))
    (folder / ckpt.TRAINER_STATE).write_text(json.dumps({"step": step, "metric": metric}))
    return folder


def test_keep_last_and_best(tmp_path):
    for step, metric in [(1, 3.0), (2, 1.0), (3, None), (4, 2.0), (5, None), (6, 4.0)]:
        fake_checkpoint(tmp_path, step, metric, float(step))
    (tmp_path / ".tmp-step-00000007").mkdir()  # a crashed save: ignored
    (tmp_path / "step-00000008").mkdir()  # no trainer_state.json: incomplete, ignored
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    removed = ckpt.prune_checkpoints(tmp_path, keep_last=2, keep_best=2)
    assert sorted(p.name for p in removed) == ["step-00000001", "step-00000003"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "step-00000002", "step-00000004", "step-00000005", "step-00000006"]
    assert (tmp_path / "best").resolve().name == "step-00000002"
    assert ckpt.resolve_checkpoint(tmp_path).name == "step-00000006"
    assert ckpt.resolve_checkpoint(tmp_path / "best").name == "step-00000002"


def test_average_checkpoints(tmp_path):
    paths = [fake_checkpoint(tmp_path, s, None, float(s)) for s in (1, 2, 6)]
    avg = ckpt.average_checkpoints(paths)
    assert torch.equal(avg["w"], torch.full((2, 2), 3.0))
    assert torch.equal(avg["n"], torch.tensor([6]))  # integer tensors: from the last one
    out = ckpt.write_averaged_checkpoint(paths, tmp_path / "avg")
    assert json.loads((out / ckpt.TRAINER_STATE).read_text())["averaged_from"][0].endswith("step-00000001")
    other = tmp_path / "other"
    other.mkdir()
    save_file({"w": torch.zeros(3), "n": torch.tensor([0])}, str(other / ckpt.MODEL_FILE))
    with pytest.raises(ValueError, match="shape"):
        ckpt.average_checkpoints([paths[0], other])
    with pytest.raises(ValueError, match="at least one"):
        ckpt.average_checkpoints([])


def test_load_model_weights_reports_and_checks_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = {"0.weight": torch.ones(3, 2), "0.bias": torch.ones(3), "extra": torch.ones(1)}
    report = ckpt.load_model_weights(model, state, strict=False)
    assert report.loaded == ["0.bias", "0.weight"]
    assert report.missing == ["1.bias", "1.weight"] and report.unexpected == ["extra"]
    assert "kept initial values of 2" in report.summary()
    assert torch.equal(model[0].weight, torch.ones(3, 2))
    with pytest.raises(ValueError, match="does not fit"):
        ckpt.load_model_weights(model, state, strict=True)
    with pytest.raises(ValueError, match=r"0.weight \(4, 2\) in checkpoint vs \(3, 2\)"):
        ckpt.load_model_weights(model, {"0.weight": torch.ones(4, 2)}, strict=False)
