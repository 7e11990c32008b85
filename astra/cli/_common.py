"""Arguments and helpers shared by several subcommands (not a subcommand: its name starts
with ``_``). Heavy imports stay inside the functions, so ``astra --help`` stays fast."""

from __future__ import annotations

import argparse

from astra.cli import UserError

# = astra.model.DECODE_METHODS (kept here so that building the parser does not import torch)
DECODE_METHODS = ("aligner_greedy", "aligner_beam", "rnnt_greedy", "rnnt_beam", "ctc_greedy")


def add_checkpoint_arguments(parser, device_group=None) -> None:
    """``--checkpoint`` (required) and ``--device`` (into ``device_group`` if given)."""
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint folder (or run folder: its latest checkpoint)")
    (device_group or parser).add_argument("--device", default="cpu",
                                          help="torch device (default: cpu)")


def load_checkpoint(args: argparse.Namespace):
    """``(checkpoint folder, model, tokenizer, config)`` of ``args.checkpoint`` on
    ``args.device``; a missing or broken checkpoint is a :class:`UserError`."""
    from astra.train.checkpoint import load_inference_model, resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(args.checkpoint)
        model, tokenizer, cfg = load_inference_model(checkpoint, args.device)
    except ValueError as e:
        raise UserError(f"--checkpoint {args.checkpoint}: {e}") from e
    return checkpoint, model, tokenizer, cfg


def add_action_parser(subparsers, command: str, command_help: str, action: str, action_help: str):
    """``astra COMMAND ACTION``: a subcommand with one required action; returns the
    action's parser (its options shown with their defaults)."""
    parser = subparsers.add_parser(command, help=command_help)
    actions = parser.add_subparsers(dest=f"{command}_command", metavar="ACTION", required=True)
    return actions.add_parser(action, help=action_help,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def split_csv(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; ``None`` or ``""`` -> ``[]``."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else []
