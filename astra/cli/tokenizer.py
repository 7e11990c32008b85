"""``astra tokenizer train``: one SentencePiece model over transcripts and unpaired text."""

from __future__ import annotations

from astra.cli import UserError
from astra.cli._common import add_action_parser, split_csv


def register(subparsers) -> None:
    train = add_action_parser(
        subparsers, "tokenizer", "tokenizer tools (train)", "train",
        "train the SentencePiece tokenizer on training transcripts + unpaired text",
    )
    train.add_argument("--corpus", action="append", default=[], metavar="DIR", help="local corpus folder (repeatable)")
    train.add_argument("--fleurs", metavar="CONFIGS", help="FLEURS configs, comma separated")
    train.add_argument("--fleurs-dir", metavar="DIR", help="local copy of FLEURS' parquet conversion (default: the Hub)")
    train.add_argument("--text", action="append", default=[], metavar="LANG=PATH",
                       help="unpaired text (one sentence a line), deduplicated against dev/test (repeatable)")
    train.add_argument("--languages", help="comma-separated language codes to keep (default: all)")
    train.add_argument("--splits", default="train", help="transcript splits used")
    train.add_argument("--dedup-splits", default="validation,test", help="splits whose transcripts never enter training text")
    train.add_argument("--vocab-size", type=int, default=500)
    train.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    train.add_argument("--character-coverage", type=float, default=0.9995)
    train.add_argument("--language-tags", action="store_true", help="add <lang:xx> pieces (ids 4..) for every language")
    train.add_argument("--alpha", type=float, default=0.5, help="language balance: share ~ sentences ** alpha")
    train.add_argument("--byte-fallback", action="store_true", help="unknown characters -> byte pieces instead of <unk>")
    train.add_argument("--raw-transcription", action="store_true", help="FLEURS: train on raw_transcription")
    train.add_argument("--no-normalize", action="store_true", help="do not normalise transcripts (astra.text_norm)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, metavar="MODEL", help="output .model file")
    train.set_defaults(func=run_train)


def run_train(args) -> int:
    from astra.data.config import DataConfig
    from astra.data.tokenizer import TokenizerTrainConfig, train_tokenizer
    from astra.data.training_text import collect_training_text

    if not args.corpus and not args.fleurs and not args.text:
        raise UserError("give --corpus DIR, --fleurs CONFIGS and/or --text LANG=PATH")
    cfg = DataConfig(
        corpora=args.corpus,
        fleurs=split_csv(args.fleurs),
        fleurs_dir=args.fleurs_dir,
        fleurs_target="raw_transcription" if args.raw_transcription else "transcription",
        languages=split_csv(args.languages),
        train_splits=split_csv(args.splits),
        dedup_splits=split_csv(args.dedup_splits),
        unpaired_text=args.text,
        normalize_transcripts=not args.no_normalize,
    )
    tcfg = TokenizerTrainConfig(
        vocab_size=args.vocab_size, model_type=args.model_type, character_coverage=args.character_coverage,
        language_tags=args.language_tags, alpha=args.alpha, byte_fallback=args.byte_fallback, seed=args.seed,
    )
    try:
        sentences, report = collect_training_text(cfg)
        tok = train_tokenizer(sentences, args.out, tcfg)
    except ValueError as e:
        raise UserError(str(e)) from e
    print(report)
    print(f"wrote {args.out}: vocabulary {tok.vocab_size} (4 specials, {len(tok.languages)} language tags)")
    return 0
