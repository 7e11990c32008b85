"""``astra lm train``: per-language n-gram LMs over the model's SentencePiece pieces."""

from __future__ import annotations

from astra.cli import UserError
from astra.cli._common import add_action_parser, split_csv


def register(subparsers) -> None:
    train = add_action_parser(
        subparsers, "lm", "n-gram language models for shallow fusion (train)", "train",
        "build one n-gram LM per language (modified Kneser-Ney over the tokenizer's pieces, ARPA)",
    )
    train.add_argument("--tokenizer", required=True, metavar="MODEL",
                       help="the model's SentencePiece model (a checkpoint's tokenizer.model)")
    train.add_argument("--text", action="append", default=[], metavar="LANG=PATH",
                       help="unpaired text: .txt(.gz), parquet/json(l)/csv with a 'text' column, or a saved "
                            "datasets folder (repeatable)")
    train.add_argument("--corpus", action="append", default=[], metavar="DIR",
                       help="also use the transcripts of this local corpus' --splits (repeatable)")
    train.add_argument("--languages", help="comma-separated language codes to keep (default: all)")
    train.add_argument("--splits", default="train", help="transcript splits used from --corpus")
    train.add_argument("--dedup-splits", default="validation,test",
                       help="splits of --corpus whose transcripts are removed from the text")
    train.add_argument("--order", type=int, default=6, help="n-gram order")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (ARPA files + manifest.json)")
    train.set_defaults(func=run_train)


def run_train(args) -> int:
    from astra.data.config import DataConfig
    from astra.data.tokenizer import Tokenizer
    from astra.data.training_text import collect_training_text
    from astra.lm.train import train_lm

    if not args.text and not args.corpus:
        raise UserError("give the text: --text LANG=PATH (repeatable) and/or --corpus DIR")
    if args.order < 1:
        raise UserError(f"--order must be >= 1, got {args.order}")
    cfg = DataConfig(
        corpora=args.corpus, languages=split_csv(args.languages), train_splits=split_csv(args.splits),
        dedup_splits=split_csv(args.dedup_splits), unpaired_text=args.text,
    )
    try:
        tokenizer = Tokenizer(args.tokenizer)
        sentences, report = collect_training_text(cfg)
        manifest = train_lm(sentences, tokenizer, args.out, order=args.order)
    except ValueError as e:
        raise UserError(str(e)) from e
    print(report)
    for lang, info in manifest["languages"].items():
        counts = " ".join(f"{n + 1}:{c}" for n, c in enumerate(info["ngrams"]))
        print(f"{lang}: {info['sentences']} sentences, {info['pieces']} pieces, n-grams {counts}")
    print(f"wrote {args.out}/manifest.json (order {args.order}, {len(manifest['languages'])} language(s))")
    return 0
