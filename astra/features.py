"""Acoustic features: 80-dim log-mel filterbanks, 25 ms window, 10 ms shift (Kaldi style).

Used by the data pipeline (training and evaluation batches) and by ``astra transcribe``,
so features always match. Normalisation and SpecAugment live in the model's front end.
"""

from __future__ import annotations

import torch

from astra.constants import FRAME_SHIFT_MS, SAMPLE_RATE

NUM_MEL_BINS = 80
FRAME_LENGTH_MS = 25.0


def num_frames(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Frames :func:`fbank` returns for ``num_samples`` (Kaldi ``snip_edges=True``)."""
    shift = int(sample_rate * FRAME_SHIFT_MS / 1000)
    length = int(sample_rate * FRAME_LENGTH_MS / 1000)
    return 0 if num_samples < length else 1 + (num_samples - length) // shift


def fbank(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = NUM_MEL_BINS) -> torch.Tensor:
    """Log-mel filterbank of a mono waveform.

    Args:
        waveform: ``[N]`` float samples in [-1, 1] (or ``[1, N]``), at ``sample_rate``.
    Returns:
        ``[T, F]`` float32 features, F = ``num_mel_bins``, T = :func:`num_frames` (N).
    Raises:
        ValueError: if the waveform is not mono or shorter than one 25 ms window.
    """
    import torchaudio

    if waveform.dim() == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.dim() != 2 or waveform.size(0) != 1:
        raise ValueError(f"fbank expects a mono waveform [N] or [1, N], got shape {tuple(waveform.shape)}")
    if num_frames(waveform.size(1), sample_rate) == 0:
        raise ValueError(f"audio of {waveform.size(1)} samples is shorter than one {FRAME_LENGTH_MS} ms window")
    return torchaudio.compliance.kaldi.fbank(
        waveform.float() * 32768.0,
        num_mel_bins=num_mel_bins,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
        dither=0.0,
        energy_floor=0.0,
        sample_frequency=sample_rate,
    )
