"""Word and character error rates per utterance and per language, scored with ``jiwer``.

Scoring rules (documented in ``docs/evaluation.md``):

* reference and hypothesis are normalised with :func:`astra.text_norm.normalize_text`
  unless ``normalize=False``;
* languages whose code is in ``cer_languages`` (default: cmn, yue, ja, th, lo, my, km) are
  scored per character with all whitespace removed (spaces in these scripts are phrase
  breaks, not word boundaries); every other language is scored per word (WER);
* a FLEURS config such as ``cmn_hans_cn`` maps to the code before the first ``_`` (``cmn``);
* an empty reference is scored explicitly: every hypothesis unit is an insertion and the
  reference contributes 0 units (jiwer >= 4 convention); an utterance's error rate is
  ``errors / max(ref_units, 1)``;
* per language: substitutions, deletions, insertions, reference units, error rate;
* **pooled**: total errors / total reference units over all languages (word and character
  units are summed together when both occur; the pooled rate per unit kind is also given);
* **macro**: the unweighted mean of the per-language error rates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from astra.text_norm import normalize_text

DEFAULT_CER_LANGUAGES: tuple[str, ...] = ("cmn", "yue", "ja", "th", "lo", "my", "km")

WORD = "word"
CHAR = "char"


def language_code(language: str) -> str:
    """The language code scored against ``cer_languages``: ``"cmn_hans_cn" -> "cmn"``.

    Raises:
        ValueError: if ``language`` is empty.
    """
    code = language.strip().lower().split("_", 1)[0]
    if not code:
        raise ValueError(f"empty language name {language!r}")
    return code


def scoring_unit(language: str, cer_languages: Iterable[str] = DEFAULT_CER_LANGUAGES) -> str:
    """``"char"`` if ``language`` is scored by CER, else ``"word"``."""
    codes = {language_code(c) for c in cer_languages}
    return CHAR if language_code(language) in codes else WORD


def rate_name(unit: str) -> str:
    """``"CER"`` for character units, ``"WER"`` for word units."""
    return "CER" if unit == CHAR else "WER"


@dataclass
class ErrorCounts:
    """Edit-distance counts; ``ref_units`` are reference words or characters."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0
    ref_units: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def error_rate(self) -> float:
        """``errors / ref_units``; with no reference units, the number of insertions."""
        return self.errors / max(self.ref_units, 1)

    def add(self, other: ErrorCounts) -> None:
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        self.hits += other.hits
        self.ref_units += other.ref_units


@dataclass
class UtteranceScore:
    """One scored utterance: the texts as scored (normalised) and its error counts."""

    key: str
    language: str
    unit: str
    reference: str
    hypothesis: str
    counts: ErrorCounts

    @property
    def errors(self) -> int:
        return self.counts.errors

    @property
    def error_rate(self) -> float:
        return self.counts.error_rate


def _units(text: str, unit: str) -> list[str]:
    if unit == CHAR:
        return [ch for ch in text if not ch.isspace()]
    return text.split()


def edit_counts(reference: str, hypothesis: str, unit: str = WORD) -> ErrorCounts:
    """Substitutions, deletions, insertions and hits of ``hypothesis`` against ``reference``.

    ``unit`` is ``"word"`` (split on whitespace) or ``"char"`` (whitespace removed). Both
    strings are taken as they are (normalise first). Computed with ``jiwer.process_words``
    on the unit sequences, so word and character scoring share one alignment routine.
    """
    import jiwer

    if unit not in (WORD, CHAR):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    ref_units = _units(reference, unit)
    hyp_units = _units(hypothesis, unit)
    if not ref_units and not hyp_units:
        return ErrorCounts()
    if not ref_units:
        return ErrorCounts(insertions=len(hyp_units))
    if not hyp_units:
        return ErrorCounts(deletions=len(ref_units), ref_units=len(ref_units))
    # jiwer's word transform splits on spaces: join the units with one space so characters
    # become "words" (no unit contains whitespace after _units).
    out = jiwer.process_words(" ".join(ref_units), " ".join(hyp_units))
    return ErrorCounts(
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        hits=out.hits,
        ref_units=len(ref_units),
    )


def score_utterance(
    key: str,
    language: str,
    reference: str,
    hypothesis: str,
    *,
    normalize: bool = True,
    cer_languages: Iterable[str] = DEFAULT_CER_LANGUAGES,
) -> UtteranceScore:
    """Score one hypothesis: normalise (optional), pick WER/CER by language, count edits."""
    unit = scoring_unit(language, cer_languages)
    if normalize:
        reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    else:
        reference, hypothesis = " ".join(reference.split()), " ".join(hypothesis.split())
    return UtteranceScore(
        key=key,
        language=language,
        unit=unit,
        reference=reference,
        hypothesis=hypothesis,
        counts=edit_counts(reference, hypothesis, unit),
    )


@dataclass
class LanguageScore:
    """Error counts of one language over all its utterances."""

    language: str
    unit: str
    utterances: int
    counts: ErrorCounts
    empty_references: int = 0

    @property
    def error_rate(self) -> float:
        return self.counts.error_rate

    @property
    def metric(self) -> str:
        return rate_name(self.unit)


@dataclass
class ScoreSummary:
    """Per-language scores plus pooled and macro averages (error rates as fractions)."""

    languages: list[LanguageScore]
    pooled: ErrorCounts
    pooled_by_unit: dict[str, ErrorCounts] = field(default_factory=dict)

    @property
    def pooled_error_rate(self) -> float:
        """Total errors / total reference units over all languages."""
        return self.pooled.error_rate

    @property
    def macro_error_rate(self) -> float:
        """Unweighted mean of the per-language error rates (0 with no language)."""
        if not self.languages:
            return 0.0
        return sum(lang.error_rate for lang in self.languages) / len(self.languages)

    @property
    def utterances(self) -> int:
        return sum(lang.utterances for lang in self.languages)

    @property
    def pooled_metric(self) -> str:
        """``WER``, ``CER`` or ``WER/CER`` (when word and character languages are pooled)."""
        units = sorted({lang.unit for lang in self.languages})
        return "/".join(rate_name(u) for u in sorted(units, key=lambda u: u != WORD)) or "WER"

    def to_dict(self) -> dict:
        """A JSON-ready dict (rates as fractions, counts as ints)."""

        def counts(c: ErrorCounts) -> dict:
            d = asdict(c)
            d["errors"] = c.errors
            d["error_rate"] = c.error_rate
            return d

        return {
            "languages": [
                {
                    "language": lang.language,
                    "metric": lang.metric,
                    "utterances": lang.utterances,
                    "empty_references": lang.empty_references,
                    **counts(lang.counts),
                }
                for lang in self.languages
            ],
            "pooled": {"metric": self.pooled_metric, **counts(self.pooled)},
            "pooled_by_unit": {
                rate_name(unit): counts(c) for unit, c in self.pooled_by_unit.items()
            },
            "macro": {
                "metric": self.pooled_metric,
                "error_rate": self.macro_error_rate,
                "languages": len(self.languages),
            },
            "utterances": self.utterances,
        }


def summarize(scores: Sequence[UtteranceScore]) -> ScoreSummary:
    """Aggregate utterance scores per language (sorted by name), pooled and macro."""
    per_language: dict[str, LanguageScore] = {}
    pooled = ErrorCounts()
    pooled_by_unit: dict[str, ErrorCounts] = {}
    for s in scores:
        lang = per_language.get(s.language)
        if lang is None:
            lang = per_language[s.language] = LanguageScore(s.language, s.unit, 0, ErrorCounts())
        elif lang.unit != s.unit:
            raise ValueError(f"language {s.language!r} scored with both {lang.unit} and {s.unit} units")
        lang.utterances += 1
        lang.empty_references += int(s.counts.ref_units == 0)
        lang.counts.add(s.counts)
        pooled.add(s.counts)
        pooled_by_unit.setdefault(s.unit, ErrorCounts()).add(s.counts)
    languages = [per_language[k] for k in sorted(per_language)]
    return ScoreSummary(languages=languages, pooled=pooled, pooled_by_unit=pooled_by_unit)


def score_corpus(
    keys: Sequence[str],
    languages: Sequence[str],
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    normalize: bool = True,
    cer_languages: Iterable[str] = DEFAULT_CER_LANGUAGES,
) -> tuple[list[UtteranceScore], ScoreSummary]:
    """Score parallel lists of utterances; returns the utterance scores and their summary."""
    n = len(keys)
    if not (len(languages) == len(references) == len(hypotheses) == n):
        raise ValueError(
            f"score_corpus needs equal lengths, got keys={n} languages={len(languages)} "
            f"references={len(references)} hypotheses={len(hypotheses)}"
        )
    cer_languages = tuple(cer_languages)
    scores = [
        score_utterance(k, lang, r, h, normalize=normalize, cer_languages=cer_languages)
        for k, lang, r, h in zip(keys, languages, references, hypotheses, strict=True)
    ]
    return scores, summarize(scores)
