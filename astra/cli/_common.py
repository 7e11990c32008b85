"""Arguments and helpers shared by several subcommands (not a subcommand: its name starts
with ``_``). Heavy imports stay inside the functions, so ``astra --help`` stays fast."""

from __future__ import annotations

import argparse

from astra.cli import UserError

# = astra.model.DECODE_METHODS (kept here so that building the parser does not import torch)
DECODE_METHODS = ("aligner_greedy", "aligner_beam", "aligner_ctc_beam", "rnnt_greedy", "rnnt_beam", "ctc_greedy")


def add_checkpoint_arguments(parser, device_group=None) -> None:
    """``--checkpoint`` (required) and ``--device`` (into ``device_group`` if given)."""
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint folder (or run folder: its latest checkpoint), a folder "
                             "written by 'astra export', or a Hugging Face Hub repo id owner/name[@rev]")
    (device_group or parser).add_argument("--device", default="cpu",
                                          help="torch device (default: cpu)")


def add_decode_arguments(parser, method_help: str) -> None:
    """``--method``, ``--beam`` and ``--ctc-weight``; check them with :func:`check_decode_arguments`."""
    parser.add_argument("--method", choices=DECODE_METHODS, default="aligner_greedy", help=method_help)
    parser.add_argument("--beam", type=int, default=4, help="beam size of *_beam methods")
    parser.add_argument("--ctc-weight", type=float, default=0.3,
                        help="aligner_ctc_beam: weight of the CTC head's prefix score, in [0, 1] (default: 0.3)")


def check_decode_arguments(args: argparse.Namespace) -> None:
    """:class:`UserError` for a bad ``--beam`` or ``--ctc-weight``."""
    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    if not 0.0 <= args.ctc_weight <= 1.0:
        raise UserError(f"--ctc-weight must be in [0, 1], got {args.ctc_weight}")


def load_checkpoint(args: argparse.Namespace):
    """``(checkpoint, model, tokenizer, config)`` of ``args.checkpoint`` on ``args.device``
    (``astra.inference.load_model``); ``checkpoint`` is the local folder, or the Hub repo id
    as a path (``owner/name``) for naming outputs. A missing, unsafe or broken model is a
    :class:`UserError`."""
    from pathlib import Path

    from astra.inference import load_model

    try:
        loaded = load_model(args.checkpoint, args.device)
    except ValueError as e:
        raise UserError(f"--checkpoint {args.checkpoint}: {e}") from e
    files = loaded.files
    checkpoint = Path(files.repo_id) if files.repo_id else files.folder
    return checkpoint, loaded.model, loaded.tokenizer, loaded.config


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
