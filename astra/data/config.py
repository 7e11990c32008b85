"""``DataConfig``: where the data comes from and how batches are made (YAML section ``data``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from astra.config import check_choices


@dataclass
class DataConfig:
    """Data sources, filtering and batching.

    Sources (any combination):
        corpora: local corpus folders (``{lang}/{split}.tsv|.parquet``, or a copy of FLEURS'
            parquet conversion ``{config}/{split}/*.parquet``; see docs/data.md).
        fleurs: FLEURS configs, e.g. ``["en_us", "fr_fr"]`` (``astra.data.fleurs``).
        fleurs_dir: local copy of FLEURS for those configs, either layout: the repository's
            ``data/{config}/{split}.tsv`` + ``data/{config}/audio/{split}.tar.gz``, or the
            parquet conversion ``{config}/{split}/*.parquet``. ``None`` reads ``google/fleurs``
            from the Hub: the repository's tsv + tar.gz files first (``huggingface_hub``),
            the parquet conversion (``refs/convert/parquet``, ``datasets``) when those cannot
            be fetched.
        unpaired_text: ``LANG=PATH`` text sources (``.txt`` one sentence a line, ...).

    Utterance concatenation for long-form training (``run.concat_fraction``) is done by the
    training stream (:func:`astra.data.stream.build_train_stream`).
    """

    corpora: list[str] = field(default_factory=list)
    fleurs: list[str] = field(default_factory=list)
    fleurs_dir: str | None = None
    fleurs_target: Literal["transcription", "raw_transcription"] = "transcription"
    fleurs_streaming: bool = False  # streamed rows are held in memory (small subsets only)
    hf_cache_dir: str | None = None  # datasets cache folder (None: datasets' default)
    languages: list[str] = field(default_factory=list)  # keep only these (empty: all found)
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    dedup_splits: list[str] = field(default_factory=lambda: ["validation", "test"])
    unpaired_text: list[str] = field(default_factory=list)
    tokenizer: str | None = None  # SentencePiece .model path
    normalize_transcripts: bool = True  # targets = astra.text_norm.normalize_text(transcription)
    language_tags: bool = False  # prepend the <lang:xx> id to every token sequence
    # batching
    max_batch_seconds: float = 60.0  # summed audio seconds per speech batch
    max_text_tokens_per_batch: int = 2000  # summed tokens per text batch
    max_batch_utterances: int = 0  # cap on utterances per batch (0: none)
    num_buckets: int = 10
    text_ratio: float = 0.0  # text batches per speech batch
    num_workers: int = 0  # DataLoader worker processes
    # augmentation and features
    speed_perturb: bool = False
    speed_factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    feature_cache: str | None = None  # folder for cached fbank features (unperturbed only)
    # guards (bad data is skipped with a named reason, counted, summarised)
    # the model's front end (4, 6, 8): T' ~ T // factor; in a run config derived from model.subsampling
    subsampling_factor: int = 4
    max_utterance_seconds: float = 30.0  # 0: no limit
    max_tokens_per_second: float = 0.0  # 0: no limit
    check_audio_headers: bool = False  # read every audio header up front (else only when needed)
    max_skip_fraction: float = 0.2  # stop before training if more of a language's training split is skipped

    def validate(self) -> None:
        check_choices(self, "data.")
