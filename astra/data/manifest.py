"""The utterance record every corpus loader returns (FLEURS, local folders).

Audio is referenced, not held: a file ``path``, encoded ``audio_bytes``, or a row of a
memory-mapped ``datasets`` table (``table`` + ``row``) whose ``audio`` column holds the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from astra.data.audio import AudioInfo, audio_info, load_audio


@dataclass
class Utterance:
    """One utterance.

    Attributes:
        key: unique id (FLEURS: the ``path`` column; local: ``key`` column or
            ``{lang}/{split}/{path}``).
        language: language code (FLEURS config such as ``en_us``, or the local folder name).
        split: ``train`` / ``validation`` / ``test`` (or any other split name found).
        transcription: target text (not normalised).
        duration: seconds, from the manifest/``num_samples`` or the audio header; ``None`` if
            unknown until decoded.
        speaker: speaker id if known.
        path: audio file on disk.
        audio_bytes: encoded audio held in memory (streaming FLEURS).
        table: a ``datasets.Dataset`` with an undecoded ``audio`` column; with ``row``.
        row: index into ``table``.
        raw_transcription: the untouched transcript when the corpus has one.
        language_name: display name (FLEURS ``language`` column).
    """

    key: str
    language: str
    split: str
    transcription: str
    duration: float | None = None
    speaker: str | None = None
    path: str | None = None
    audio_bytes: bytes | None = None
    table: Any = None
    row: int | None = None
    raw_transcription: str | None = None
    language_name: str | None = None

    def audio_source(self) -> str | bytes:
        """What :func:`astra.data.audio.load_audio` accepts: a path or encoded bytes."""
        if self.audio_bytes is not None:
            return self.audio_bytes
        if self.table is not None and self.row is not None:
            audio = self.table[self.row]["audio"]
            if audio.get("bytes"):
                return audio["bytes"]
            if audio.get("path"):
                return audio["path"]
            return b""
        if self.path is not None:
            return self.path
        raise ValueError(f"utterance {self.key} has no audio reference")

    def load_audio(self):
        """``[N]`` float32 mono waveform at 16 kHz (raises ``AudioError``)."""
        return load_audio(self.audio_source())

    def info(self) -> AudioInfo:
        """Header of the audio (raises ``AudioError``)."""
        return audio_info(self.audio_source())
