"""Named reasons for skipping bad data, and the counter that never loses one silently.

Every utterance or text line the pipeline drops goes through :meth:`SkipCounter.add` with one
of the reasons below; the counter logs the first few of each reason, keeps per-language
counts, and prints a summary at the end of an epoch and in ``astra data check``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict

log = logging.getLogger(__name__)

MISSING_AUDIO = "missing_audio"  # the audio file does not exist
UNREADABLE_AUDIO = "unreadable_audio"  # the decoder failed (corrupt / truncated / not audio)
UNSUPPORTED_FORMAT = "unsupported_format"  # a container/codec this build cannot decode
EMPTY_AUDIO = "empty_audio"  # zero samples
TOO_SHORT_AUDIO = "too_short_audio"  # shorter than one 25 ms feature window
TOO_LONG_AUDIO = "too_long_audio"  # longer than DataConfig.max_utterance_seconds
EMPTY_TRANSCRIPT = "empty_transcript"  # nothing left after normalisation
UNENCODABLE_TEXT = "unencodable_text"  # the tokenizer maps some characters to <unk>
TRANSCRIPT_TOO_LONG = "transcript_too_long"  # U + 1 (<eos>) > encoder frames T'
TOO_MANY_TOKENS_PER_SECOND = "too_many_tokens_per_second"  # DataConfig.max_tokens_per_second
DUPLICATE_KEY = "duplicate_key"  # a key seen before in the same corpus
BAD_MANIFEST_ROW = "bad_manifest_row"  # a manifest row without path/transcription
EVAL_OVERLAP = "eval_overlap"  # unpaired text line that occurs in a dev/test transcript
DUPLICATE_TEXT = "duplicate_text"  # unpaired text line seen before

REASONS = (
    MISSING_AUDIO,
    UNREADABLE_AUDIO,
    UNSUPPORTED_FORMAT,
    EMPTY_AUDIO,
    TOO_SHORT_AUDIO,
    TOO_LONG_AUDIO,
    EMPTY_TRANSCRIPT,
    UNENCODABLE_TEXT,
    TRANSCRIPT_TOO_LONG,
    TOO_MANY_TOKENS_PER_SECOND,
    DUPLICATE_KEY,
    BAD_MANIFEST_ROW,
    EVAL_OVERLAP,
    DUPLICATE_TEXT,
)


class SkipCounter:
    """Counts skipped items by reason (and by language), logging the first few of each.

    Args:
        name: prefix of log lines (e.g. ``"train speech"``).
        log_first: how many examples of each reason are kept (``examples``) and logged.
        log_examples: False keeps the examples without logging them.
    """

    def __init__(self, name: str = "data", log_first: int = 3, log_examples: bool = True):
        self.name = name
        self.log_first = log_first
        self.log_examples = log_examples
        self.counts: Counter[str] = Counter()
        self.by_language: dict[str, Counter[str]] = defaultdict(Counter)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, reason: str, key: str, language: str | None = None, detail: str = "") -> None:
        """Record one skipped item ``key`` (utterance key or text line) for ``reason``."""
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; known: {', '.join(REASONS)}")
        self.counts[reason] += 1
        self.by_language[language or "?"][reason] += 1
        if len(self.examples[reason]) < self.log_first:
            self.examples[reason].append(f"{key}: {detail}" if detail else key)
            if self.log_examples:
                log.warning("%s: skipped %s (%s)%s", self.name, key, reason, f": {detail}" if detail else "")

    def merge(self, counts: dict[str, int], language: str | None = None) -> None:
        """Add counts recorded elsewhere (e.g. in a DataLoader worker)."""
        for reason, n in counts.items():
            self.counts[reason] += n
            self.by_language[language or "?"][reason] += n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, int]:
        """``{reason: count}`` of every reason seen, sorted by reason."""
        return dict(sorted(self.counts.items()))

    def format(self) -> str:
        """One line: ``name: skipped N (reason a, reason b)`` or ``name: nothing skipped``."""
        if not self.counts:
            return f"{self.name}: nothing skipped"
        parts = ", ".join(f"{r} {n}" for r, n in sorted(self.counts.items()))
        return f"{self.name}: skipped {self.total} ({parts})"

    def state_dict(self) -> dict:
        return {"counts": dict(self.counts), "by_language": {k: dict(v) for k, v in self.by_language.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.counts = Counter(state.get("counts", {}))
        self.by_language = defaultdict(Counter, {k: Counter(v) for k, v in state.get("by_language", {}).items()})


# what a user can do when most of a language's data is skipped for a reason
FIXES = {
    UNENCODABLE_TEXT: "use a tokenizer that covers the language's characters: add its pieces with "
    "astra tokenizer extend --base OLD.model --text LANG=FILE --out NEW.model and fine-tune with "
    "finetune.tokenizer=NEW.model, or train one on its transcripts (astra tokenizer train)",
    TRANSCRIPT_TOO_LONG: "use a bigger tokenizer vocabulary (longer pieces: astra tokenizer train "
    "--vocab-size N, or add the language's own pieces with astra tokenizer extend), or a lower "
    "model.subsampling",
    TOO_LONG_AUDIO: "raise data.max_utterance_seconds",
    TOO_MANY_TOKENS_PER_SECOND: "raise data.max_tokens_per_second (0: no limit)",
    MISSING_AUDIO: "check the audio paths of the manifests (`astra data check`)",
    UNREADABLE_AUDIO: "check the audio files (`astra data check`)",
    UNSUPPORTED_FORMAT: "convert the audio to wav/flac",
    EMPTY_TRANSCRIPT: "check the transcription column and data.normalize_transcripts",
    DUPLICATE_KEY: "remove the repeated utterances from the manifests (`astra data check`)",
}


def check_skip_fraction(counter: SkipCounter, kept: dict[str, int], max_fraction: float) -> None:
    """Refuse data of which too much was skipped: for each language, ``skipped / (kept +
    skipped)`` must be at most ``max_fraction`` (``DataConfig.max_skip_fraction``).

    Args:
        counter: the skips of the split (``counter.by_language``); its ``name`` starts the message.
        kept: usable items per language.
    Raises:
        ValueError: one line naming the language, the counts, the main reason and its fix.
    """
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"data.max_skip_fraction must be in [0, 1], got {max_fraction}")
    for language in sorted(set(counter.by_language) | set(kept)):
        reasons = counter.by_language.get(language, {})
        skipped = sum(reasons.values())
        total = skipped + kept.get(language, 0)
        if not total or skipped / total <= max_fraction:
            continue
        main = max(sorted(reasons), key=lambda r: reasons[r])
        example = counter.examples.get(main, [])
        detail = f" (e.g. {example[0]})" if example and main == UNENCODABLE_TEXT else ""
        parts = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
        fix = FIXES.get(main, "fix the data")
        raise ValueError(
            f"{counter.name} {language}: {skipped} of {total} utterances skipped "
            f"({100 * skipped / total:.0f} % > data.max_skip_fraction={max_fraction:g}; {parts}); "
            f"mostly {main}{detail}: {fix}, or raise data.max_skip_fraction to "
            f"{math.ceil(100 * skipped / total) / 100:g}"
        )
