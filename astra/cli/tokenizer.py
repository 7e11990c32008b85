"""``astra tokenizer train``: one SentencePiece model over transcripts and unpaired text;
``astra tokenizer extend``: a trained model plus the pieces of a new language (ids kept)."""

from __future__ import annotations

from astra.cli import UserError
from astra.cli._common import add_action, add_actions, add_fleurs_arguments, split_csv


def _add_text_sources(p) -> None:
    p.add_argument("--corpus", action="append", default=[], metavar="DIR", help="local corpus folder (repeatable)")
    add_fleurs_arguments(p)
    p.add_argument("--text", action="append", default=[], metavar="LANG=PATH",
                   help="unpaired text (one sentence a line), deduplicated against dev/test (repeatable)")
    p.add_argument("--languages", help="comma-separated language codes to keep (default: all)")
    p.add_argument("--splits", default="train", help="transcript splits used")
    p.add_argument("--dedup-splits", default="validation,test",
                   help="splits whose transcripts never enter training text")
    p.add_argument("--raw-transcription", action="store_true", help="FLEURS: train on raw_transcription")
    p.add_argument("--no-normalize", action="store_true", help="do not normalise transcripts (astra.text_norm)")


def register(subparsers) -> None:
    actions = add_actions(subparsers, "tokenizer", "tokenizer tools (train, extend)")
    extend = add_action(
        actions, "extend",
        "append a new language's pieces to a trained tokenizer (every old id kept)",
        description="Train a small SentencePiece model on the new text and append its pieces "
                    "missing from --base (and <lang:xx> tags when --base has tags); fine-tune "
                    "with finetune.tokenizer=OUT (docs/training.md).",
    )
    extend.add_argument("--base", required=True, metavar="MODEL", help="the pretrained model's .model")
    _add_text_sources(extend)
    extend.add_argument("--new-pieces", type=int, default=200,
                        help="size of the vocabulary learnt on the new text (pieces the base has are not added twice)")
    extend.add_argument("--character-coverage", type=float, default=1.0)
    extend.add_argument("--seed", type=int, default=0)
    extend.add_argument("--out", required=True, metavar="MODEL", help="output .model file")
    extend.set_defaults(func=run_extend)
    train = add_action(
        actions, "train",
        "train the SentencePiece tokenizer on training transcripts + unpaired text",
    )
    _add_text_sources(train)
    train.add_argument("--vocab-size", type=int, default=500)
    train.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    train.add_argument("--character-coverage", type=float, default=0.9995)
    train.add_argument("--language-tags", action="store_true", help="add <lang:xx> pieces (ids 4..) for every language")
    train.add_argument("--alpha", type=float, default=0.5, help="language balance: share ~ sentences ** alpha")
    train.add_argument("--byte-fallback", action="store_true",
                       help="unknown characters -> byte pieces instead of <unk>")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, metavar="MODEL", help="output .model file")
    train.set_defaults(func=run_train)


def _collect(args):
    from astra.data.config import DataConfig
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
    try:
        return collect_training_text(cfg)
    except ValueError as e:
        raise UserError(str(e)) from e


def run_train(args) -> int:
    from astra.data.tokenizer import TokenizerTrainConfig, train_tokenizer

    tcfg = TokenizerTrainConfig(
        vocab_size=args.vocab_size, model_type=args.model_type, character_coverage=args.character_coverage,
        language_tags=args.language_tags, alpha=args.alpha, byte_fallback=args.byte_fallback, seed=args.seed,
    )
    sentences, report = _collect(args)
    try:
        tok = train_tokenizer(sentences, args.out, tcfg)
    except ValueError as e:
        raise UserError(str(e)) from e
    print(report)
    print(f"wrote {args.out}: vocabulary {tok.vocab_size} (4 specials, {len(tok.languages)} language tags)")
    return 0


def run_extend(args) -> int:
    from astra.data.tokenizer import extend_tokenizer

    if args.new_pieces < 1:
        raise UserError(f"--new-pieces must be >= 1, got {args.new_pieces}")
    sentences, report = _collect(args)
    try:
        tok, extended = extend_tokenizer(
            args.base, sentences, args.out, new_pieces=args.new_pieces,
            character_coverage=args.character_coverage, seed=args.seed,
        )
    except ValueError as e:
        raise UserError(str(e)) from e
    print(report)
    print(extended.table(), end="")
    print(f"wrote {args.out}: vocabulary {tok.vocab_size}; fine-tune with --set finetune.tokenizer={args.out}")
    return 0
