"""Validate a corpus: decode every utterance, count hours/utterances/speakers, list problems.

Used by ``astra data check``. The checks are the pipeline's own (same loaders, same skip
reasons); with a tokenizer it also applies the training-time text checks (unencodable
characters, more tokens + ``<eos>`` than encoder frames).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from astra.constants import SAMPLE_RATE
from astra.data import skips
from astra.data.audio import AudioError, read_audio
from astra.data.config import DataConfig
from astra.data.dataset import encoder_frames, tokens_fit
from astra.data.fleurs import SPLITS, iter_fleurs, local_splits, parse_configs
from astra.data.local_corpus import (
    canonical_split,
    find_manifests,
    is_fleurs_layout,
    load_local_corpus,
)
from astra.data.manifest import Utterance
from astra.data.skips import SkipCounter
from astra.data.targets import encode_target, normalize_target
from astra.features import num_frames

log = logging.getLogger(__name__)


@dataclass
class SplitStats:
    utterances: int = 0
    seconds: float = 0.0
    speakers: set = field(default_factory=set)
    skipped: Counter = field(default_factory=Counter)
    resampled: int = 0
    downmixed: int = 0

    def as_json(self) -> dict:
        return {
            "utterances": self.utterances,
            "hours": round(self.seconds / 3600, 6),
            "speakers": len(self.speakers),
            "skipped": dict(sorted(self.skipped.items())),
        }


@dataclass
class CheckReport:
    """Per language and split statistics plus every problem found."""

    stats: dict[str, dict[str, SplitStats]] = field(default_factory=lambda: defaultdict(dict))
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)  # key, reason, detail, lang/split
    skips: SkipCounter = field(default_factory=lambda: SkipCounter("check", log_first=0))
    missing: list[str] = field(default_factory=list)  # "config/split" not in a local FLEURS copy

    def split(self, language: str, split: str) -> SplitStats:
        return self.stats[language].setdefault(split, SplitStats())

    def as_json(self) -> dict:
        return {
            lang: {s: st.as_json() for s, st in sorted(splits.items())} for lang, splits in sorted(self.stats.items())
        }

    def to_json(self) -> str:
        return json.dumps(self.as_json(), ensure_ascii=False, indent=2)

    def format(self, max_problems: int = 0) -> str:
        """Table of hours/utterances/speakers per language and split, then the problems."""
        lines = [f"{'language':<14}{'split':<12}{'utterances':>11}{'hours':>10}{'speakers':>10}  skipped"]
        for lang, splits in sorted(self.stats.items()):
            for split, st in sorted(splits.items()):
                sk = ", ".join(f"{r} {n}" for r, n in sorted(st.skipped.items())) or "-"
                hours = st.seconds / 3600
                lines.append(f"{lang:<14}{split:<12}{st.utterances:>11}{hours:>10.4f}{len(st.speakers):>10}  {sk}")
                notes = [f"{n} resampled to 16 kHz" for n in [st.resampled] if n]
                notes += [f"{n} downmixed to mono" for n in [st.downmixed] if n]
                if notes:
                    lines.append(f"{'':<26}({', '.join(notes)})")
        total = sum(st.utterances for s in self.stats.values() for st in s.values())
        hours = sum(st.seconds for s in self.stats.values() for st in s.values()) / 3600
        lines.append(f"total: {total} utterances, {hours:.4f} h; {len(self.problems)} problem(s)")
        if self.missing:
            lines.append(f"missing splits (not in the local FLEURS copy): {', '.join(self.missing)}")
        shown = self.problems if not max_problems else self.problems[:max_problems]
        for key, reason, detail, where in shown:
            lines.append(f"  {where}  {key}: {reason}{': ' + detail if detail else ''}")
        if len(shown) < len(self.problems):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        return "\n".join(lines)


def _skip(report: CheckReport, utt: Utterance, reason: str, detail: str = "") -> None:
    report.split(utt.language, utt.split).skipped[reason] += 1
    report.problems.append((utt.key, reason, detail, f"{utt.language}/{utt.split}"))
    report.skips.add(reason, utt.key, utt.language, detail)


def check_utterances(
    utterances,
    report: CheckReport | None = None,
    tokenizer=None,
    cfg: DataConfig | None = None,
) -> CheckReport:
    """Decode and check every utterance, adding to ``report`` (a new one if ``None``)."""
    report = report or CheckReport()
    cfg = cfg or DataConfig()
    for utt in utterances:
        st = report.split(utt.language, utt.split)
        text = normalize_target(utt.transcription, cfg)
        if not text:
            _skip(report, utt, skips.EMPTY_TRANSCRIPT)
            continue
        try:
            data, sr = read_audio(utt.audio_source())
        except AudioError as e:
            _skip(report, utt, e.reason, str(e))
            continue
        seconds = data.shape[0] / sr
        if num_frames(int(seconds * SAMPLE_RATE)) == 0:
            _skip(report, utt, skips.TOO_SHORT_AUDIO, f"{seconds:.3f} s")
            continue
        if cfg.max_utterance_seconds and seconds > cfg.max_utterance_seconds:
            _skip(report, utt, skips.TOO_LONG_AUDIO, f"{seconds:.1f} s")
            continue
        if tokenizer is not None:
            tokens = encode_target(text, utt.language, tokenizer, cfg)
            num_samples = int(seconds * SAMPLE_RATE)
            if tokenizer.unk_id in tokens:
                bad = sorted({ch for ch in text if tokenizer.unk_id in tokenizer.encode(ch)})
                _skip(report, utt, skips.UNENCODABLE_TEXT, f"characters {''.join(bad)!r}")
                continue
            if not tokens_fit(len(tokens), num_samples, cfg):
                frames = encoder_frames(num_samples, cfg.subsampling_factor)
                _skip(report, utt, skips.TRANSCRIPT_TOO_LONG, f"{len(tokens)} tokens + <eos> > {frames} encoder frames")
                continue
        if utt.duration is not None and abs(utt.duration - seconds) > 0.1:
            report.problems.append((utt.key, "duration_mismatch",
                                    f"manifest {utt.duration:.2f} s, audio {seconds:.2f} s",
                                    f"{utt.language}/{utt.split}"))
        st.utterances += 1
        st.seconds += seconds
        if utt.speaker:
            st.speakers.add(utt.speaker)
        st.resampled += int(sr != SAMPLE_RATE)
        st.downmixed += int(data.shape[1] > 1)
    return report


def corpus_utterances(root: str | Path, languages: list[str] | None, skip_counter: SkipCounter,
                      cache_dir: str | None = None):
    """Every utterance of every split of a local corpus folder (either layout)."""
    root = Path(root)
    if is_fleurs_layout(root):
        for config in sorted(p.name for p in root.iterdir() if p.is_dir()):
            if languages and config not in languages:
                continue
            splits = sorted(p.name for p in (root / config).iterdir() if p.is_dir() and any(p.glob("*.parquet")))
            yield from iter_fleurs([config], splits, data_dir=root, cache_dir=cache_dir, skip_counter=skip_counter)
    else:
        find_manifests(root)
        yield from load_local_corpus(root, None, languages or None, skip_counter)


def check_sources(
    corpora: list[str],
    fleurs: str | list[str] | None = None,
    fleurs_dir: str | None = None,
    splits: list[str] | None = None,
    languages: list[str] | None = None,
    tokenizer=None,
    cfg: DataConfig | None = None,
) -> CheckReport:
    """Check local corpus folders and/or FLEURS configs (through the FLEURS loader).

    Raises:
        ValueError: a folder is not a corpus, or FLEURS files are missing.
    """
    cfg = cfg or DataConfig()
    splits = [canonical_split(s) for s in splits] if splits else splits
    report = CheckReport()
    loader_skips = SkipCounter("check: manifests", log_first=10**6, log_examples=False)
    for root in corpora:
        utts = corpus_utterances(root, languages, loader_skips, cfg.hf_cache_dir)
        if splits:
            utts = (u for u in utts if u.split in splits)
        check_utterances(utts, report, tokenizer, cfg)
    if fleurs:
        configs = [c for c in parse_configs(fleurs) if not languages or c in languages]
        for config in configs:
            wanted = list(splits or SPLITS)
            if fleurs_dir is not None and not splits:  # "all found": check those, name the others
                found = local_splits(config, fleurs_dir)
                if not found:
                    raise ValueError(f"no FLEURS files for {config} in {fleurs_dir}")
                report.missing.extend(f"{config}/{s}" for s in wanted if s not in found)
                wanted = [s for s in wanted if s in found]
            utts = iter_fleurs([config], wanted, data_dir=fleurs_dir, target=cfg.fleurs_target,
                               cache_dir=cfg.hf_cache_dir, skip_counter=loader_skips)
            check_utterances(utts, report, tokenizer, cfg)
        for name in report.missing:
            log.warning("FLEURS %s: not in %s (not checked)", name, fleurs_dir)
    for lang, counts in loader_skips.by_language.items():
        for reason, n in counts.items():
            # manifest-level problems (rows without path, duplicate keys) are filed under split "manifest"
            report.split(lang, "manifest").skipped[reason] += n
    for reason, examples in loader_skips.examples.items():
        for example in examples:
            key, _, detail = example.partition(": ")
            report.problems.append((key, reason, detail, "manifest"))
    return report
