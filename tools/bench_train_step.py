#!/usr/bin/env python
"""Training-step cost of one config under several settings, measured side by side.

    python tools/bench_train_step.py --config exp/tiny/pretrain/config.yaml \\
        --variant base= --variant workers1=data.num_workers=1 \\
        --variant cache="data.feature_cache=/tmp/astra_fcache" [--steps 40] [--rounds 3]

Each variant is ``NAME=KEY=VALUE[,KEY=VALUE...]`` (``astra pretrain --set`` overrides; an
empty list is the config as it is). Every round builds a fresh trainer per variant (same seed,
so the same batches) and times ``--steps`` training steps after ``--warmup`` untimed ones. The
variants run in turn within each round, so a slower or busier machine affects all of them
alike; a feature cache is filled by the first round and read by the later ones. Prints a
markdown table: seconds per step per round, the median, and its ratio to the first variant.
Everything a trainer writes goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name=k=v,k2=v2"`` -> ``("name", ["k=v", "k2=v2"])``; raises ``ValueError``."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--variant {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...] or NAME=")
    overrides = [kv for kv in rest.split(",") if kv]
    bad = [kv for kv in overrides if "=" not in kv]
    if bad:
        raise ValueError(f"--variant {text!r}: {bad} is not KEY=VALUE")
    return name, overrides


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a training config YAML (e.g. a run's config.yaml)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                   help="a setting to time (repeatable; the first is the reference)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--start-step", type=int, default=0,
                   help="the trainer's step counter at the start (past warm-up / loss ramps)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--steps and --rounds must be >= 1, --warmup >= 0")
    try:
        args.variants = [parse_variant(v) for v in (args.variant or ["config="])]
    except ValueError as e:
        p.error(str(e))
    names = [n for n, _ in args.variants]
    if len(set(names)) != len(names):
        p.error(f"variant names must differ: {names}")
    return args


def time_steps(config: str, overrides: list[str], out_dir: Path, steps: int, warmup: int, start_step: int) -> float:
    """Seconds per training step of a fresh trainer (``warmup`` steps untimed)."""
    from astra.config import load_config
    from astra.train.build import build_parts
    from astra.train.config import TrainConfig
    from astra.train.trainer import Trainer

    sets = [f"run.out_dir={out_dir}", "run.validate_every=0", "run.plot_every=0", "run.alignment_every=0"]
    cfg = load_config(TrainConfig, config, sets + overrides)
    trainer = Trainer(cfg, build_parts)
    trainer._setup()
    trainer.state.step = start_step
    for _ in range(warmup):
        trainer._train_step()
        trainer.state.step += 1
    start = time.perf_counter()
    for _ in range(steps):
        trainer._train_step()
        trainer.state.step += 1
    seconds = (time.perf_counter() - start) / steps
    trainer._close()
    return seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    if not Path(args.config).is_file():
        print(f"bench_train_step: config not found: {args.config}", file=sys.stderr)
        return 2
    per_round: dict[str, list[float]] = {name: [] for name, _ in args.variants}
    with tempfile.TemporaryDirectory(prefix="astra_bench_train_") as tmp:
        for r in range(args.rounds):
            for name, overrides in args.variants:
                out = Path(tmp) / f"{name}_{r}"
                s = time_steps(args.config, overrides, out, args.steps, args.warmup, args.start_step)
                per_round[name].append(s)
                print(f"round {r + 1}/{args.rounds} {name}: {s:.3f} s/step", file=sys.stderr, flush=True)
    ref = statistics.median(per_round[args.variants[0][0]])
    rounds = " | ".join(f"round {r + 1}" for r in range(args.rounds))
    print(f"\n{args.steps} steps per round, config {args.config}\n")
    print(f"| variant | overrides | {rounds} | median (s/step) | vs {args.variants[0][0]} |")
    print("|---|---|" + "---:|" * (args.rounds + 2))
    for name, overrides in args.variants:
        med = statistics.median(per_round[name])
        cells = " | ".join(f"{s:.3f}" for s in per_round[name])
        print(f"| {name} | {' '.join(overrides) or '(config)'} | {cells} | {med:.3f} | {med / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
