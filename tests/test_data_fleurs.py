"""FLEURS through the parquet-conversion code path, on local files in FLEURS' exact schema."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from astra.data.config import DataConfig
from astra.data.fleurs import iter_fleurs, load_fleurs, write_fleurs_split
from astra.data.stream import build_eval_batches

HF_FEATURES = {
    "id": {"dtype": "int32", "_type": "Value"},
    "num_samples": {"dtype": "int32", "_type": "Value"},
    "path": {"dtype": "string", "_type": "Value"},
    "audio": {"sampling_rate": 16000, "_type": "Audio"},
    "transcription": {"dtype": "string", "_type": "Value"},
    "raw_transcription": {"dtype": "string", "_type": "Value"},
    "gender": {"names": ["male", "female", "other"], "_type": "ClassLabel"},
    "lang_id": {"names": ["en_us", "ru_ru"], "_type": "ClassLabel"},
    "language": {"dtype": "string", "_type": "Value"},
    "lang_group_id": {"names": ["western_european_we", "eastern_european_ee"], "_type": "ClassLabel"},
}


def _encoded(seconds, sr, fmt="WAV"):
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), sr, format=fmt)
    return buf.getvalue()


def _write_with_pyarrow(root, config, split, rows):
    """FLEURS' parquet conversion as the Hub stores it: HF feature metadata, audio struct."""
    table = pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.int32()),
            "num_samples": pa.array([r["num_samples"] for r in rows], pa.int32()),
            "path": pa.array([r["path"] for r in rows]),
            "audio": pa.array([r["audio"] for r in rows], pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "transcription": pa.array([r["transcription"] for r in rows]),
            "raw_transcription": pa.array([r["raw_transcription"] for r in rows]),
            "gender": pa.array([r["gender"] for r in rows], pa.int64()),
            "lang_id": pa.array([1] * len(rows), pa.int64()),
            "language": pa.array(["Russian"] * len(rows)),
            "lang_group_id": pa.array([1] * len(rows), pa.int64()),
        }
    )
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": HF_FEATURES}})})
    out = root / config / split
    out.mkdir(parents=True)
    pq.write_table(table, out / "0000.parquet")


def _rows(prefix, spec):
    rows = []
    for i, (seconds, sr, fmt) in enumerate(spec):
        name = f"{prefix}{i}.wav"
        rows.append(
            {
                "id": 7,  # sentence ids repeat across speakers in FLEURS
                "num_samples": int(seconds * 16000),
                "path": f"/fleurs/train/{name}",
                "audio": {"bytes": _encoded(seconds, sr, fmt), "path": name},
                "transcription": f"sentence {i} of {prefix}",
                "raw_transcription": f"Sentence {i} of {prefix.upper()}!",
                "gender": i % 2,
            }
        )
    return rows


def _build(tmp_path):
    root = tmp_path / "fleurs"
    en = _rows("en", [(0.5, 16000, "WAV"), (0.75, 44100, "FLAC"), (1.0, 8000, "OGG")])
    ru = _rows("ru", [(0.6, 16000, "FLAC"), (0.4, 22050, "WAV")])
    write_fleurs_split(en, root, "en_us", "train")
    write_fleurs_split(en[:1], root, "en_us", "test")
    _write_with_pyarrow(root, "ru_ru", "train", ru)
    _write_with_pyarrow(root, "ru_ru", "test", ru[1:])
    return root


def test_fleurs_parquet_loads_fields_keys_and_rate(tmp_path):
    root = _build(tmp_path)
    utts = load_fleurs("en_us,ru_ru", ["train"], data_dir=root, cache_dir=str(tmp_path / "hf"))
    assert [u.key for u in utts] == ["en_us/train/en0.wav", "en_us/train/en1.wav", "en_us/train/en2.wav",
                                     "ru_ru/train/ru0.wav", "ru_ru/train/ru1.wav"]
    assert len({u.key for u in utts}) == 5  # keyed by path although `id` repeats
    assert [u.language for u in utts] == ["en_us"] * 3 + ["ru_ru"] * 2
    assert utts[1].transcription == "sentence 1 of en" and utts[1].raw_transcription == "Sentence 1 of EN!"
    assert utts[3].language_name == "Russian"
    for u in utts:
        wav = u.load_audio()
        assert abs(wav.numel() - u.duration * 16000) <= 2  # decoded and resampled to 16 kHz


def test_fleurs_raw_target_and_streaming(tmp_path):
    root = _build(tmp_path)
    utts = list(iter_fleurs(["ru_ru"], ["train", "test"], data_dir=root, target="raw_transcription", streaming=True))
    assert [u.key for u in utts] == ["ru_ru/train/ru0.wav", "ru_ru/train/ru1.wav", "ru_ru/test/ru1.wav"]
    assert utts[0].transcription == "Sentence 0 of RU!" and utts[0].audio_bytes
    assert abs(utts[1].load_audio().numel() - 0.4 * 16000) <= 2


def test_fleurs_eval_batches_through_config(tmp_path):
    root = _build(tmp_path)
    cfg = DataConfig(fleurs=["en_us", "ru_ru"], fleurs_dir=str(root), hf_cache_dir=str(tmp_path / "hf"))
    batches = build_eval_batches(cfg, None, split="test", max_batch_seconds=10)
    keys = [k for b in batches for k in b["keys"]]
    assert keys == ["en_us/test/en0.wav", "ru_ru/test/ru1.wav"]
    assert batches.skip_summary() == {}


def test_data_check_fleurs_cli(tmp_path, capsys):
    from astra.cli import main

    root = _build(tmp_path)
    assert main(["data", "check", "--fleurs", "en_us,ru_ru", "--fleurs-dir", str(root), "--splits", "train", "--json",
                 "--hf-cache-dir", str(tmp_path / "hf")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["en_us"]["train"]["utterances"] == 3 and report["ru_ru"]["train"]["utterances"] == 2
    assert abs(report["en_us"]["train"]["hours"] - 2.25 / 3600) < 1e-5
