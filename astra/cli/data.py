"""``astra data check|text|export``: validate corpora, build unpaired text from a Hub text
corpus, copy FLEURS utterances into a local corpus folder (docs/data.md)."""

from __future__ import annotations

from pathlib import Path

from astra.cli import UserError
from astra.cli._common import add_action, add_actions, add_fleurs_arguments, split_csv

DEFAULT_TEXT_MAP = Path(__file__).resolve().parents[2] / "recipes" / "fleurs" / "text_corpus.tsv"


def register(subparsers) -> None:
    actions = add_actions(subparsers, "data",
                          "data tools (check corpora, unpaired text, export FLEURS)")
    check = add_action(
        actions, "check",
        "validate corpora: hours, utterances, speakers per language and split, every problem",
    )
    check.add_argument("dirs", nargs="*", metavar="DIR",
                       help="local corpus folder ({lang}/{split}.tsv|.parquet, or {config}/{split}/*.parquet)")
    add_fleurs_arguments(check)
    check.add_argument("--hf-cache-dir", metavar="DIR", help="datasets cache folder (default: datasets' own)")
    check.add_argument("--splits", help="comma-separated splits (default: all found; FLEURS: train,validation,test)")
    check.add_argument("--languages", help="comma-separated language codes to keep (default: all)")
    check.add_argument("--tokenizer", metavar="MODEL",
                       help="SentencePiece model: also check unencodable characters and transcripts too long "
                            "for their audio")
    check.add_argument("--subsampling-factor", type=int, default=4,
                       help="the model's subsampling (4, 6, 8): T' ~ fbank frames // this")
    check.add_argument("--max-utterance-seconds", type=float, default=0.0, help="flag longer audio (0: no limit)")
    check.add_argument("--raw-transcription", action="store_true",
                       help="FLEURS: check raw_transcription instead of transcription")
    check.add_argument("--language-tags", action="store_true", help="count the <lang:xx> token in the length check")
    check.add_argument("--max-problems", type=int, default=200, help="problems listed (0: all)")
    check.add_argument("--json", action="store_true",
                       help='print {language: {split: {"utterances", "hours", "speakers", "skipped": {reason: n}}}}')
    check.add_argument("--strict", action="store_true", help="exit with status 1 if any problem was found")
    check.set_defaults(func=run_check)

    text = add_action(
        actions, "text",
        "unpaired text per FLEURS language from a text corpus read with datasets "
        "(default: Wikipedia)",
        description="Stream each language's corpus config, keep its first --max-sentences sentences, "
                    "normalise them as for scoring, drop repeats and every sentence equal to a FLEURS "
                    "dev/test transcript; write OUT/{config}.txt (and the raw sentences, OUT/{config}.raw.txt).",
    )
    add_fleurs_arguments(text, required=True)
    text.add_argument("--map", default=str(DEFAULT_TEXT_MAP), metavar="TSV",
                      help="FLEURS config -> corpus language code (fleurs_config<TAB>code<TAB>note; '-': none)")
    text.add_argument("--corpus", default="wikimedia/wikipedia",
                      help="Hub dataset repo id, or a datasets builder (parquet, json) with --corpus-files")
    text.add_argument("--dump", default="20231101", help="corpus config = DUMP.CODE (e.g. 20231101.hi)")
    text.add_argument("--corpus-files", metavar="PATTERN",
                      help="local copy: data_files pattern with {config} (DUMP.CODE) and/or {code}, "
                           "e.g. wiki/{config}/*.parquet (then --corpus is the builder, default parquet)")
    text.add_argument("--max-sentences", type=int, default=200_000, help="sentences read per language")
    text.add_argument("--dedup-splits", default="validation,test",
                      help="FLEURS splits whose transcripts are removed from the text")
    text.add_argument("--hf-cache-dir", metavar="DIR", help="datasets cache folder (default: datasets' own)")
    text.add_argument("--out", required=True, metavar="DIR", help="output folder")
    text.set_defaults(func=run_text)

    export = add_action(
        actions, "export",
        "write FLEURS utterances as a local corpus folder (OUT/{config}/{split}.tsv + 16 kHz wav)",
    )
    add_fleurs_arguments(export, required=True)
    export.add_argument("--split", default="test", help="split (train, validation, test)")
    export.add_argument("--limit", type=int, default=0, help="first N utterances per config (0: all)")
    export.add_argument("--hf-cache-dir", metavar="DIR", help="datasets cache folder (default: datasets' own)")
    export.add_argument("--out", required=True, metavar="DIR", help="output corpus folder")
    export.set_defaults(func=run_export)


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
        report = check_sources(args.dirs, args.fleurs, args.fleurs_dir, split_csv(args.splits),
                               split_csv(args.languages), tokenizer, cfg)
    except ValueError as e:
        raise UserError(str(e)) from e
    if args.json:
        print(report.to_json())
    else:
        print(report.format(args.max_problems))
    return 1 if (args.strict and report.problems) else 0


def _fleurs_transcripts(config: str, fleurs_dir: str | None, splits: list[str], cache_dir: str | None) -> set[str]:
    """Normalised ``transcription`` and ``raw_transcription`` of ``splits`` of one config."""
    from astra.data.fleurs import iter_fleurs
    from astra.text_norm import normalize_text

    out = set()
    for utt in iter_fleurs([config], splits, data_dir=fleurs_dir, cache_dir=cache_dir):
        out.update(normalize_text(t) for t in (utt.transcription, utt.raw_transcription or "") if t)
    return out


def run_text(args) -> int:
    import datasets

    from astra.data.fleurs import parse_configs
    from astra.data.local_corpus import canonical_split
    from astra.data.text_corpus import build_language_text, open_text_corpus, read_corpus_map

    datasets.disable_progress_bars()
    if args.max_sentences < 1:
        raise UserError(f"--max-sentences must be >= 1, got {args.max_sentences}")
    if not Path(args.map).is_file():
        raise UserError(f"--map {args.map}: file not found")
    try:
        mapping = read_corpus_map(args.map)
    except ValueError as e:
        raise UserError(str(e)) from e
    configs = parse_configs(args.fleurs)
    unknown = [c for c in configs if c not in mapping]
    if unknown:
        raise UserError(f"{', '.join(unknown)}: not in {args.map}")
    dedup = [canonical_split(s) for s in split_csv(args.dedup_splits)]
    written = 0
    for config in configs:
        code = mapping[config]
        if code is None:
            print(f"{config}: skipped, the text corpus has no edition for it ({args.map})")
            continue
        corpus_config = f"{args.dump}.{code}"
        try:
            if args.corpus_files:
                files = args.corpus_files.format(config=corpus_config, code=code)
                builder = args.corpus if args.corpus != "wikimedia/wikipedia" else "parquet"
                documents = open_text_corpus(builder, None, data_files=files, cache_dir=args.hf_cache_dir)
            else:
                documents = open_text_corpus(args.corpus, corpus_config, cache_dir=args.hf_cache_dir)
            exclude = _fleurs_transcripts(config, args.fleurs_dir, dedup, args.hf_cache_dir) if dedup else set()
            result = build_language_text(config, documents, args.max_sentences, exclude, args.out)
        except ValueError as e:
            raise UserError(f"{config}: {e}") from e
        print(result.line())
        written += 1
    if not written:
        raise UserError(f"no text written: none of {', '.join(configs)} has a corpus edition in {args.map}")
    return 0


def run_export(args) -> int:
    import csv

    import soundfile as sf

    from astra.constants import SAMPLE_RATE
    from astra.data.audio import AudioError
    from astra.data.fleurs import iter_fleurs, parse_configs
    from astra.data.local_corpus import canonical_split

    split = canonical_split(args.split)
    out = Path(args.out)
    try:
        for config in parse_configs(args.fleurs):
            folder = out / config
            folder.mkdir(parents=True, exist_ok=True)
            rows = []
            for utt in iter_fleurs([config], [split], data_dir=args.fleurs_dir, cache_dir=args.hf_cache_dir):
                if args.limit and len(rows) >= args.limit:
                    break
                name = Path(utt.key).name.rsplit(".", 1)[0] + ".wav"
                try:
                    wav = utt.load_audio().numpy()
                except AudioError as e:
                    print(f"{utt.key}: skipped ({e.reason}: {e})")
                    continue
                sf.write(folder / name, wav, SAMPLE_RATE, subtype="PCM_16")
                rows.append({"key": utt.key, "path": name, "transcription": utt.transcription,
                             "duration": f"{len(wav) / SAMPLE_RATE:.3f}"})
            with open(folder / f"{split}.tsv", "w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, ["key", "path", "transcription", "duration"], delimiter="\t",
                                        quoting=csv.QUOTE_NONE, escapechar="\\")
                writer.writeheader()
                writer.writerows(rows)
            print(f"{config}/{split}: {len(rows)} utterances -> {folder}")
    except ValueError as e:
        raise UserError(str(e)) from e
    return 0
