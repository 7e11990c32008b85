"""Build (or finish, or check) the tiny corpus in a folder, in the local corpus layout.

Output (docs/data.md "Local corpus layout", docs/recipe_tiny.md)::

    OUT/
      corpus.json              settings, per-language counts, voices, synthesis speed
      text_only_words.json     {lang: [validation/test words in the unpaired text, in no
                               pretrain/train transcript]}
      unseen_words.json        {lang}: [validation/test words in no training text at all]}
      {lang}/pretrain.tsv      paired speech for pretraining (larger; not a FLEURS split)
      {lang}/train.tsv         low-resource training set; every manifest has the columns
                               path, transcription, raw_transcription, language, speaker, duration
      {lang}/validation.tsv
      {lang}/test.tsv
      {lang}/unpaired.txt      one normalised sentence a line (no sentence of any split)
      {lang}/audio/{split}/{lang}_{split}_{i:05d}.wav   16 kHz mono PCM16

Re-running with the same settings synthesises only missing files and rewrites nothing else
that is already there; different settings are refused unless ``force`` (which deletes the
old corpus's files first).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from .languages import LANGUAGES
from .plan import (
    PAIRED_SPLITS,
    SCORED_SPLITS,
    LanguagePlan,
    TinyCorpusConfig,
    make_plan,
    word_kinds,
)
from .synth import SAMPLE_RATE, SynthesisJob, check_voices, find_espeak, run_jobs

log = logging.getLogger("tiny_corpus")

FORMAT = "astra-tiny-corpus/2"
MANIFEST_COLUMNS = ("path", "transcription", "raw_transcription", "language", "speaker", "duration")
SUMMARY_FILE = "corpus.json"
TEXT_ONLY_FILE = "text_only_words.json"
UNSEEN_FILE = "unseen_words.json"


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` via a temporary file + rename; leave an identical file untouched."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _json(data) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def read_summary(out_dir: str | Path) -> dict | None:
    """The corpus's ``corpus.json`` (``None`` if there is none)."""
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it or rebuild with --force") from e


def _remove_old_corpus(out_dir: Path, summary: dict) -> None:
    """Delete the files an earlier build wrote (its language folders and JSON files)."""
    for code in summary.get("settings", {}).get("languages", []):
        lang_dir = out_dir / code
        if lang_dir.is_dir() and code in LANGUAGES:
            shutil.rmtree(lang_dir)
    for name in (SUMMARY_FILE, TEXT_ONLY_FILE):
        (out_dir / name).unlink(missing_ok=True)


def _check_settings(out_dir: Path, cfg: TinyCorpusConfig, force: bool) -> None:
    summary = read_summary(out_dir)
    if summary is None:
        return
    # a setting added after the corpus was built had its default then
    old = {**TinyCorpusConfig().to_dict(), **summary.get("settings", {})}
    if summary.get("format") == FORMAT and old == cfg.to_dict():
        return
    if not force:
        changed = sorted(k for k in set(old) | set(cfg.to_dict()) if old.get(k) != cfg.to_dict().get(k))
        raise ValueError(
            f"{out_dir} holds a tiny corpus built with other settings (differs in: "
            f"{', '.join(changed) or 'format'}); pass --force to rebuild it or choose another --out"
        )
    log.info("removing the corpus in %s (built with other settings)", out_dir)
    _remove_old_corpus(out_dir, summary)


def _jobs(out_dir: Path, plans: list[LanguagePlan]) -> list[SynthesisJob]:
    jobs = []
    for plan in plans:
        voice = LANGUAGES[plan.code].espeak_voice
        for split in PAIRED_SPLITS:
            for utt in plan.utterances[split]:
                jobs.append(
                    SynthesisJob(
                        text=utt.sentence.raw,
                        voice=voice,
                        variant=utt.voice.variant,
                        speed_wpm=utt.voice.speed_wpm,
                        pitch=utt.voice.pitch,
                        out_path=out_dir / plan.code / utt.path,
                    )
                )
    return jobs


def _write_language(out_dir: Path, plan: LanguagePlan, max_seconds: float) -> dict:
    """Manifests + unpaired text of one language; returns its counts for ``corpus.json``."""
    import soundfile as sf

    lang = LANGUAGES[plan.code]
    lang_dir = out_dir / plan.code
    counts: dict = {"name": lang.name, "espeak_voice": lang.espeak_voice, "splits": {}}
    for split in PAIRED_SPLITS:
        lines = ["\t".join(MANIFEST_COLUMNS)]
        seconds = 0.0
        too_long = 0
        speakers = set()
        for utt in plan.utterances[split]:
            frames = sf.info(str(lang_dir / utt.path)).frames
            duration = frames / SAMPLE_RATE
            if duration > max_seconds:
                too_long += 1
                log.warning("skipping %s: %.2f s > max_duration_seconds %.2f", utt.key, duration, max_seconds)
                continue
            seconds += duration
            speaker = f"espeak-{utt.voice.variant}"
            speakers.add(speaker)
            row = (utt.path, utt.sentence.text, utt.sentence.raw, lang.name, speaker, f"{duration:.3f}")
            if any("\t" in f or "\n" in f for f in row):
                raise ValueError(f"{utt.key}: a manifest field contains a tab or newline: {row!r}")
            lines.append("\t".join(row))
        if len(plan.utterances[split]) == 0:
            continue
        _write_atomic(lang_dir / f"{split}.tsv", "\n".join(lines) + "\n")
        counts["splits"][split] = {
            "utterances": len(lines) - 1,
            "sentences": len({u.sentence.text for u in plan.utterances[split]}),
            "seconds": round(seconds, 1),
            "speakers": sorted(speakers),
            "skipped_too_long": too_long,
        }
    _write_atomic(lang_dir / "unpaired.txt", "".join(s.text + "\n" for s in plan.unpaired))
    counts.update(word_statistics(plan))
    counts["text_only_words"] = plan.text_only_words
    return counts


def word_statistics(plan: LanguagePlan) -> dict:
    """The corpus statistics of one language (docs/recipe_tiny.md): sentences, word types and,
    per scored split, its words and how many are text-only or unseen (plan.py's module doc)."""
    sentences = {split: sorted({u.sentence for u in plan.utterances[split]}, key=lambda s: s.text)
                 for split in PAIRED_SPLITS}
    paired_words, unpaired_words = word_kinds(sentences, plan.unpaired)
    stats = {
        "usable_sentences": plan.usable_sentences,
        "fortune_files": plan.read_stats.files,
        "fortune_entries": plan.read_stats.entries,
        "undecodable_entries": plan.read_stats.undecodable_entries,
        "dropped_sentences": dict(sorted(plan.read_stats.dropped.items())),
        "unpaired_sentences": len(plan.unpaired),
        "unpaired_words": sum(len(s.text.split()) for s in plan.unpaired),
        "paired_word_types": len(paired_words),
    }
    for split in SCORED_SPLITS:
        words = [u_w for u in plan.utterances[split] for u_w in u.sentence.text.split()]
        text_only = sum(w in unpaired_words and w not in paired_words for w in words)
        unseen = sum(w not in unpaired_words and w not in paired_words for w in words)
        stats[f"{split}_words"] = len(words)
        stats[f"{split}_text_only_word_occurrences"] = text_only
        stats[f"{split}_unseen_word_occurrences"] = unseen
    return stats


def build_corpus(
    cfg: TinyCorpusConfig,
    out_dir: str | Path,
    workers: int = 2,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Build the corpus in ``out_dir`` (or finish an interrupted build); returns ``corpus.json``.

    Raises:
        ValueError: bad settings, or ``out_dir`` holds a corpus of other settings (no ``force``).
        SynthesisError: espeak-ng is missing, lacks a voice, or fails on an utterance.
    """
    out_dir = Path(out_dir)
    cfg.validate()
    espeak = find_espeak()
    check_voices(espeak, [LANGUAGES[c].espeak_voice for c in cfg.languages], cfg.train_voices + cfg.test_voices)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, cfg, force)
    previous = read_summary(out_dir)
    if previous is None or previous.get("status") != "complete":
        _write_atomic(out_dir / SUMMARY_FILE,
                      _json({"format": FORMAT, "status": "building", "settings": cfg.to_dict()}))

    plans = make_plan(cfg)
    jobs = _jobs(out_dir, plans)
    stats = run_jobs(jobs, espeak, workers=workers, progress=progress)
    if stats.synthesised:
        log.info(
            "synthesised %d utterances (%.0f s of audio) in %.1f s with %d workers: %.0fx real time, %.1f utt/s",
            stats.synthesised, stats.audio_seconds, stats.wall_seconds, workers,
            stats.realtime_factor, stats.synthesised / max(stats.wall_seconds, 1e-9),
        )
    if stats.reused:
        log.info("reused %d utterances already synthesised", stats.reused)

    languages = {plan.code: _write_language(out_dir, plan, cfg.max_duration_seconds) for plan in plans}
    synthesis = (previous or {}).get("synthesis") if not stats.synthesised else None
    if synthesis is None:
        synthesis = {
            "utterances": stats.synthesised,
            "audio_seconds": round(stats.audio_seconds, 1),
            "wall_seconds": round(stats.wall_seconds, 2),
            "workers": workers,
            "realtime_factor": round(stats.realtime_factor, 1),
        }
    summary = {
        "format": FORMAT,
        "status": "complete",
        "settings": cfg.to_dict(),
        "sample_rate": SAMPLE_RATE,
        "train_voices": [f"espeak-{v}" for v in cfg.train_voices],
        "test_voices": [f"espeak-{v}" for v in cfg.test_voices],
        "languages": languages,
        "synthesis": synthesis,
    }
    _write_atomic(out_dir / TEXT_ONLY_FILE, _json({p.code: p.text_only_words for p in plans}))
    _write_atomic(out_dir / UNSEEN_FILE, _json({p.code: p.unseen_words for p in plans}))
    _write_atomic(out_dir / SUMMARY_FILE, _json(summary))
    return summary
