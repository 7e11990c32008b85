"""Two CPU processes (torchrun + gloo) train like one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from train_fakes import FakeTrainConfig, build_fake_parts

from astra.config import load_config
from astra.train.trainer import Trainer

HERE = Path(__file__).resolve().parent
COMMON = [
    "run.max_steps=5",  # 10 global batches: 12 in an epoch, so epoch 0 only
    "run.save_every=100",
    "run.validate_every=5",  # at the end: sharded over the processes
    "model.dropout=0.0",  # per-rank dropout masks cannot match one process's masks
    "optim.warmup_steps=1",
    "losses.ramps={}",
    "data.empty_batches=[3]",  # rank 1's second batch lost every utterance: a zero step, in step
]


def torchrun(out_dir: Path, *args: str) -> list[dict]:
    """Run tests/train_worker.py in 2 CPU processes; returns each process's result."""
    launcher = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(launcher), "--standalone", "--nproc_per_node", "2", str(HERE / "train_worker.py"),
           str(out_dir), *COMMON, "optim.grad_accum_steps=1", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out_dir / f"result_rank{r}.pt") for r in range(2)]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    results = torchrun(tmp_path / "ddp")
    assert all(r["world_size"] == 2 and "MULTI_CPU" in r["distributed_type"] for r in results)

    # one process, two micro-batches per step = the same global batch per step
    cfg = load_config(
        FakeTrainConfig, None, [f"run.out_dir={tmp_path / 'one'}", *COMMON, "optim.grad_accum_steps=2"]
    )
    single = Trainer(cfg, build_fake_parts)
    single.run()
    want = {k: v.detach() for k, v in single.model.state_dict().items()}
    for r in results:
        for k, v in want.items():
            torch.testing.assert_close(r["params"][k], v, atol=1e-6, rtol=1e-5, msg=k)

    # validation sharded over two processes = validation in one process
    two = json.loads((tmp_path / "ddp/run/checkpoints/step-00000005/trainer_state.json").read_text())
    one = json.loads((tmp_path / "one/checkpoints/step-00000005/trainer_state.json").read_text())
    assert two["valid"].keys() == one["valid"].keys() and "wer/xx" in one["valid"]
    for k, v in one["valid"].items():
        assert two["valid"][k] == pytest.approx(v, abs=1e-5), k

    seen = [key for r in results for _, key in r["seen"]]
    assert max(Counter(seen).values()) == 1, "an utterance was seen twice in one epoch"
    assert sorted(seen) == sorted(key for _, key in single.stream.seen)


@pytest.mark.slow
def test_two_processes_stop_together_and_resume_exactly(tmp_path):
    straight = torchrun(tmp_path / "straight")
    # SIGTERM in rank 0 only, while it makes global batch 4 (its step 2): both ranks stop
    # after step 2 (0-based) and save; the resumed pair ends where the uninterrupted one did
    first = torchrun(tmp_path / "b", "data.interrupt_at_batch=4", "data.interrupt_signal=SIGTERM")
    assert [r["step"] for r in first] == [3, 3]
    assert first[0]["stopped_by"] == "SIGTERM" and first[1]["stopped_by"] is not None
    second = torchrun(tmp_path / "b", "--resume")
    for rank in range(2):
        assert second[rank]["step"] == 5
        assert first[rank]["seen"] + second[rank]["seen"] == straight[rank]["seen"]
        for k, v in straight[rank]["params"].items():
            assert torch.equal(second[rank]["params"][k], v), k
