"""Run the trainer on the fake model/stream in one process of a ``torchrun`` job.

    torchrun --standalone --nproc_per_node 2 tests/train_worker.py OUT_DIR [--resume] [KEY=VALUE ...]

Each process writes ``OUT_DIR/result_rank<r>.pt``: final parameters and the keys it saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from train_fakes import FakeTrainConfig, build_fake_parts  # noqa: E402

from astra.config import load_config  # noqa: E402
from astra.train.trainer import Trainer  # noqa: E402


def main() -> None:
    out_dir = Path(sys.argv[1])
    resume = "--resume" in sys.argv[2:]
    overrides = [a for a in sys.argv[2:] if a != "--resume"]
    cfg = load_config(FakeTrainConfig, None, [f"run.out_dir={out_dir / 'run'}", *overrides])
    trainer = Trainer(cfg, build_fake_parts, resume=resume)
    trainer.run()
    rank = trainer.accelerator.process_index
    torch.save(
        {
            "params": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "seen": trainer.stream.seen,
            "world_size": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "step": trainer.state.step,
            "stopped_by": trainer.stopped_by,
        },
        out_dir / f"result_rank{rank}.pt",
    )


if __name__ == "__main__":
    main()
