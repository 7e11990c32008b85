"""Two CPU processes (torchrun + gloo) train like one process on the same global batch."""

from __future__ import annotations

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
    "run.validate_every=0",
    "model.dropout=0.0",  # per-rank dropout masks cannot match one process's masks
    "optim.warmup_steps=1",
    "losses.ramps={}",
]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        str(torchrun), "--standalone", "--nproc_per_node", "2",
        str(HERE / "train_worker.py"), str(tmp_path / "ddp"), *COMMON, "optim.grad_accum_steps=1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [torch.load(tmp_path / "ddp" / f"result_rank{r}.pt") for r in range(2)]
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

    seen = [key for r in results for _, key in r["seen"]]
    assert max(Counter(seen).values()) == 1, "an utterance was seen twice in one epoch"
    assert sorted(seen) == sorted(key for _, key in single.stream.seen)
