"""Speech synthesis with espeak-ng: one process per utterance, several in parallel.

espeak-ng writes 22.05 kHz 16-bit mono WAV; :func:`synthesize` resamples it to 16 kHz
(torchaudio's windowed-sinc resampler) and writes 16-bit PCM WAV atomically (temporary file
then rename), so an interrupted build never leaves a truncated file under the final name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from astra.constants import SAMPLE_RATE  # the corpus is written at astra's input rate

ESPEAK_INSTALL_HINT = (
    "espeak-ng not found: the tiny corpus is synthesised with it. Install the Debian package "
    "with `apt-get install -y espeak-ng` (tools/setup_env.sh does this)"
)


class SynthesisError(RuntimeError):
    """espeak-ng failed or is missing; the message names the utterance or the fix."""


@dataclass(frozen=True)
class SynthesisJob:
    """One utterance: espeak voice ``{voice}+{variant}``, speed (words/min), pitch 0-99."""

    text: str
    voice: str
    variant: str
    speed_wpm: int
    pitch: int
    out_path: Path


def find_espeak() -> str:
    """Path of the ``espeak-ng`` executable; :class:`SynthesisError` with the install hint if missing."""
    exe = os.environ.get("ESPEAK_NG") or shutil.which("espeak-ng")
    if not exe or not os.access(exe, os.X_OK):
        raise SynthesisError(ESPEAK_INSTALL_HINT)
    return exe


def available_voices(espeak: str) -> tuple[set[str], set[str]]:
    """(language voice names, variant names) that this espeak-ng installation has."""
    def names(arg: str) -> set[str]:
        out = subprocess.run([espeak, arg], capture_output=True, text=True, check=True).stdout
        found = set()
        for line in out.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 5:
                found.add(cols[1])  # language column (e.g. "en-us")
                found.add(cols[4].split("/")[-1])  # file column (e.g. "!v/m3" -> "m3")
        return found

    return names("--voices"), names("--voices=variant")


def check_voices(espeak: str, voices: list[str], variants: list[str]) -> None:
    """Raise :class:`SynthesisError` naming any voice or variant espeak-ng does not have."""
    have_voices, have_variants = available_voices(espeak)
    missing = [v for v in voices if v not in have_voices] + [f"+{v}" for v in variants if v not in have_variants]
    if missing:
        raise SynthesisError(
            f"espeak-ng lacks voice(s)/variant(s) {missing}; see `espeak-ng --voices` and "
            "`espeak-ng --voices=variant`"
        )


def is_done(path: Path) -> bool:
    """True if ``path`` is a readable 16 kHz mono WAV with samples (a finished utterance)."""
    import soundfile as sf

    if not path.is_file():
        return False
    try:
        info = sf.info(str(path))
    except RuntimeError:
        return False
    return info.samplerate == SAMPLE_RATE and info.channels == 1 and info.frames > 0


def synthesize(job: SynthesisJob, espeak: str) -> float:
    """Speak ``job.text`` into ``job.out_path`` (16 kHz mono PCM16); returns seconds of audio."""
    import soundfile as sf
    import torch
    import torchaudio.functional as taf

    job.out_path.parent.mkdir(parents=True, exist_ok=True)
    raw_path = job.out_path.with_name(job.out_path.name + ".espeak.tmp")
    tmp_path = job.out_path.with_name(job.out_path.name + ".tmp")
    cmd = [espeak, "-v", f"{job.voice}+{job.variant}", "-s", str(job.speed_wpm), "-p", str(job.pitch),
           "-w", str(raw_path), "--stdin"]
    try:
        # the text goes in on stdin: a sentence may start with "-" (a dialogue dash)
        proc = subprocess.run(cmd, input=job.text, capture_output=True, text=True)
        if proc.returncode != 0 or not raw_path.is_file():
            raise SynthesisError(
                f"espeak-ng failed for {job.out_path.name} (exit {proc.returncode}): {proc.stderr.strip()[:300]}"
            )
        samples, rate = sf.read(str(raw_path), dtype="float32", always_2d=True)
        if samples.shape[0] == 0:
            raise SynthesisError(f"espeak-ng produced no audio for {job.out_path.name}: {job.text!r}")
        wave = torch.from_numpy(samples.mean(axis=1))
        if rate != SAMPLE_RATE:
            wave = taf.resample(wave, rate, SAMPLE_RATE)
        wave = wave.clamp(-1.0, 1.0).numpy()
        sf.write(str(tmp_path), wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp_path, job.out_path)
        return len(wave) / SAMPLE_RATE
    finally:
        for p in (raw_path, tmp_path):
            if p.exists():
                p.unlink()


@dataclass
class SynthesisStats:
    """What one :func:`run_jobs` call did: counts, seconds of audio made, wall-clock seconds."""

    synthesised: int = 0
    reused: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio made per wall-clock second (0 if nothing was made)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def run_jobs(jobs: list[SynthesisJob], espeak: str, workers: int = 2, progress: bool = True) -> SynthesisStats:
    """Synthesise every job whose output is not already done, ``workers`` at a time.

    Each worker thread waits on its own espeak-ng process (the GIL is released while it
    runs), then resamples; ``workers`` = number of cores is the sweet spot.
    """
    import torch

    from astra.progress import progress_bar

    torch.set_num_threads(1)
    stats = SynthesisStats()
    todo = [job for job in jobs if not is_done(job.out_path)]
    stats.reused = len(jobs) - len(todo)
    if not todo:
        return stats
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, progress_bar(
        total=len(todo), desc="synthesising", unit="utt", disable=not progress
    ) as bar:
        futures = [pool.submit(synthesize, job, espeak) for job in todo]
        try:
            for future in as_completed(futures):
                stats.audio_seconds += future.result()
                stats.synthesised += 1
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    stats.wall_seconds = time.perf_counter() - start
    return stats
