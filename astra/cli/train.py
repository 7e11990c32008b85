"""``astra pretrain``, ``astra finetune`` and ``astra average``.

    astra pretrain --config recipes/tiny/pretrain.yaml [--set optim.lr=3e-4 ...] [--resume]
    astra finetune --config recipes/fleurs/finetune.yaml --init exp/pre/checkpoints/best [...]
    astra average --run exp/ft --last 5 --out exp/ft/averaged

Several processes: ``accelerate launch -m astra pretrain ...`` on GPUs, or
``torchrun --nproc_per_node 2 -m astra pretrain ...`` on CPU (see docs/training.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from astra.errors import TrainingError, UserError

log = logging.getLogger(__name__)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="YAML run config (sections model, data, losses, optim, run, finetune)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=3e-4 --set data.languages=[hi_in] (repeatable)",
    )
    p.add_argument("--out-dir", default=None, help="same as --set run.out_dir=DIR")
    p.add_argument(
        "--resume", action="store_true",
        help="continue from the latest checkpoint in run.out_dir (start fresh if there is none)",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="train on paired speech + unpaired text (Aligner, heads, RNN-T, ASTRA)",
        description="Train a model from scratch with the losses, schedules and data of --config.",
    )
    _add_run_arguments(p)
    p.set_defaults(func=run_pretrain)

    p = subparsers.add_parser(
        "finetune",
        help="continue training from a pretrained checkpoint (e.g. on FLEURS languages)",
        description=(
            "Initialise from --init (shapes must match; missing/unexpected weights are listed), "
            "optionally freeze modules (finetune.freeze) and drop text injection "
            "(finetune.text_injection=false). Without a model section in --config the "
            "checkpoint's model config is used; without data.tokenizer, its tokenizer. "
            "finetune.tokenizer switches to another vocabulary (rows copied by piece string)."
        ),
    )
    _add_run_arguments(p)
    p.add_argument("--init", required=True,
                   help="pretrained checkpoint folder (or run folder: latest), a folder written by "
                        "'astra export', or a Hugging Face Hub repo id owner/name[@rev]")
    p.set_defaults(func=run_finetune)

    p = subparsers.add_parser(
        "average",
        help="average the weights of several checkpoints (for evaluation)",
        description="Write a checkpoint whose weights are the mean of the given checkpoints.",
    )
    p.add_argument("--checkpoints", nargs="+", default=[], metavar="DIR", help="checkpoint folders")
    p.add_argument("--run", default=None, help="run folder: average its last --last checkpoints")
    p.add_argument("--last", type=int, default=5, help="how many of the run's latest checkpoints (default 5)")
    p.add_argument("--out", required=True, help="output checkpoint folder")
    p.set_defaults(func=run_average)


def _quiet_libraries(verbose: bool) -> None:
    if not verbose:
        for name in ("accelerate", "accelerate.accelerator", "accelerate.checkpointing"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _load(args, init: Path | None):
    """The run config of ``--config``, ``--set`` and ``--out-dir`` (and ``--init``'s model
    and tokenizer when the config has none): :func:`astra.train.config.load_train_config`."""
    from astra.train.config import load_train_config

    overrides = list(args.overrides)
    if args.out_dir:
        overrides.append(f"run.out_dir={args.out_dir}")
    return load_train_config(args.config, overrides, init)


def _train(args, init: Path | None) -> int:
    from functools import partial

    from astra.train.build import build_parts
    from astra.train.trainer import Trainer

    _quiet_libraries(getattr(args, "verbose", False))
    cfg = _load(args, init)
    builder = partial(build_parts, finetune=init is not None)
    trainer = Trainer(cfg, builder, resume=args.resume, init=init)
    try:
        last = trainer.run()
    except TrainingError as e:
        raise UserError(str(e)) from None
    main_process = trainer.accelerator.is_main_process
    if trainer.stopped_by:
        if main_process:
            print(f"stopped by {trainer.stopped_by} at step {trainer.state.step}; continue with --resume")
        return 3
    if main_process:
        print(f"done: {trainer.state.step} steps, last checkpoint {last}")
    return 0


def run_pretrain(args) -> int:
    return _train(args, None)


def run_finetune(args) -> int:
    from astra.inference import locate_model

    try:
        init = locate_model(args.init).folder
    except ValueError as e:
        raise UserError(f"--init {args.init}: {e}") from None
    return _train(args, init)


def run_average(args) -> int:
    from astra.train.checkpoint import list_checkpoints, write_averaged_checkpoint

    paths = [Path(p) for p in args.checkpoints]
    if args.last < 1:
        raise UserError(f"--last must be >= 1, got {args.last}")
    if args.run:
        found = list_checkpoints(Path(args.run) / "checkpoints") or list_checkpoints(args.run)
        if not found:
            raise UserError(f"--run {args.run}: no checkpoints found")
        paths += found[-args.last :]
    if not paths:
        raise UserError("give --checkpoints DIR ... or --run DIR")
    try:
        out = write_averaged_checkpoint(paths, args.out)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(f"averaged {len(paths)} checkpoints into {out}: " + ", ".join(p.name for p in paths))
    return 0
