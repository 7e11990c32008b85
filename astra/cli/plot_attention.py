"""``astra plot-attention``: self-attention grid, lattice occupancy and alignment statistics."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from astra.cli import UserError
from astra.cli._common import add_checkpoint_arguments, load_checkpoint

log = logging.getLogger(__name__)

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot-attention",
        help="plot self-attention maps, lattice occupancy and alignment statistics of one file",
        description=(
            "For one audio file: a PNG grid of the self-attention maps of every speech and "
            "shared encoder layer (output x input position, transcript token positions "
            "marked), the RNN-T alignment head's lattice occupancy (token x frame), "
            "optionally the gradient alignment of arXiv:2410.00680, and alignment.json with "
            "per-layer locality / front-alignment / reversal scores, the transducing layer and the "
            "reversal alarm."
        ),
    )
    p.add_argument("audio", metavar="AUDIO", help="audio file (any format load_audio reads)")
    add_checkpoint_arguments(p)
    p.add_argument("--text", default=None,
                   help="reference transcript (default: the model's Aligner greedy hypothesis)")
    p.add_argument("--language", default=None,
                   help="language of --text (needed when the model uses <lang:xx> tags)")
    p.add_argument("--output-dir", default=None,
                   help="output folder (default: exp/plots/<run>_<checkpoint>__<audio name>)")
    p.add_argument("--per-head", action="store_true",
                   help="also write attention_heads.png: every head of every layer")
    p.add_argument("--lattice", choices=("simple", "full", "pruned"), default="simple",
                   help="lattice for the occupancy: 'simple' (lm+am, what ASTRA uses) or 'full'")
    p.add_argument("--gradients", action="store_true",
                   help="also compute the gradient alignment (arXiv:2410.00680)")
    p.add_argument("--gradient-input", choices=("features", "shared"), default="features",
                   help="differentiate w.r.t. fbank frames or the shared encoder input S")
    p.add_argument("--window", type=int, default=2,
                   help="locality window in encoder frames (default: 2)")
    p.set_defaults(func=run)


def _target_tokens(model, tokenizer, cfg, features, args) -> tuple[list[int], str, str]:
    """``(ids y_1..y_U, text, source)`` from --text or from the model's own hypothesis."""
    from astra.data.targets import normalize_target, prepare_target
    from astra.eval.transcribe import single_batch

    if args.text is not None:
        source = "reference"
        if cfg.data.language_tags and args.language is None:
            log.warning("the model was trained with language tags; give --language to prepend one")
            text = normalize_target(args.text, cfg.data)
            ids = tokenizer.encode(text)
        else:
            try:
                text, ids = prepare_target(args.text, args.language, tokenizer, cfg.data)
            except ValueError as e:
                raise UserError(f"--language {args.language}: {e}") from e
    else:
        ids = model.decode(single_batch(features), method="aligner_greedy")[0]
        text = tokenizer.decode(ids)
        source = "hypothesis (aligner_greedy)"
    return ids, text, source


def _load_features(args: argparse.Namespace):
    """``(audio path, fbank [T, F] on args.device)``; :class:`UserError` for a missing or
    unreadable file."""
    from astra.constants import SAMPLE_RATE
    from astra.data.audio import load_audio
    from astra.features import fbank

    audio = Path(args.audio)
    if not audio.is_file():
        raise UserError(f"audio file not found: {audio}")
    try:
        return audio, fbank(load_audio(str(audio)), SAMPLE_RATE).to(args.device)
    except ValueError as e:
        raise UserError(f"{audio}: {e}") from e


def run(args: argparse.Namespace) -> int:
    from astra.analysis import file_report
    from astra.eval.report import output_dir_name
    from astra.eval.transcribe import single_batch

    if args.window < 0:
        raise UserError(f"--window must be >= 0, got {args.window}")
    audio, features = _load_features(args)
    checkpoint, model, tokenizer, cfg = load_checkpoint(args)
    out_dir = Path(args.output_dir) if args.output_dir else (
        Path("exp/plots") / output_dir_name(checkpoint, audio.stem)
    )
    out_dir.mkdir(parents=True, exist_ok=True)

    model.eval()
    ids, text, source = _target_tokens(model, tokenizer, cfg, features, args)
    pieces = [tokenizer.id_to_piece(i) for i in ids]
    try:
        attention = file_report.attention_part(
            model, single_batch(features, key=str(audio)), pieces, out_dir, window=args.window,
            per_head=args.per_head, title=f"{audio.name}: {text[:80]}",
        )
    except ValueError as e:
        raise UserError(f"{audio}: {e}") from e
    payload: dict = {
        "audio": str(audio), "checkpoint": str(checkpoint), "text": text, "text_source": source,
        "tokens": pieces, "num_tokens": len(ids), "input_frames": int(features.size(0)),
        "encoder_frames": attention.encoder_frames, "report": attention.report,
    }
    files = dict(attention.files)
    payload["lattice"], written = file_report.lattice_part(
        model, features, ids, pieces, out_dir, args.lattice, text)
    files.update(written)
    if args.gradients:
        try:
            payload["gradients"], written = file_report.gradient_part(
                model, features, ids, pieces, out_dir, args.gradient_input)
        except ValueError as e:
            raise UserError(f"--gradients: {e}") from e
        files.update(written)
    payload["files"] = files
    report_json = file_report.REPORT_JSON
    (out_dir / report_json).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    _print_summary(attention.report, text, source, out_dir, [*files.values(), report_json])
    return 0


def _print_summary(report: dict, text: str, source: str, out_dir: Path, files: list[str]) -> None:
    out = sys.stdout
    out.write(f"text ({source}): {text}\n\n")
    out.write("| layer | label | locality | monotonicity | front alignment | reversal |\n")
    out.write("|---|---|---:|---:|---:|---:|\n")
    for name, s in report["layers"].items():
        out.write(f"| {name} | {s['label']} | {s['locality']:.3f} | {s['monotonicity']:.3f} | "
                  f"{s['front_alignment']:.3f} | {s['reversal']:.3f} |\n")
    out.write(f"\ntransducing layer: {report['transducing_layer'] or 'none found'}\n")
    if report["reversal_alarm"]:
        out.write(f"REVERSAL WARNING: time is reversed in {', '.join(report['reversed_layers'])}\n")
    out.write(f"wrote {', '.join(files)} to {out_dir}\n")
