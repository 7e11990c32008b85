"""What the tiny corpus holds: settings, sentences per split, and a voice for every utterance.

:func:`make_plan` is pure and deterministic (one seeded RNG per language and split), so a
re-run plans exactly the same utterances and the builder only synthesises what is missing.
The splits of one language share no sentence (normalised text), and neither does the
unpaired text with any of them. ``pretrain`` is the larger paired set for ``astra pretrain``;
``train``/``validation``/``test`` are the small FLEURS-like target corpus (``train`` is the
low-resource fine-tuning set). Paired ``pretrain``/``train``/``validation`` sentences never
contain a held-out concept (``pretrain`` may have made-up names and nouns); ``test`` has a
fixed fraction of sentences that do (so the text-only words can be scored) and is spoken only
by the test voices, none of which speaks in training.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from .grammar import Sentence, SentenceGrammar
from .lexicon import LANGUAGES

PAIRED_SPLITS = ("pretrain", "train", "validation", "test")
TRAINING_SPLITS = ("pretrain", "train")


@dataclass
class TinyCorpusConfig:
    """Settings of the tiny corpus (``recipes/tiny/corpus*.yaml``)."""

    languages: list[str] = field(default_factory=lambda: ["en_us", "de_de", "es_419", "it_it", "ru_ru"])
    pretrain_sentences: int = 500
    pretrain_pseudo_word_fraction: float = 0.0  # chance that a pretrain name / object noun is made up
    train_sentences: int = 100
    validation_sentences: int = 40
    test_sentences: int = 80
    unpaired_sentences: int = 6000
    voices_per_sentence: int = 1  # of pretrain and train sentences
    test_text_only_fraction: float = 0.5
    held_out_concepts: list[str] = field(
        default_factory=lambda: ["bicycle", "basket", "vase", "picture", "bottle", "yellow", "paint"]
    )
    train_voices: list[str] = field(default_factory=lambda: ["m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3"])
    test_voices: list[str] = field(default_factory=lambda: ["m7", "f4"])
    speed_wpm: list[int] = field(default_factory=lambda: [140, 185])
    pitch: list[int] = field(default_factory=lambda: [35, 65])
    number_max: int = 199
    max_duration_seconds: float = 8.0
    seed: int = 0

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
        for key in ("pretrain_sentences", "validation_sentences", "unpaired_sentences"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.pretrain_pseudo_word_fraction <= 1.0:
            raise ValueError(
                f"pretrain_pseudo_word_fraction must be in [0, 1], got {self.pretrain_pseudo_word_fraction}"
            )
        if not 0.0 <= self.test_text_only_fraction <= 1.0:
            raise ValueError(f"test_text_only_fraction must be in [0, 1], got {self.test_text_only_fraction}")
        if self.test_text_only_fraction > 0 and not self.held_out_concepts:
            raise ValueError("test_text_only_fraction > 0 needs held_out_concepts")
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
    text_only_words: list[str]


def _rng(seed: int, *parts: str) -> random.Random:
    return random.Random(f"{seed}/" + "/".join(parts))


def _draw_unique(
    grammar: SentenceGrammar,
    rng: random.Random,
    count: int,
    seen: set[str],
    include_held_out: bool,
    want_held_out: bool | None,
    what: str,
    pseudo_fraction: float = 0.0,
) -> list[Sentence]:
    """``count`` sentences whose text is not in ``seen`` (which is updated).

    ``want_held_out``: True keeps only sentences with a held-out concept, False only
    sentences without, None any. ``pseudo_fraction``: the chance that a sentence's name or
    object noun is a made-up word (:mod:`tiny_corpus.pseudowords`).
    Raises:
        ValueError: the grammar cannot produce that many new sentences.
    """
    out: list[Sentence] = []
    pseudo_words = grammar.pseudo_words() if pseudo_fraction > 0 else None
    attempts = 0
    max_attempts = 200 * count + 1000
    while len(out) < count:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"{grammar.language.code}: could only draw {len(out)} of {count} distinct {what} "
                f"sentences in {max_attempts} attempts; ask for fewer sentences"
            )
        sentence = grammar.sample(rng, include_held_out, pseudo_words, pseudo_fraction)
        if sentence.text in seen:
            continue
        if want_held_out is not None and grammar.uses_held_out(sentence) != want_held_out:
            continue
        seen.add(sentence.text)
        out.append(sentence)
    return out


def _voices(rng: random.Random, cfg: TinyCorpusConfig, variants: list[str], count: int) -> list[Voice]:
    chosen = rng.sample(variants, count)
    return [
        Voice(v, rng.randint(cfg.speed_wpm[0], cfg.speed_wpm[1]), rng.randint(cfg.pitch[0], cfg.pitch[1]))
        for v in chosen
    ]


def plan_language(cfg: TinyCorpusConfig, code: str) -> LanguagePlan:
    """Sentences, voices and file names of one language (deterministic in ``cfg``)."""
    grammar = SentenceGrammar(LANGUAGES[code], cfg.held_out_concepts, cfg.number_max)
    seen: set[str] = set()
    # test first, then validation, train, pretrain, unpaired: each split's sentences do not
    # depend on the sizes of the splits drawn after it
    n_text_only = round(cfg.test_sentences * cfg.test_text_only_fraction)
    test = _draw_unique(grammar, _rng(cfg.seed, code, "test", "text_only"), n_text_only, seen, True, True, "test")
    test += _draw_unique(
        grammar, _rng(cfg.seed, code, "test", "paired_vocab"), cfg.test_sentences - n_text_only, seen, False, False, "test"
    )
    sentences = {"test": test}
    sentences["validation"] = _draw_unique(
        grammar, _rng(cfg.seed, code, "validation"), cfg.validation_sentences, seen, False, False, "validation"
    )
    sentences["train"] = _draw_unique(
        grammar, _rng(cfg.seed, code, "train"), cfg.train_sentences, seen, False, False, "train"
    )
    sentences["pretrain"] = _draw_unique(
        grammar, _rng(cfg.seed, code, "pretrain"), cfg.pretrain_sentences, seen, False, False, "pretrain",
        cfg.pretrain_pseudo_word_fraction,
    )
    unpaired = _draw_unique(
        grammar, _rng(cfg.seed, code, "unpaired"), cfg.unpaired_sentences, seen, True, None, "unpaired"
    )

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
    return LanguagePlan(code, utterances, unpaired, sorted(grammar.text_only_words))


def make_plan(cfg: TinyCorpusConfig) -> list[LanguagePlan]:
    """The plan of every configured language (validates ``cfg`` first)."""
    cfg.validate()
    return [plan_language(cfg, code) for code in cfg.languages]
