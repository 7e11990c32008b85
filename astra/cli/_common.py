"""Arguments and helpers shared by several subcommands (not a subcommand: its name starts
with ``_``). Heavy imports stay inside the functions, so ``astra --help`` stays fast."""

from __future__ import annotations

import argparse

from astra.cli import UserError
from astra.constants import BEAM_METHODS, DECODE_METHODS, LM_PRE_BEAM_METHODS


def add_checkpoint_arguments(parser, device_group=None) -> None:
    """``--checkpoint`` (required) and ``--device`` (into ``device_group`` if given)."""
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint folder (or run folder: its latest checkpoint), a folder "
                             "written by 'astra export', or a Hugging Face Hub repo id owner/name[@rev]")
    (device_group or parser).add_argument("--device", default="cpu",
                                          help="torch device (default: cpu)")


def add_decode_arguments(parser, method_help: str, sweep: bool = False) -> None:
    """``--method``, ``--beam`` and ``--ctc-weight`` (``sweep``: several comma-separated CTC
    weights, evaluate's sweep); check them with :func:`check_decode_arguments`."""
    parser.add_argument("--method", choices=DECODE_METHODS, default="aligner_greedy", help=method_help)
    parser.add_argument("--beam", type=int, default=4, help="beam size of *_beam methods")
    parser.add_argument("--ctc-weight", default="0.3", metavar="W[,W...]" if sweep else "W",
                        help="aligner_ctc_beam: weight of the CTC head's prefix score; ctc_beam_rescore: "
                             "weight of log P_ctc against the Aligner's score of each n-best hypothesis; "
                             "in [0, 1] (default: 0.3)"
                             + ("; several comma-separated weights: a sweep, with every LM weight and "
                                "bonus" if sweep else ""))


def check_decode_arguments(args: argparse.Namespace, sweep: bool = False) -> None:
    """:class:`UserError` for a bad ``--beam`` or ``--ctc-weight`` (several weights without
    ``sweep``); sets ``args.ctc_weights`` (the list) and ``args.ctc_weight`` (its first)."""
    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    weights = _numbers(str(args.ctc_weight), "--ctc-weight")
    if not weights or any(not 0.0 <= w <= 1.0 for w in weights):
        raise UserError(f"--ctc-weight must be in [0, 1], got {args.ctc_weight}")
    if len(weights) > 1 and not sweep:
        raise UserError(f"--ctc-weight takes one weight here, got {args.ctc_weight} "
                        "(sweep several with 'astra evaluate --split validation')")
    args.ctc_weights, args.ctc_weight = weights, weights[0]


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


FLEURS_DIR_HELP = (
    "local copy of FLEURS, either layout: the repository's data/{config}/{split}.tsv + "
    "data/{config}/audio/{split}.tar.gz, or the parquet conversion {config}/{split}/*.parquet "
    "(default: the Hub, the repository's tsv + tar.gz files first, the parquet conversion second)"
)


def add_actions(subparsers, command: str, command_help: str):
    """``astra COMMAND ACTION``: the subcommand's action subparsers (an action is required);
    add each action with :func:`add_action`."""
    parser = subparsers.add_parser(command, help=command_help)
    return parser.add_subparsers(dest=f"{command}_command", metavar="ACTION", required=True)


def add_action(actions, action: str, action_help: str, description: str | None = None):
    """One action's parser (its options shown with their defaults)."""
    return actions.add_parser(action, help=action_help, description=description,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_action_parser(subparsers, command: str, command_help: str, action: str, action_help: str):
    """``astra COMMAND ACTION``: a subcommand with one required action; returns the
    action's parser."""
    return add_action(add_actions(subparsers, command, command_help), action, action_help)


def add_fleurs_arguments(parser, required: bool = False) -> None:
    """``--fleurs CONFIGS`` (comma separated) and ``--fleurs-dir DIR`` (either local layout)."""
    parser.add_argument("--fleurs", required=required, metavar="CONFIGS",
                        help="FLEURS configs, comma separated (e.g. en_us,fr_fr)")
    parser.add_argument("--fleurs-dir", metavar="DIR", help=FLEURS_DIR_HELP)


def split_csv(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; ``None`` or ``""`` -> ``[]``."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def add_lm_arguments(parser, with_language: bool = False) -> None:
    """``--lm``, ``--lm-weight``, ``--length-bonus``, ``--ilm-weight``, ``--lm-candidates`` (and
    ``--lm-language``):
    the fields of :class:`astra.lm.LmFusionConfig`; read them with :func:`lm_fusion_config`."""
    parser.add_argument("--lm", default=None, metavar="DIR",
                        help="n-gram LM folder from 'astra lm train', fused into the *_beam methods")
    parser.add_argument("--lm-weight", default="0.3", metavar="W[,W...]",
                        help="LM weight; several comma-separated weights: a sweep (evaluate) that reports "
                             "the error rate per weight and picks the best (default: 0.3)")
    parser.add_argument("--length-bonus", default="0", metavar="B[,B...]",
                        help="score added per emitted piece with --lm; several comma-separated values: "
                             "a sweep (evaluate) over every pair of LM weight and bonus (default: 0)")
    parser.add_argument("--ilm-weight", type=float, default=0.0,
                        help="Aligner methods with --lm: weight of the subtracted internal LM (the decoder "
                             "on zeroed encoder frames; default: 0)")
    parser.add_argument("--lm-candidates", type=int, default=None, metavar="C",
                        help="with --lm: pieces per hypothesis and step the LM scores, the model's C most "
                             "likely (the pre-beam of aligner_beam and rnnt_beam; default: twice --beam)")
    if with_language:
        parser.add_argument("--lm-language", default=None,
                            help="language whose LM scores the audio (default: the LM's only language)")


def lm_fusion_config(args: argparse.Namespace):
    """:class:`astra.lm.LmFusionConfig` of the ``--lm*`` flags (:class:`UserError` for a bad value)."""
    from astra.lm.config import LmFusionConfig

    weights = _numbers(args.lm_weight, "--lm-weight")
    bonuses = _numbers(args.length_bonus, "--length-bonus")
    cfg = LmFusionConfig(lm_dir=args.lm, lm_weights=weights, length_bonuses=bonuses,
                         ilm_weight=args.ilm_weight, lm_candidates=args.lm_candidates,
                         lm_language=getattr(args, "lm_language", None))
    try:
        cfg.check()
    except ValueError as e:
        raise UserError(str(e)) from e
    return cfg


def _numbers(value: str, flag: str) -> list[float]:
    """``"0.1, 0.3"`` -> ``[0.1, 0.3]``; :class:`UserError` naming ``flag`` otherwise."""
    try:
        return [float(v) for v in split_csv(value)]
    except ValueError as e:
        raise UserError(f"{flag} must be numbers separated by commas, got {value!r}") from e


def load_lm_fusion(cfg, tokenizer, method: str, languages=None):
    """The :class:`astra.lm.fusion.LmFusion` of ``cfg`` for ``tokenizer`` (weight and bonus: the
    first of ``cfg.lm_weights`` and ``cfg.length_bonuses``), or ``None`` without ``--lm``; :class:`UserError` for an LM
    folder that does not load, a language it has no LM for, or a method without a beam."""
    if cfg.lm_dir is None:
        return None
    if method not in BEAM_METHODS:
        raise UserError(f"--lm needs a beam search (--method {', '.join(BEAM_METHODS)}), not --method {method}")
    if cfg.ilm_weight > 0 and not method.startswith("aligner"):
        raise UserError(f"--ilm-weight is for the Aligner methods, not --method {method}")
    if cfg.lm_candidates is not None and method not in LM_PRE_BEAM_METHODS:
        raise UserError(f"--lm-candidates is the LM pre-beam of {' and '.join(LM_PRE_BEAM_METHODS)}; "
                        f"--method {method} takes the CTC head's candidates")
    from astra.lm import build_fusion

    try:
        return build_fusion(cfg.lm_dir, tokenizer, cfg.lm_weights[0], cfg.length_bonuses[0], cfg.ilm_weight, languages,
                            candidates=cfg.lm_candidates)
    except ValueError as e:
        raise UserError(f"--lm {cfg.lm_dir}: {e}") from e
