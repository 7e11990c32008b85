"""``astra transcribe``: print the transcript of audio files (text, or JSON with --json)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from astra.cli import UserError
from astra.cli._common import (
    add_checkpoint_arguments,
    add_decode_arguments,
    add_lm_arguments,
    check_decode_arguments,
    lm_fusion_config,
    load_checkpoint,
    load_lm_fusion,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files with a checkpoint",
        description=(
            "Transcribe audio files (wav/flac/ogg, mp3 where supported; any sample rate, "
            "mono or multi-channel). Files longer than --chunk-seconds are decoded in "
            "chunks (Aligner long form, prediction network primed with the last "
            "--prime-tokens tokens). Prints 'FILE<TAB>TEXT' per file, or JSON with --json."
        ),
    )
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio file(s)")
    add_checkpoint_arguments(p)
    add_decode_arguments(p, "head and search for audio up to --chunk-seconds (default: aligner_greedy)")
    add_lm_arguments(p, with_language=True)
    p.add_argument("--chunk-seconds", type=float, default=14.0,
                   help="long-form chunk length in seconds (default: 14)")
    p.add_argument("--prime-tokens", type=int, default=10,
                   help="tokens carried into the next chunk (default: 10)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON list of {path, text, duration, decode_seconds, ...}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from astra.eval.transcribe import transcribe_file

    missing = [a for a in args.audio if not Path(a).is_file()]
    if missing:
        raise UserError(f"audio file(s) not found: {', '.join(missing)}")
    check_decode_arguments(args)
    if args.chunk_seconds <= 0:
        raise UserError(f"--chunk-seconds must be > 0, got {args.chunk_seconds}")
    if args.prime_tokens < 0:
        raise UserError(f"--prime-tokens must be >= 0, got {args.prime_tokens}")
    lm_cfg = lm_fusion_config(args)
    if lm_cfg.is_sweep:
        raise UserError("transcribe takes one --lm-weight and one --length-bonus "
                        "(sweep them with 'astra evaluate --split validation')")
    if lm_cfg.lm_dir is None and (any(lm_cfg.length_bonuses) or args.ilm_weight or args.lm_candidates
                                  or args.lm_language):
        raise UserError("--length-bonus, --ilm-weight, --lm-candidates and --lm-language need --lm DIR")
    _, model, tokenizer, _ = load_checkpoint(args)
    fusion, language = None, ""
    if lm_cfg.lm_dir is not None:
        from astra.lm.lm_dir import read_manifest

        try:
            available = list(read_manifest(lm_cfg.lm_dir)["languages"])
        except ValueError as e:
            raise UserError(f"--lm {lm_cfg.lm_dir}: {e}") from e
        language = lm_cfg.lm_language or (available[0] if len(available) == 1 else "")
        if not language:
            raise UserError(f"--lm {lm_cfg.lm_dir} has LMs for {', '.join(available)}: choose one with --lm-language")
        fusion = load_lm_fusion(lm_cfg, tokenizer, args.method, [language])
    results = []
    failed = 0
    for path in args.audio:
        try:
            t = transcribe_file(
                model, tokenizer, path, method=args.method, beam=args.beam,
                ctc_weight=args.ctc_weight, chunk_seconds=args.chunk_seconds, prime_tokens=args.prime_tokens,
                device=args.device, lm=fusion, language=language,
            )
        except ValueError as e:  # unreadable, empty or too short audio: report, go on
            failed += 1
            print(f"astra transcribe: skipped {path}: {e}", file=sys.stderr)
            if args.json:
                results.append({"path": str(path), "error": str(e)})
            continue
        if args.json:
            results.append(t.to_dict())
        else:
            print(f"{t.path}\t{t.text}", flush=True)
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    return 1 if failed else 0
