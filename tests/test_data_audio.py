"""Audio decoding: formats, sample rates, channels, resampling to 16 kHz; local corpus loading."""

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import CONTAINERS, container_id, write_container

from astra.data import skips
from astra.data.audio import AudioError, load_audio, mp3_supported, speed_perturb
from astra.data.corpus import load_corpus


def _sine(freq, seconds, sr, channels):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x] * channels, axis=1).astype(np.float32)


def _peak_hz(wav: torch.Tensor, sr: int = 16000) -> float:
    spec = torch.fft.rfft(wav).abs()
    return float(spec.argmax()) * sr / wav.numel()


@pytest.mark.parametrize(
    "fmt,sr,channels",
    [("wav", 8000, 1), ("flac", 22050, 2), ("ogg", 44100, 1), ("wav", 44100, 2), ("flac", 16000, 1), ("ogg", 8000, 2)],
)
def test_formats_rates_channels_resample_to_16k(tmp_path, fmt, sr, channels):
    path = tmp_path / f"a.{fmt}"
    sf.write(str(path), _sine(440.0, 1.0, sr, channels), sr, format=fmt.upper())
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.dim() == 1
    assert abs(wav.numel() - 16000) <= 2
    assert abs(_peak_hz(wav) - 440.0) < 3.0
    assert 0.3 < wav.abs().max() < 0.6  # downmix averages, does not sum


def test_bytes_and_mp3(tmp_path):
    import io

    buf = io.BytesIO()
    sf.write(buf, _sine(300.0, 0.5, 22050, 1), 22050, format="FLAC")
    wav = load_audio(buf.getvalue())
    assert abs(wav.numel() - 8000) <= 2
    path = tmp_path / "a.mp3"
    if mp3_supported():
        sf.write(str(path), _sine(300.0, 1.0, 16000, 1), 16000, format="MP3")
        assert abs(_peak_hz(load_audio(path)) - 300.0) < 5.0
    else:
        path.write_bytes(b"ID3 fake")
        with pytest.raises(AudioError) as e:
            load_audio(path)
        assert e.value.reason == skips.UNSUPPORTED_FORMAT


@pytest.mark.parametrize("case", CONTAINERS, ids=container_id)
def test_every_container_decodes_to_16k_mono(tmp_path, case):
    """wav PCM16/24/float, flac, ogg/vorbis, mp3 (32/48 kHz), opus; mono/stereo; 8-48 kHz."""
    wav = load_audio(write_container(tmp_path, case))
    assert wav.dtype == torch.float32 and wav.dim() == 1
    assert abs(wav.numel() - 16000) <= 2  # lossy codecs keep the length (priming trimmed)
    assert abs(_peak_hz(wav) - 440.0) < 3.0
    assert 0.4 < float(wav[4000:12000].abs().max()) < 0.6  # steady part; downmix averages


@pytest.mark.parametrize("case", [CONTAINERS[0], CONTAINERS[6], CONTAINERS[8], CONTAINERS[10]],
                         ids=container_id)
def test_a_container_without_samples_is_an_empty_audio_error(tmp_path, case):
    """wav/flac/ogg/mp3 headers with no samples (a zero-sample opus file is one libsndfile
    calls malformed: ``unreadable_audio``)."""
    import soundfile as sf

    suffix, fmt, subtype, rate, _ = case
    path = tmp_path / f"empty.{suffix}"
    sf.write(str(path), np.zeros((0, 1), np.float32), rate, format=fmt, subtype=subtype)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert e.value.reason == skips.EMPTY_AUDIO


def test_audio_errors_have_reasons(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    for name, reason in [("empty.wav", skips.EMPTY_AUDIO), ("junk.wav", skips.UNREADABLE_AUDIO),
                         ("nope.wav", skips.MISSING_AUDIO)]:
        with pytest.raises(AudioError) as e:
            load_audio(tmp_path / name)
        assert e.value.reason == reason


def test_speed_perturb_changes_length():
    wav = torch.randn(16000)
    assert abs(speed_perturb(wav, 1.1).numel() - 16000 / 1.1) < 5
    assert abs(speed_perturb(wav, 0.9).numel() - 16000 / 0.9) < 5


def test_local_corpus_mixed_files_load_and_resample(tmp_path):
    lang = tmp_path / "xx_yy"
    (lang / "wavs").mkdir(parents=True)
    specs = [("wav", 8000, 1), ("flac", 22050, 2), ("ogg", 44100, 1), ("wav", 44100, 2), ("flac", 8000, 1),
             ("ogg", 22050, 2)]
    rows = ["path\ttranscription\tspeaker"]
    for i, (fmt, sr, ch) in enumerate(specs):
        sf.write(str(lang / "wavs" / f"u{i}.{fmt}"), _sine(200.0 + 100 * i, 0.75, sr, ch), sr, format=fmt.upper())
        rows.append(f"wavs/u{i}.{fmt}\tsentence number {i}\ts{i % 2}")
    (lang / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    utts = load_corpus(tmp_path, "train")
    assert [u.key for u in utts] == [f"xx_yy/train/wavs/u{i}.{f}" for i, (f, _, _) in enumerate(specs)]
    assert {u.language for u in utts} == {"xx_yy"} and utts[3].speaker == "s1"
    for i, u in enumerate(utts):
        assert u.info().sample_rate == specs[i][1]
        wav = u.load_audio()
        assert abs(wav.numel() - 12000) <= 2
        assert abs(_peak_hz(wav) - (200.0 + 100 * i)) < 3.0
