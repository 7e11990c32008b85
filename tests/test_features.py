import math

import pytest
import torch

from astra.features import NUM_MEL_BINS, fbank, num_frames


def test_fbank_shape_matches_num_frames():
    for n in (400, 401, 16_000, 23_456):
        wav = torch.sin(torch.arange(n) * 2 * math.pi * 440 / 16_000) * 0.1
        feats = fbank(wav)
        assert feats.shape == (num_frames(n), NUM_MEL_BINS)
        assert torch.isfinite(feats).all()


def test_fbank_louder_signal_has_more_energy():
    wav = torch.randn(16_000) * 0.01
    assert fbank(wav * 10).mean() > fbank(wav).mean()


def test_fbank_rejects_too_short_and_stereo():
    with pytest.raises(ValueError, match="shorter than one"):
        fbank(torch.zeros(100))
    with pytest.raises(ValueError, match="mono"):
        fbank(torch.zeros(2, 16_000))
