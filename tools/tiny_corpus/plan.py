"""What the tiny corpus holds: settings, sentences per split, and a voice for every utterance.

The text is real: the usable sentences of the language's Debian fortunes collections
(:mod:`tiny_corpus.fortunes`). :func:`make_plan` is deterministic (one seeded RNG per
language and split), so a re-run plans exactly the same utterances and the builder only
synthesises what is missing. The ``test`` split is drawn first, with its own seed, so it does
not depend on the sizes of the other splits; then ``validation``, ``train`` and ``pretrain``
from the rest; the sentences left over are the unpaired text. No sentence (normalised text)
is in two splits. ``pretrain`` is the larger paired set for ``astra pretrain``;
``train``/``validation``/``test`` are the small FLEURS-like target corpus (``train`` is the
low-resource fine-tuning set). ``test`` is spoken only by the test voices, none of which
speaks in training.

Words of a validation or test sentence fall in three kinds: *paired* (in a ``pretrain`` or
``train`` transcript), *text-only* (in the unpaired text and in no paired training
transcript) and *unseen* (in neither).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from .fortunes import ReadStats, Sentence, read_sentences
from .languages import LANGUAGES

PAIRED_SPLITS = ("pretrain", "train", "validation", "test")
TRAINING_SPLITS = ("pretrain", "train")
SCORED_SPLITS = ("validation", "test")


@dataclass
class TinyCorpusConfig:
    """Settings of the tiny corpus (``recipes/tiny/corpus*.yaml``)."""

    languages: list[str] = field(default_factory=lambda: ["en_us", "de_de", "es_419", "it_it", "ru_ru"])
    pretrain_sentences: int = 2500
    train_sentences: int = 100
    validation_sentences: int = 40
    test_sentences: int = 80
    max_unpaired_sentences: int = 0  # 0: every sentence left over is unpaired text
    max_pool_sentences: int = 0  # > 0: a seeded sample of this many usable sentences (--quick)
    voices_per_sentence: int = 1  # of pretrain and train sentences
    train_voices: list[str] = field(default_factory=lambda: ["m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3"])
    test_voices: list[str] = field(default_factory=lambda: ["m7", "f4"])
    speed_wpm: list[int] = field(default_factory=lambda: [140, 185])
    pitch: list[int] = field(default_factory=lambda: [35, 65])
    max_duration_seconds: float = 8.0
    seed: int = 0
    test_seed: int = 1

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        unknown = [code for code in self.languages if code not in LANGUAGES]
        if unknown or not self.languages:
            raise ValueError(f"languages: unknown {unknown or 'empty list'}; available: {sorted(LANGUAGES)}")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages: duplicates in {self.languages}")
        for key in ("train_sentences", "test_sentences", "voices_per_sentence"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("pretrain_sentences", "validation_sentences", "max_unpaired_sentences", "max_pool_sentences"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not self.train_voices or not self.test_voices:
            raise ValueError("train_voices and test_voices must both be non-empty")
        shared = sorted(set(self.train_voices) & set(self.test_voices))
        if shared:
            raise ValueError(f"test_voices must not occur in train_voices; shared: {shared}")
        if self.voices_per_sentence > len(self.train_voices):
            raise ValueError(
                f"voices_per_sentence={self.voices_per_sentence} exceeds the "
                f"{len(self.train_voices)} train_voices"
            )
        for key, lo_hi in (("speed_wpm", (80, 450)), ("pitch", (0, 99))):
            rng = getattr(self, key)
            if len(rng) != 2 or not lo_hi[0] <= rng[0] <= rng[1] <= lo_hi[1]:
                raise ValueError(f"{key} must be [low, high] within {list(lo_hi)}, got {rng}")
        if self.max_duration_seconds <= 0:
            raise ValueError(f"max_duration_seconds must be > 0, got {self.max_duration_seconds}")

    def paired_sentences(self) -> int:
        return self.pretrain_sentences + self.train_sentences + self.validation_sentences + self.test_sentences

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: ``{language voice}+{variant}`` at a speed (words/min) and pitch."""

    variant: str
    speed_wpm: int
    pitch: int


@dataclass(frozen=True)
class PlannedUtterance:
    """One utterance to synthesise; ``path`` is relative to the language folder."""

    key: str
    language: str
    split: str
    sentence: Sentence
    voice: Voice
    path: str


@dataclass
class LanguagePlan:
    """Everything the corpus holds for one language."""

    code: str
    utterances: dict[str, list[PlannedUtterance]]  # split -> utterances
    unpaired: list[Sentence]
    text_only_words: list[str]  # words of validation/test that are text-only (module doc)
    unseen_words: list[str]  # words of validation/test in no training text at all
    usable_sentences: int
    read_stats: ReadStats


def _rng(seed: int, *parts: str) -> random.Random:
    return random.Random(f"{seed}/" + "/".join(parts))


def _voices(rng: random.Random, cfg: TinyCorpusConfig, variants: list[str], count: int) -> list[Voice]:
    chosen = rng.sample(variants, count)
    return [
        Voice(v, rng.randint(cfg.speed_wpm[0], cfg.speed_wpm[1]), rng.randint(cfg.pitch[0], cfg.pitch[1]))
        for v in chosen
    ]


def split_sentences(
    cfg: TinyCorpusConfig, code: str, pool: list[Sentence]
) -> tuple[dict[str, list[Sentence]], list[Sentence]]:
    """``pool`` (distinct sentences) drawn into the paired splits and the unpaired rest.

    Raises:
        ValueError: the pool has fewer sentences than the paired splits need.
    """
    pool = list(pool)
    if cfg.max_pool_sentences and len(pool) > cfg.max_pool_sentences:
        pool = _rng(cfg.seed, code, "pool").sample(pool, cfg.max_pool_sentences)
    if len(pool) < cfg.paired_sentences():
        raise ValueError(
            f"{code}: {len(pool)} usable sentences, fewer than the {cfg.paired_sentences()} the paired "
            "splits need; ask for fewer sentences"
        )
    _rng(cfg.test_seed, code, "test").shuffle(pool)
    sentences = {"test": pool[: cfg.test_sentences]}
    rest = pool[cfg.test_sentences:]
    _rng(cfg.seed, code, "paired").shuffle(rest)
    start = 0
    for split in ("validation", "train", "pretrain"):
        n = getattr(cfg, f"{split}_sentences")
        sentences[split] = rest[start: start + n]
        start += n
    unpaired = rest[start:]
    if cfg.max_unpaired_sentences:
        unpaired = unpaired[: cfg.max_unpaired_sentences]
    return sentences, unpaired


def word_kinds(sentences: dict[str, list[Sentence]], unpaired: list[Sentence]) -> tuple[set[str], set[str]]:
    """(words of the paired training transcripts, words of the unpaired text)."""
    paired = {w for split in TRAINING_SPLITS for s in sentences[split] for w in s.text.split()}
    text = {w for s in unpaired for w in s.text.split()}
    return paired, text


def plan_language(cfg: TinyCorpusConfig, code: str) -> LanguagePlan:
    """Sentences, voices and file names of one language (deterministic in ``cfg``)."""
    pool, read_stats = read_sentences(LANGUAGES[code])
    sentences, unpaired = split_sentences(cfg, code, pool)
    paired_words, unpaired_words = word_kinds(sentences, unpaired)
    text_only = {
        w for split in SCORED_SPLITS for s in sentences[split] for w in s.text.split()
        if w in unpaired_words and w not in paired_words
    }
    utterances: dict[str, list[PlannedUtterance]] = {}
    for split in PAIRED_SPLITS:
        rng = _rng(cfg.seed, code, split, "voices")
        variants = cfg.test_voices if split == "test" else cfg.train_voices
        per_sentence = cfg.voices_per_sentence if split in TRAINING_SPLITS else 1
        rows = []
        for sentence in sentences[split]:
            for voice in _voices(rng, cfg, variants, per_sentence):
                key = f"{code}_{split}_{len(rows):05d}"
                rows.append(PlannedUtterance(key, code, split, sentence, voice, f"audio/{split}/{key}.wav"))
        utterances[split] = rows
    unseen = {
        w for split in SCORED_SPLITS for s in sentences[split] for w in s.text.split()
        if w not in unpaired_words and w not in paired_words
    }
    return LanguagePlan(code, utterances, unpaired, sorted(text_only), sorted(unseen), len(pool), read_stats)


def make_plan(cfg: TinyCorpusConfig) -> list[LanguagePlan]:
    """The plan of every configured language (validates ``cfg`` first)."""
    cfg.validate()
    return [plan_language(cfg, code) for code in cfg.languages]
