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

ATTENTION_PNG = "attention.png"
ATTENTION_HEADS_PNG = "attention_heads.png"
LATTICE_PNG = "lattice_occupancy.png"
GRADIENT_PNG = "gradient_alignment.png"
REPORT_JSON = "alignment.json"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot-attention",
        help="plot self-attention maps, lattice occupancy and alignment statistics of one file",
        description=(
            "For one audio file: a PNG grid of the self-attention maps of every speech and "
            "shared encoder layer (output x input position, transcript token positions "
            "marked), the RNN-T alignment head's lattice occupancy (token x frame), "
            "optionally the gradient alignment of arXiv:2410.00680, and alignment.json with per-layer "
            "locality / front-alignment / reversal scores, the transducing layer and the "
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
    from astra.eval.transcribe import single_batch
    from astra.text_norm import normalize_text

    if args.text is not None:
        text = normalize_text(args.text) if cfg.data.normalize_transcripts else args.text.strip()
        ids = tokenizer.encode(text)
        source = "reference"
        if cfg.data.language_tags:
            if args.language is None:
                log.warning("the model was trained with language tags; give --language to prepend one")
            else:
                try:
                    ids = [tokenizer.language_id(args.language)] + ids
                except ValueError as e:
                    raise UserError(f"--language {args.language}: {e}") from e
    else:
        ids = model.decode(single_batch(features), method="aligner_greedy")[0]
        text = tokenizer.decode(ids)
        source = "hypothesis (aligner_greedy)"
    return ids, text, source


def run(args: argparse.Namespace) -> int:
    from astra.analysis.attention_stats import AlignmentThresholds, alignment_report
    from astra.analysis.gradient_alignment import gradient_peak_frames, model_gradient_alignment
    from astra.analysis.lattice_occupancy import model_lattice_occupancy
    from astra.analysis.plots import (
        plot_attention_grid,
        plot_gradient_alignment,
        plot_lattice_occupancy,
    )
    from astra.data.audio import load_audio
    from astra.eval.report import output_dir_name
    from astra.eval.transcribe import single_batch
    from astra.features import SAMPLE_RATE, fbank

    audio = Path(args.audio)
    if not audio.is_file():
        raise UserError(f"audio file not found: {audio}")
    if args.window < 0:
        raise UserError(f"--window must be >= 0, got {args.window}")
    checkpoint, model, tokenizer, cfg = load_checkpoint(args)
    try:
        features = fbank(load_audio(str(audio)), SAMPLE_RATE).to(args.device)
    except ValueError as e:
        raise UserError(f"{audio}: {e}") from e
    out_dir = Path(args.output_dir) if args.output_dir else (
        Path("exp/plots") / output_dir_name(checkpoint, audio.stem)
    )
    out_dir.mkdir(parents=True, exist_ok=True)

    model.eval()
    ids, text, source = _target_tokens(model, tokenizer, cfg, features, args)
    pieces = [tokenizer.id_to_piece(i) for i in ids]
    try:
        maps = model.attention_maps(single_batch(features, key=str(audio)))
    except ValueError as e:
        raise UserError(f"{audio}: {e}") from e
    if not maps:
        raise UserError("the model returned no attention maps (no self-attention layers?)")
    encoder_frames = next(iter(maps.values())).size(-1)
    positions = len(ids) + 1  # the Aligner reads U tokens and <eos>
    thresholds = AlignmentThresholds(window=args.window)
    report = alignment_report(maps, [encoder_frames], [positions], thresholds)
    if positions > encoder_frames:
        log.warning("%d tokens + <eos> exceed %d encoder frames: the Aligner cannot read them all",
                    len(ids), encoder_frames)
    files = {}
    title = f"{audio.name}: {text[:80]}"
    single = {name: m[0] for name, m in maps.items()}  # [H, T', T'] each
    plot_attention_grid(single, out_dir / ATTENTION_PNG, positions, pieces + ["<eos>"],
                        stats=report["layers"], title=title)
    files["attention"] = ATTENTION_PNG
    if args.per_head:
        plot_attention_grid(single, out_dir / ATTENTION_HEADS_PNG, positions, pieces + ["<eos>"],
                            per_head=True, stats=report["layers"], title=title)
        files["attention_heads"] = ATTENTION_HEADS_PNG

    payload: dict = {
        "audio": str(audio),
        "checkpoint": str(checkpoint),
        "text": text,
        "text_source": source,
        "tokens": pieces,
        "num_tokens": len(ids),
        "input_frames": int(features.size(0)),
        "encoder_frames": int(encoder_frames),
        "report": report,
    }
    if model.rnnt is None:
        payload["lattice"] = {"skipped": "the checkpoint has no RNN-T alignment head"}
    elif not ids:
        payload["lattice"] = {"skipped": "empty transcript"}
    else:
        occupancy = model_lattice_occupancy(model, features, ids, args.lattice)
        plot_lattice_occupancy(occupancy, out_dir / LATTICE_PNG, pieces,
                               title=f"{args.lattice} lattice occupancy: {text[:60]}")
        files["lattice"] = LATTICE_PNG
        payload["lattice"] = {
            "which": args.lattice,
            "peak_frames": occupancy.argmax(dim=1).tolist(),
            "row_sums": [round(float(s), 4) for s in occupancy.sum(dim=1)],
        }
    if args.gradients:
        if not ids:
            payload["gradients"] = {"skipped": "empty transcript"}
        else:
            try:
                grads = model_gradient_alignment(model, features, ids, args.gradient_input)
            except ValueError as e:
                raise UserError(f"--gradients: {e}") from e
            frame = "fbank frame (10 ms)" if args.gradient_input == "features" else "encoder frame (40 ms)"
            plot_gradient_alignment(grads, out_dir / GRADIENT_PNG, pieces + ["<eos>"],
                                    frame_label=frame)
            files["gradients"] = GRADIENT_PNG
            payload["gradients"] = {
                "input": args.gradient_input,
                "peak_frames": gradient_peak_frames(grads).tolist(),
            }
    payload["files"] = files
    (out_dir / REPORT_JSON).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    _print_summary(report, text, source, out_dir, [*files.values(), REPORT_JSON])
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
