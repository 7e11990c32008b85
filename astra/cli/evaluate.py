"""``astra evaluate``: per-language WER/CER of a checkpoint on FLEURS or local corpora."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from astra.cli import UserError
from astra.cli._common import (
    FLEURS_DIR_HELP,
    add_checkpoint_arguments,
    add_decode_arguments,
    add_lm_arguments,
    check_decode_arguments,
    lm_fusion_config,
    load_checkpoint,
    load_lm_fusion,
)
from astra.constants import CTC_WEIGHT_METHODS, LM_PRE_BEAM_METHODS

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="decode a data set with a checkpoint and report WER/CER per language",
        description=(
            "Decode FLEURS configs or local corpora with a checkpoint and score them per "
            "language (WER; CER for languages without word spaces), with pooled and macro "
            "averages. Writes results.md/.json/.csv, hyps.tsv and error_rates.png into "
            "OUTPUT_ROOT/<checkpoint>__<data>/ and prints the markdown table."
        ),
    )
    src = p.add_argument_group("data (at least one of --data / --fleurs)")
    src.add_argument("--data", nargs="+", default=[], metavar="DIR",
                     help="local corpus folder(s): {lang}/{split}.tsv|.parquet, or a copy of "
                          "FLEURS' parquet conversion {config}/{split}/*.parquet (docs/data.md)")
    src.add_argument("--fleurs", nargs="+", default=[], metavar="CONFIG",
                     help="FLEURS configs, e.g. hi_in cmn_hans_cn")
    src.add_argument("--fleurs-dir", default=None, metavar="DIR", help=FLEURS_DIR_HELP)
    src.add_argument("--split", default="test", help="split to evaluate (default: test)")
    src.add_argument("--languages", nargs="+", default=None,
                     help="evaluate only these languages (default: every language found)")
    dec = p.add_argument_group("decoding")
    add_checkpoint_arguments(p, device_group=dec)
    add_decode_arguments(dec, "head and search (default: aligner_greedy)", sweep=True)
    dec.add_argument("--force-language", action="store_true",
                     help="decode each utterance in its data language: its <lang:xx> tag is forced "
                          "as the first output (models trained with data.language_tags; aligner_* "
                          "methods). Default: the model emits the tag itself")
    add_lm_arguments(dec)
    dec.add_argument("--max-batch-seconds", type=float, default=None,
                     help="audio seconds per batch (default: the checkpoint's data config)")
    dec.add_argument("--num-workers", type=int, default=0,
                     help="DataLoader worker processes reading audio (default: 0)")
    sc = p.add_argument_group("scoring")
    sc.add_argument("--no-normalize", action="store_true",
                    help="score raw text (only whitespace collapsed) instead of normalised text")
    sc.add_argument("--cer-languages", nargs="+", default=None, metavar="CODE",
                    help="languages scored by CER (default: cmn yue ja th lo my km)")
    out = p.add_argument_group("output")
    out.add_argument("--output-root", default="exp/eval",
                     help="parent of the output folder (default: exp/eval)")
    out.add_argument("--output-dir", default=None,
                     help="exact output folder (overrides --output-root naming)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def data_description(args: argparse.Namespace) -> str:
    """A short name of the evaluated data, used in the output folder's name."""
    parts = []
    if args.fleurs:
        parts.append("fleurs-" + "-".join(args.fleurs))
    for d in args.data:
        parts.append(Path(d).resolve().name)
    if args.languages:
        parts.append("only-" + "-".join(args.languages))
    parts.append(args.split)
    return "_".join(parts)


def load_eval_batches(cfg, tokenizer, args: argparse.Namespace):
    """``EvalBatches`` of ``args``' data through the data package's loaders, with the
    checkpoint's data settings (:func:`astra.eval.evaluate.evaluation_data_config`)."""
    from astra.data import build_eval_batches
    from astra.eval.evaluate import evaluation_data_config

    data_cfg = evaluation_data_config(cfg.data, args.data, args.fleurs, args.fleurs_dir,
                                      args.num_workers)
    try:
        return build_eval_batches(
            data_cfg, tokenizer, args.split, args.languages, max_batch_seconds=args.max_batch_seconds
        )
    except ValueError as e:
        raise UserError(str(e)) from e


def _check_arguments(args: argparse.Namespace):
    """:class:`UserError` for bad data/decoding/LM flags; returns the ``LmFusionConfig``."""
    if not args.data and not args.fleurs:
        raise UserError("give the data to evaluate: --data DIR... and/or --fleurs CONFIG...")
    for d in args.data:
        if not Path(d).is_dir():
            raise UserError(f"--data {d}: not a folder")
    check_decode_arguments(args, sweep=True)
    lm_cfg = lm_fusion_config(args)
    ctc_sweep = len(args.ctc_weights) > 1
    if ctc_sweep and args.method not in CTC_WEIGHT_METHODS:
        raise UserError(f"several --ctc-weight values sweep {' and '.join(CTC_WEIGHT_METHODS)}, "
                        f"not --method {args.method}")
    lm_only = lm_cfg.is_sweep or any(lm_cfg.length_bonuses) or args.ilm_weight or args.lm_candidates
    if lm_cfg.lm_dir is None and lm_only:
        raise UserError("--lm-weight with several weights, --length-bonus, --ilm-weight and --lm-candidates "
                        "need --lm DIR")
    if (lm_cfg.is_sweep or ctc_sweep) and args.split == "test":
        raise UserError("an --lm-weight / --length-bonus / --ctc-weight sweep picks the values: run it on a "
                        "validation split (--split validation), then evaluate the test split with the chosen ones")
    if args.num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {args.num_workers}")
    return lm_cfg


def _check_force_language(args: argparse.Namespace, checkpoint, cfg, tokenizer) -> None:
    if not args.force_language:
        return
    if not args.method.startswith("aligner"):
        raise UserError(f"--force-language needs an aligner_* method, not --method {args.method}")
    if not cfg.data.language_tags or not tokenizer.languages:
        raise UserError(
            f"--force-language: {checkpoint} was trained without language tags "
            "(data.language_tags=false): there is no <lang:xx> token to force"
        )


def _decode_and_score(args: argparse.Namespace, model, tokenizer, batches, lm_cfg):
    """``(runs, skipped, fusion, cer_languages)``: one evaluation per (LM weight, length
    bonus, CTC weight) of the sweep."""
    from astra.eval.evaluate import evaluate_lm_sweep
    from astra.eval.metrics import DEFAULT_CER_LANGUAGES

    total = len(batches.utterances)
    if total == 0:
        raise UserError(f"no utterances found for split {args.split!r} in the given data")
    cer_languages = args.cer_languages or list(DEFAULT_CER_LANGUAGES)
    languages = sorted({u.language for u in batches.utterances})
    fusion = load_lm_fusion(lm_cfg, tokenizer, args.method, languages)
    try:
        runs, skipped = evaluate_lm_sweep(
            model, tokenizer, batches, lm=fusion, points=lm_cfg.sweep_points(), ctc_weights=args.ctc_weights,
            method=args.method, beam=args.beam,
            normalize=not args.no_normalize, cer_languages=cer_languages,
            progress=not args.no_progress, total=total, force_language=args.force_language,
        )
    except ValueError as e:  # e.g. the checkpoint has no head for the chosen method
        raise UserError(f"evaluate --method {args.method}: {e}") from e
    return runs, skipped, fusion, cer_languages


def _metadata(args, checkpoint, data, lm_cfg, fusion, runs, best, result, cer_languages, skipped):
    """``results.json``'s ``meta``: what was evaluated, how, and the timing."""
    decoded = result.decoded
    return {
        "checkpoint": str(checkpoint),
        "data": data,
        "corpora": [str(d) for d in args.data],
        "fleurs": list(args.fleurs),
        "split": args.split,
        "method": args.method,
        "beam": args.beam,
        "ctc_weight": best[2] if args.method in CTC_WEIGHT_METHODS else None,
        "force_language": args.force_language,
        "lm": None if fusion is None else str(lm_cfg.lm_dir),
        "lm_weight": best[0],
        "length_bonus": best[1],
        "ilm_weight": lm_cfg.ilm_weight if fusion is not None else None,
        "lm_candidates": fusion.pre_beam(args.beam) if fusion is not None and args.method in LM_PRE_BEAM_METHODS
        else None,
        "lm_sweep": [
            {"lm_weight": w, "length_bonus": b, "ctc_weight": c, "pooled_error_rate": r.summary.pooled_error_rate,
             "macro_error_rate": r.summary.macro_error_rate, "rtf": r.decoded.rtf}
            for (w, b, c), r in runs
        ] if len(runs) > 1 else None,
        "normalize": not args.no_normalize,
        "cer_languages": cer_languages,
        "utterances": len(decoded.keys),
        "audio_seconds": decoded.audio_seconds,
        "decode_seconds": decoded.decode_seconds,
        "rtf": decoded.rtf,
        "device": args.device,
        "skipped": skipped,
        "too_short_empty_hypothesis": decoded.too_short,
    }


def _cell(value) -> str:
    return "-" if value is None else f"{value:g}"


def _print_results(result, meta: dict, title: str, out_dir: Path, paths: dict) -> None:
    """The markdown table, skips, written files and, after a sweep, the weight table and a
    machine-readable last line."""
    from astra.eval.report import markdown_table

    sys.stdout.write(markdown_table(result.summary, result.decoded.rtf, title))
    if meta["skipped"]:
        skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(meta["skipped"].items()))
        sys.stdout.write(f"\nskipped utterances (not scored): {skipped}\n")
    sys.stdout.write(f"\nwrote {', '.join(p.name for p in paths.values())} to {out_dir}\n")
    if meta["lm_sweep"]:
        sys.stdout.write("\n| LM weight | length bonus | CTC weight | pooled error rate | macro error rate |\n"
                         "|---:|---:|---:|---:|---:|\n")
        for row in meta["lm_sweep"]:
            cells = [_cell(row[k]) for k in ("lm_weight", "length_bonus", "ctc_weight")]
            cells += [f"{100 * row[k]:.2f} %" for k in ("pooled_error_rate", "macro_error_rate")]
            sys.stdout.write("| " + " | ".join(cells) + " |\n")
        best = {"best_lm_weight": meta["lm_weight"], "best_length_bonus": meta["length_bonus"],
                "best_ctc_weight": meta["ctc_weight"],
                "pooled_error_rate": result.summary.pooled_error_rate,
                "split": meta["split"], "results": str(out_dir / "results.json")}
        sys.stdout.write(json.dumps(best) + "\n")  # last line: machine-readable


def run(args: argparse.Namespace) -> int:
    from astra.eval.report import output_dir_name, write_reports

    lm_cfg = _check_arguments(args)
    checkpoint, model, tokenizer, cfg = load_checkpoint(args)
    _check_force_language(args, checkpoint, cfg, tokenizer)
    batches = load_eval_batches(cfg, tokenizer, args)
    runs, skipped, fusion, cer_languages = _decode_and_score(args, model, tokenizer, batches,
                                                             lm_cfg)
    best, result = min(runs, key=lambda r: r[1].summary.pooled_error_rate)
    data = data_description(args)
    out_dir = Path(args.output_dir) if args.output_dir else (
        Path(args.output_root) / output_dir_name(checkpoint, data)
    )
    meta = _metadata(args, checkpoint, data, lm_cfg, fusion, runs, best, result, cer_languages, skipped)
    lm_note = "" if fusion is None else f", LM weight {best[0]:g}" + (f", length bonus {best[1]:g}" if best[1] else "")
    if args.method in CTC_WEIGHT_METHODS:
        lm_note += f", CTC weight {best[2]:g}"
    title = f"{checkpoint.name} on {data} ({args.method}{lm_note})"
    paths = write_reports(out_dir, result.scores, result.summary, meta, title)
    _print_results(result, meta, title, out_dir, paths)
    return 0
