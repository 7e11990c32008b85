"""Audio files in every container users bring, written in the test (soundfile/libsndfile).

``CONTAINERS``: (file suffix, soundfile format, subtype, sample rate, channels); each
holds a 1 s 440 Hz sine at amplitude 0.5. Formats the installed libsndfile cannot write
are skipped with the reason (:func:`write_container`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CONTAINERS = [
    ("wav", "WAV", "PCM_16", 16000, 1),
    ("wav", "WAV", "PCM_16", 8000, 2),
    ("wav", "WAV", "PCM_24", 22050, 1),
    ("wav", "WAV", "PCM_24", 48000, 2),
    ("wav", "WAV", "FLOAT", 44100, 2),
    ("wav", "WAV", "FLOAT", 11025, 1),
    ("flac", "FLAC", "PCM_16", 44100, 2),
    ("flac", "FLAC", "PCM_24", 8000, 1),
    ("ogg", "OGG", "VORBIS", 32000, 2),
    ("ogg", "OGG", "VORBIS", 8000, 1),
    ("mp3", "MP3", "MPEG_LAYER_III", 32000, 1),
    ("mp3", "MP3", "MPEG_LAYER_III", 48000, 2),
    ("opus", "OGG", "OPUS", 48000, 2),
    ("opus", "OGG", "OPUS", 16000, 1),
]


def container_id(case) -> str:
    suffix, _, subtype, rate, channels = case
    return f"{suffix}-{subtype.lower()}-{rate // 1000}k-{'stereo' if channels == 2 else 'mono'}"


def sine(seconds: float, rate: int, channels: int, freq: float = 440.0) -> np.ndarray:
    """``[N, channels]`` float32, amplitude 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * freq * t)] * channels, axis=1).astype(np.float32)


def write_container(folder: Path, case, seconds: float = 1.0) -> Path:
    """Write one :data:`CONTAINERS` case; ``pytest.skip`` if libsndfile cannot write it."""
    import soundfile as sf

    suffix, fmt, subtype, rate, channels = case
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}/{subtype}")
    path = Path(folder) / f"{container_id(case)}.{suffix}"
    sf.write(str(path), sine(seconds, rate, channels), rate, format=fmt, subtype=subtype)
    return path
