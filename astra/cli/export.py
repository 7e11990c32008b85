"""``astra export``: a checkpoint as a Hugging Face model folder (config.json,
model.safetensors, tokenizer.model, README.md model card); see ``astra.export``."""

from __future__ import annotations

import argparse
import shlex

from astra.cli import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a checkpoint as a Hugging Face model folder with a model card",
        description=(
            "Write config.json, model.safetensors, tokenizer.model and a README.md model card "
            "(training data, per-language WER/CER from astra evaluate's results.json, the "
            "commands) into --out. The folder, or a Hub repo it is uploaded to, is accepted by "
            "--checkpoint and --init."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (or run folder: its latest checkpoint)")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--results", action="append", default=[], metavar="RESULTS_JSON",
                   help="astra evaluate results.json for the card (repeatable; default: those under "
                        "--eval-root naming this checkpoint)")
    p.add_argument("--eval-root", action="append", default=None, metavar="DIR",
                   help="where astra evaluate wrote its folders (repeatable; default: exp/eval)")
    p.add_argument("--name", default=None, help="model name in the card (default: the --out folder's name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from astra.export import export_model

    command = shlex.join(["astra", "export", "--checkpoint", args.checkpoint, "--out", args.out]
                         + [a for r in args.results for a in ("--results", r)])
    try:
        out, records = export_model(
            args.checkpoint, args.out, results=args.results, eval_roots=args.eval_root or ["exp/eval"],
            name=args.name, command=command,
        )
    except ValueError as e:
        raise UserError(str(e)) from e
    what = f"{len(records)} evaluation result file(s)" if records else "no evaluation results (said so in the card)"
    print(f"wrote {out}: config.json, model.safetensors, tokenizer.model, README.md with {what}")
    return 0
