"""Audio I/O: decode files or encoded bytes, downmix to mono, resample to 16 kHz.

Decoding uses soundfile (libsndfile): WAV, FLAC, OGG (Vorbis/Opus) and MP3 (libsndfile >= 1.1,
which this environment has; :func:`mp3_supported` checks). Failures raise :class:`AudioError`
whose ``reason`` is one of the named skip reasons of :mod:`astra.data.skips`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astra.constants import SAMPLE_RATE
from astra.data import skips

AudioSource = str | os.PathLike | bytes


class AudioError(ValueError):
    """Audio that cannot be used; ``reason`` is a skip reason from :mod:`astra.data.skips`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class AudioInfo:
    """What the header says: ``num_samples`` per channel at ``sample_rate``."""

    num_samples: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate if self.sample_rate else 0.0


def mp3_supported() -> bool:
    """True if the installed libsndfile decodes MP3."""
    import soundfile as sf

    return "MP3" in sf.available_formats()


def _describe(source: AudioSource) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source)


def _open_target(source: AudioSource):
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioError(skips.EMPTY_AUDIO, "empty audio bytes")
        return io.BytesIO(bytes(source))
    path = Path(source)
    if not path.exists():
        raise AudioError(skips.MISSING_AUDIO, f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioError(skips.EMPTY_AUDIO, f"empty audio file: {path}")
    if path.suffix.lower() == ".mp3" and not mp3_supported():
        raise AudioError(skips.UNSUPPORTED_FORMAT, f"{path}: this libsndfile cannot decode MP3")
    return str(path)


def audio_info(source: AudioSource) -> AudioInfo:
    """Read only the header of a file or of encoded bytes.

    Raises:
        AudioError: missing, empty or undecodable (reason names which).
    """
    import soundfile as sf

    target = _open_target(source)
    try:
        info = sf.info(target)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(skips.UNREADABLE_AUDIO, f"{_describe(source)}: {e}") from e
    if info.frames <= 0:
        raise AudioError(skips.EMPTY_AUDIO, f"{_describe(source)}: no samples")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def read_audio(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode without converting: ``([N, C] float32, sample_rate)``.

    Raises:
        AudioError: missing, empty or undecodable (reason names which).
    """
    import soundfile as sf

    target = _open_target(source)
    try:
        data, sr = sf.read(target, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(skips.UNREADABLE_AUDIO, f"{_describe(source)}: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(skips.EMPTY_AUDIO, f"{_describe(source)}: no samples")
    return data, int(sr)


def to_mono_16k(data: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE):
    """``[N, C]`` or ``[N]`` float array at ``sample_rate`` -> ``[N']`` float32 tensor at ``target_rate``.

    Channels are averaged (downmix); resampling uses ``torchaudio.functional.resample``.
    """
    import torch
    import torchaudio

    wav = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    if wav.dim() == 2:
        wav = wav.mean(dim=1)
    if sample_rate != target_rate:
        wav = torchaudio.functional.resample(wav, sample_rate, target_rate)
    return wav.contiguous()


def load_audio(source: AudioSource, target_rate: int = SAMPLE_RATE):
    """Decode a file path or encoded bytes into a mono float32 waveform at ``target_rate``.

    Args:
        source: path to wav/flac/ogg/mp3, or the encoded file's bytes.
    Returns:
        ``[N]`` float32 tensor in [-1, 1] at ``target_rate`` (16 kHz by default).
    Raises:
        AudioError: missing, empty or undecodable audio (``.reason`` names which).
    """
    data, sr = read_audio(source)
    return to_mono_16k(data, sr, target_rate)


def speed_perturb(waveform, factor: float, sample_rate: int = SAMPLE_RATE):
    """Kaldi-style speed perturbation: play ``[N]`` at ``factor`` times the speed (pitch shifts too).

    Returns ``[N / factor]`` samples at the same ``sample_rate``.
    """
    import torchaudio

    if factor == 1.0:
        return waveform
    source_rate = int(round(sample_rate * factor))
    return torchaudio.functional.resample(waveform, source_rate, sample_rate)
