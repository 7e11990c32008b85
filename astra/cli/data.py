"""``astra data check``: validate local corpora and/or FLEURS configs (docs/data.md)."""

from __future__ import annotations

from astra.cli import UserError
from astra.cli._common import add_action_parser, split_csv


def register(subparsers) -> None:
    check = add_action_parser(
        subparsers, "data", "data tools (check corpora)", "check",
        "validate corpora: hours, utterances, speakers per language and split, every problem",
    )
    check.add_argument("dirs", nargs="*", metavar="DIR",
                       help="local corpus folder ({lang}/{split}.tsv|.parquet, or {config}/{split}/*.parquet)")
    check.add_argument("--fleurs", metavar="CONFIGS", help="FLEURS configs, comma separated (e.g. en_us,fr_fr)")
    check.add_argument("--fleurs-dir", metavar="DIR",
                       help="local copy of FLEURS' parquet conversion ({config}/{split}/*.parquet); default: the Hub")
    check.add_argument("--hf-cache-dir", metavar="DIR", help="datasets cache folder (default: datasets' own)")
    check.add_argument("--splits", help="comma-separated splits (default: all found; FLEURS: train,validation,test)")
    check.add_argument("--languages", help="comma-separated language codes to keep (default: all)")
    check.add_argument("--tokenizer", metavar="MODEL",
                       help="SentencePiece model: also check unencodable characters and transcripts too long for their audio")
    check.add_argument("--subsampling-factor", type=int, default=4, help="the model's subsampling (4, 6, 8): T' ~ fbank frames // this")
    check.add_argument("--max-utterance-seconds", type=float, default=0.0, help="flag longer audio (0: no limit)")
    check.add_argument("--raw-transcription", action="store_true", help="FLEURS: check raw_transcription instead of transcription")
    check.add_argument("--language-tags", action="store_true", help="count the <lang:xx> token in the length check")
    check.add_argument("--max-problems", type=int, default=200, help="problems listed (0: all)")
    check.add_argument("--json", action="store_true",
                       help='print {language: {split: {"utterances", "hours", "speakers", "skipped": {reason: n}}}}')
    check.add_argument("--strict", action="store_true", help="exit with status 1 if any problem was found")
    check.set_defaults(func=run_check)


def run_check(args) -> int:
    import datasets

    from astra.data.check import check_sources
    from astra.data.config import DataConfig

    datasets.disable_progress_bars()

    if not args.dirs and not args.fleurs:
        raise UserError("give at least one corpus DIR or --fleurs CONFIGS")
    cfg = DataConfig(
        subsampling_factor=args.subsampling_factor,
        max_utterance_seconds=args.max_utterance_seconds,
        fleurs_target="raw_transcription" if args.raw_transcription else "transcription",
        language_tags=args.language_tags,
        hf_cache_dir=args.hf_cache_dir,
    )
    tokenizer = None
    try:
        if args.tokenizer:
            from astra.data.tokenizer import Tokenizer

            tokenizer = Tokenizer(args.tokenizer)
        report = check_sources(args.dirs, args.fleurs, args.fleurs_dir, split_csv(args.splits), split_csv(args.languages), tokenizer, cfg)
    except ValueError as e:
        raise UserError(str(e)) from e
    if args.json:
        print(report.to_json())
    else:
        print(report.format(args.max_problems))
    return 1 if (args.strict and report.problems) else 0
