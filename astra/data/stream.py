"""What the trainer and the evaluator call: batch streams with resume and skip summaries.

- :func:`build_train_stream` -> :class:`TrainStream`: speech batches (duration budget) mixed
  with unpaired-text batches (token budget) at ``text_ratio``, sharded by rank (do NOT pass
  it through ``accelerator.prepare``), exact mid-epoch resume, optional utterance
  concatenation for long-form training.
- :func:`build_eval_batches` -> :class:`EvalBatches`: every utterance of a split, fixed order.
- :func:`compute_feature_stats`: global CMVN statistics of training features.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

from astra.data import skips
from astra.data.config import DataConfig
from astra.data.corpus import load_utterances
from astra.data.dataset import (
    BatchDataset,
    SpeechItem,
    TextItem,
    identity_collate,
    prepare_speech_items,
    prepare_text_items,
    worker_init,
)
from astra.data.samplers import BatchMixer, BucketBatchSampler
from astra.data.skips import SkipCounter, check_skip_fraction
from astra.data.targets import normalize_target
from astra.data.unpaired_text import load_unpaired_text
from astra.text_norm import normalize_text

log = logging.getLogger(__name__)


def _loader(dataset: BatchDataset, plan: list, num_workers: int):
    import torch.utils.data

    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=plan,
        num_workers=num_workers,
        collate_fn=identity_collate,
        worker_init_fn=worker_init if num_workers else None,
        prefetch_factor=2 if num_workers else None,
    )


def _count_load_skips(batch: dict, counter: SkipCounter) -> dict:
    for key, language, reason, detail in batch.pop("_skipped", []):
        counter.add(reason, key, language, detail)
    return batch


class TrainStream:
    """Training batches of one rank: speech and text mixed, resumable mid-epoch.

    Call ``set_epoch(e)`` and iterate once per epoch (``for batch in stream``); iterating a
    finished epoch again yields nothing (so a state saved at the very end of an epoch resumes
    to an empty remainder, then ``set_epoch(e + 1)``). ``len(stream)`` is the
    number of batches this rank yields in the current epoch (speech + text), equal on every
    rank. ``state_dict()`` is identical on every rank; ``load_state_dict`` then iterating
    yields exactly the batches that had not been consumed. A speech batch can come out with
    fewer utterances than planned (B = 0 in the rare case that every one of them failed to
    decode); such losses are counted in :meth:`skip_summary`.
    """

    def __init__(
        self,
        cfg: DataConfig,
        tokenizer,
        speech_items: list[SpeechItem],
        text_items: list[TextItem],
        speech_skips: SkipCounter,
        text_skips: SkipCounter,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        concat_fraction: float = 0.0,
    ):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.speech_items = speech_items
        self.text_items = text_items
        self.speech_skips = speech_skips
        self.text_skips = text_skips
        self.speech_sampler = BucketBatchSampler(
            [it.duration for it in speech_items], cfg.max_batch_seconds, num_buckets=cfg.num_buckets, seed=seed,
            rank=rank, world_size=world_size, max_batch_items=cfg.max_batch_utterances, name="speech batches",
        )
        text_sampler = None
        if text_items and cfg.text_ratio > 0:
            text_sampler = BucketBatchSampler(
                [len(it.tokens) for it in text_items], cfg.max_text_tokens_per_batch, num_buckets=cfg.num_buckets,
                seed=seed + 1, rank=rank, world_size=world_size, max_batch_items=cfg.max_batch_utterances,
                name="text batches",
            )
        elif cfg.text_ratio > 0:
            log.warning("text_ratio %.2f but no unpaired text: speech batches only", cfg.text_ratio)
        self.mixer = BatchMixer(self.speech_sampler, text_sampler, cfg.text_ratio)
        self.dataset = BatchDataset(speech_items, text_items, cfg, training=True, seed=seed,
                                    concat_fraction=concat_fraction)

    @property
    def epoch(self) -> int:
        return self.mixer.epoch

    def __len__(self) -> int:
        return len(self.mixer)

    def set_epoch(self, epoch: int) -> None:
        """Go to ``epoch`` (no-op if already there, so a resumed position survives)."""
        self.mixer.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        epoch = self.epoch
        plan = [(kind, batch, epoch) for kind, batch in self.mixer.plan()]
        if not plan:
            return
        for batch in _loader(self.dataset, plan, self.cfg.num_workers):
            self.mixer.advance(batch["kind"])
            yield _count_load_skips(batch, self.speech_skips)
        log.info("epoch %d done (rank %d): %s; %s", epoch, self.rank, self.speech_skips.format(),
                 self.text_skips.format())

    def state_dict(self) -> dict:
        return {"mixer": self.mixer.state_dict(), "speech_skips": self.speech_skips.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.mixer.load_state_dict(state["mixer"])
        if "speech_skips" in state:
            self.speech_skips.load_state_dict(state["speech_skips"])

    def skip_summary(self) -> dict[str, dict[str, int]]:
        """``{"speech": {reason: n}, "text": {reason: n}}``: index-time skips (whole corpus)
        plus decode-time skips of this rank's batches so far."""
        return {"speech": self.speech_skips.summary(), "text": self.text_skips.summary()}


def _eval_transcripts(cfg: DataConfig, languages: list[str] | None) -> set[str]:
    if not cfg.dedup_splits:
        return set()
    utts = load_utterances(cfg, cfg.dedup_splits, languages)
    return {t for t in (normalize_text(u.transcription) for u in utts) if t}


def build_train_stream(cfg: DataConfig, tokenizer, rank: int = 0, world_size: int = 1, seed: int = 0,
                       concat_fraction: float = 0.0) -> TrainStream:
    """The training batch stream of one rank (see :class:`TrainStream`).

    Loads ``cfg.train_splits`` of every source, skips bad utterances by name, loads unpaired
    text (deduplicated against ``cfg.dedup_splits`` transcripts), and builds the samplers.
    ``concat_fraction`` (``run.concat_fraction``) of each speech batch is concatenated into
    long utterances (:class:`astra.data.dataset.BatchDataset`).

    Raises:
        ValueError: no source, nothing left to train on, or more than
            ``cfg.max_skip_fraction`` of a language's utterances skipped
            (:func:`astra.data.skips.check_skip_fraction`).
    """
    speech_skips = SkipCounter("train speech")
    utts = load_utterances(cfg, cfg.train_splits, skip_counter=speech_skips)
    items = prepare_speech_items(utts, tokenizer, cfg, speech_skips, training=True)
    if not items:
        raise ValueError(f"no usable training utterance in splits {cfg.train_splits} ({speech_skips.format()})")
    log.info("train speech: %d utterances, %.2f h; %s", len(items), sum(i.duration for i in items) / 3600,
             speech_skips.format())
    check_skip_fraction(speech_skips, _per_language(items), cfg.max_skip_fraction)
    text_skips = SkipCounter("unpaired text")
    text_items: list[TextItem] = []
    if cfg.unpaired_text:
        languages = cfg.languages or sorted({u.language for u in utts})
        exclude = _eval_transcripts(cfg, languages)
        unpaired = load_unpaired_text(cfg.unpaired_text, exclude=exclude, languages=cfg.languages or None)
        text_skips = unpaired.skips
        text_items = prepare_text_items(unpaired.sentences, tokenizer, cfg, text_skips)
        log.info("unpaired text: %d sentences; %s", len(text_items), text_skips.format())
    return TrainStream(cfg, tokenizer, items, text_items, speech_skips, text_skips, rank, world_size, seed,
                       concat_fraction)


class EvalBatches:
    """Speech batches over every usable utterance of one split, in a fixed order: the
    languages' batches (each language's by duration) taken in turn, so that the first few
    batches (``run.valid_max_batches``) sample every language. ``utterances`` lists the
    records batched; ``skip_summary()`` what was skipped (empty transcripts, undecodable
    audio)."""

    def __init__(self, cfg: DataConfig, items: list[SpeechItem], skip_counter: SkipCounter, max_batch_seconds: float,
                 num_workers: int = 0, rank: int = 0, world_size: int = 1):
        self.cfg = cfg
        self.items = items
        self.skips = skip_counter
        self.num_workers = num_workers
        self.dataset = BatchDataset(items, None, cfg, training=False)
        self.batches: list[list[int]] = []
        by_lang: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            by_lang.setdefault(it.utterance.language, []).append(i)
        per_language = []
        for lang in sorted(by_lang):
            idx = by_lang[lang]
            sampler = BucketBatchSampler([items[i].duration for i in idx], max_batch_seconds, shuffle=False,
                                         max_batch_items=cfg.max_batch_utterances, name=f"eval {lang}")
            per_language.append([[idx[j] for j in b] for b in sampler.epoch_batches(0)])
        for turn in itertools.zip_longest(*per_language):
            self.batches.extend(b for b in turn if b is not None)
        self.batches = self.batches[rank::world_size]

    @property
    def utterances(self):
        return [it.utterance for it in self.items]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict]:
        plan = [("speech", b, 0) for b in self.batches]
        if not plan:
            return
        for batch in _loader(self.dataset, plan, self.num_workers):
            yield _count_load_skips(batch, self.skips)

    def skip_summary(self) -> dict[str, int]:
        return self.skips.summary()


def build_eval_batches(
    cfg: DataConfig,
    tokenizer,
    split: str = "test",
    languages: list[str] | None = None,
    max_batch_seconds: float | None = None,
    num_workers: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    report_training_skips: bool = False,
) -> EvalBatches:
    """Speech batches over every utterance of ``split`` (see :class:`EvalBatches`).

    Args:
        tokenizer: fills ``tokens`` (may be ``None``: empty token tensors).
        languages: default ``cfg.languages`` (empty: all).
        max_batch_seconds: default ``cfg.max_batch_seconds``.
        num_workers: default ``cfg.num_workers``.
        rank, world_size: optional sharding (batches ``rank::world_size``; counts may differ by one).
        report_training_skips: also log (:func:`report_training_filters`) which of these
            utterances the training filters would skip (validation during training).
    """
    counter = SkipCounter(f"eval {split}")
    utts = load_utterances(cfg, split, languages, counter)
    items = prepare_speech_items(utts, tokenizer, cfg, counter, training=False)
    log.info("eval %s: %d utterances; %s", split, len(items), counter.format())
    if report_training_skips and tokenizer is not None:
        report_training_filters([it.utterance for it in items], tokenizer, cfg, split)
    return EvalBatches(cfg, items, counter, max_batch_seconds or cfg.max_batch_seconds,
                       cfg.num_workers if num_workers is None else num_workers, rank, world_size)


def _per_language(items: list[SpeechItem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for it in items:
        counts[it.utterance.language] = counts.get(it.utterance.language, 0) + 1
    return counts


def report_training_filters(utts, tokenizer, cfg: DataConfig, split: str) -> SkipCounter:
    """Log which of the scored utterances ``utts`` of an evaluation split training would skip
    (evaluation scores all of them, so e.g. unencodable transcripts count as errors the model
    cannot avoid).

    Returns the would-be skips (``SkipCounter`` named ``"validation <split>"``)."""
    would = SkipCounter(f"validation {split}", log_examples=False)
    prepare_speech_items(utts, tokenizer, cfg, would, training=True)
    if would.total:
        log.warning(
            "%s: %d of the %d scored utterances would be skipped in training (%s); their errors "
            "count in the validation WER", would.name, would.total, len(utts),
            ", ".join(f"{r} {n}" for r, n in sorted(would.counts.items())),
        )
    return would


def compute_feature_stats(cfg: DataConfig, max_utterances: int = 500, seed: int = 0, split: str | None = None):
    """Global CMVN statistics of training features: ``(mean [F], std [F])`` float32.

    Uses up to ``max_utterances`` training utterances drawn at random with ``seed``
    (unperturbed audio); undecodable ones are skipped and logged.
    """
    import random

    import torch

    from astra.data.audio import AudioError
    from astra.features import NUM_MEL_BINS, fbank

    counter = SkipCounter("feature stats")
    utts = load_utterances(cfg, split or cfg.train_splits, skip_counter=counter)
    utts = [u for u in utts if normalize_target(u.transcription, cfg)]
    rng = random.Random(seed)
    if len(utts) > max_utterances:
        utts = rng.sample(utts, max_utterances)
    total = torch.zeros(NUM_MEL_BINS, dtype=torch.float64)
    total_sq = torch.zeros(NUM_MEL_BINS, dtype=torch.float64)
    frames = 0
    for u in utts:
        try:
            feats = fbank(u.load_audio()).double()
        except AudioError as e:
            counter.add(e.reason, u.key, u.language, str(e))
            continue
        except ValueError as e:
            counter.add(skips.TOO_SHORT_AUDIO, u.key, u.language, str(e))
            continue
        total += feats.sum(0)
        total_sq += (feats**2).sum(0)
        frames += feats.size(0)
    if frames == 0:
        raise ValueError(f"no decodable training audio for feature statistics ({counter.format()})")
    mean = total / frames
    std = (total_sq / frames - mean**2).clamp(min=1e-10).sqrt()
    log.info("feature stats over %d utterances, %d frames; %s", len(utts), frames, counter.format())
    return mean.float(), std.float()
