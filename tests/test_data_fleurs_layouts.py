"""FLEURS' two layouts (the repository's tsv + tar.gz files, the parquet conversion), on the Hub
(hf_hub_download / datasets.load_dataset pointed at local files) and as local copies, plus
`astra data check` on a copy that lacks a split."""

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from astra.data import fleurs
from astra.data.fleurs import iter_fleurs, local_splits, write_fleurs_split


def _wav(seconds: float, sr: int = 16000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def write_tsv_split(root, config, split_file, items):
    """``root/data/{config}/{split_file}.tsv`` + ``audio/{split_file}.tar.gz`` as in google/fleurs:
    no header; id, file name, raw transcription, transcription, phonemes, samples, gender."""
    folder = root / "data" / config
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    with tarfile.open(folder / "audio" / f"{split_file}.tar.gz", "w:gz") as tar:
        for i, (name, raw, seconds) in enumerate(items):
            data = _wav(seconds)
            info = tarfile.TarInfo(f"{split_file}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            lines.append(f"{1000 + i}\t{name}\t{raw}\t{raw.lower().strip('.!')}\tp h o\t{int(seconds * 16000)}\tFEMALE")
    (folder / f"{split_file}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_tsv_copy(root):
    write_tsv_split(root, "de_de", "train", [("1.wav", "Guten Tag.", 0.5), ("2.wav", "Ein Haus!", 0.4)])
    write_tsv_split(root, "de_de", "dev", [("3.wav", "Zwei Wege.", 0.3)])
    write_tsv_split(root, "de_de", "test", [("4.wav", "Drei Tage.", 0.6)])
    return root


def test_tsv_layout_local_copy_keys_splits_and_audio(tmp_path):
    root = build_tsv_copy(tmp_path / "fleurs")
    for data_dir in (root, root / "data"):  # a copy of the repository, or its data/ folder
        assert fleurs.fleurs_layout(data_dir) == "tsv"
        assert local_splits("de_de", data_dir) == ["train", "validation", "test"]
    utts = list(iter_fleurs(["de_de"], ["train", "validation"], data_dir=root, cache_dir=str(tmp_path / "c")))
    assert [u.key for u in utts] == ["de_de/train/1.wav", "de_de/train/2.wav", "de_de/validation/3.wav"]
    assert [u.split for u in utts] == ["train", "train", "validation"]
    assert utts[0].transcription == "guten tag" and utts[0].raw_transcription == "Guten Tag."
    assert utts[1].duration == pytest.approx(0.4)
    assert utts[2].load_audio().numel() == int(0.3 * 16000)
    raw = list(iter_fleurs(["de_de"], ["test"], data_dir=root, target="raw_transcription",
                           cache_dir=str(tmp_path / "c")))
    assert raw[0].transcription == "Drei Tage."


def test_tsv_archive_extracted_once(tmp_path, monkeypatch):
    root = build_tsv_copy(tmp_path / "fleurs")
    list(iter_fleurs(["de_de"], ["train"], data_dir=root, cache_dir=str(tmp_path / "c")))
    calls = []
    monkeypatch.setattr(fleurs.tarfile, "open", lambda *a, **k: calls.append(a))
    utts = list(iter_fleurs(["de_de"], ["train"], data_dir=root, cache_dir=str(tmp_path / "c")))
    assert calls == [] and utts[0].load_audio().numel() == 8000


def test_tsv_bad_rows_counted(tmp_path):
    from astra.data.skips import SkipCounter

    root = build_tsv_copy(tmp_path / "fleurs")
    tsv = root / "data" / "de_de" / "train.tsv"
    tsv.write_text(tsv.read_text(encoding="utf-8") + "7\tonly three\tcolumns\n", encoding="utf-8")
    counter = SkipCounter("t")
    utts = list(iter_fleurs(["de_de"], ["train"], data_dir=root, cache_dir=str(tmp_path / "c"), skip_counter=counter))
    assert len(utts) == 2 and counter.by_language["de_de"] == {"bad_manifest_row": 1}


def test_missing_split_in_tsv_copy_is_an_error_naming_the_file(tmp_path):
    root = build_tsv_copy(tmp_path / "fleurs")
    (root / "data" / "de_de" / "dev.tsv").unlink()
    with pytest.raises(ValueError, match="de_de/validation: .*dev.tsv not found"):
        list(iter_fleurs(["de_de"], ["validation"], data_dir=root, cache_dir=str(tmp_path / "c")))


def test_hub_reads_repository_files_with_hf_hub_download(tmp_path, monkeypatch):
    import huggingface_hub

    local = build_tsv_copy(tmp_path / "repo")
    asked = []

    def fake_download(repo_id, filename, repo_type=None, revision=None, cache_dir=None):
        asked.append((repo_id, filename, repo_type, revision))
        return str(local / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    utts = list(iter_fleurs(["de_de"], ["validation", "test"], cache_dir=str(tmp_path / "c")))
    assert [u.key for u in utts] == ["de_de/validation/3.wav", "de_de/test/4.wav"]
    assert asked == [
        ("google/fleurs", "data/de_de/dev.tsv", "dataset", None),
        ("google/fleurs", "data/de_de/audio/dev.tar.gz", "dataset", None),
        ("google/fleurs", "data/de_de/test.tsv", "dataset", None),
        ("google/fleurs", "data/de_de/audio/test.tar.gz", "dataset", None),
    ]
    assert utts[1].load_audio().numel() == int(0.6 * 16000)


def test_hub_falls_back_to_the_parquet_branch(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    rows = [{"num_samples": 8000, "path": "/x/train/a.wav", "audio": {"bytes": _wav(0.5), "path": "a.wav"},
             "transcription": "hallo"}]
    write_fleurs_split(rows, tmp_path / "parquet", "de_de", "train")

    def missing(**kwargs):
        raise EntryNotFoundError(f"{kwargs['filename']} not found")

    real_load = datasets.load_dataset
    asked = []

    def fake_load(path, *args, revision=None, data_files=None, **kwargs):
        asked.append((path, revision, data_files))
        local = {k: str(tmp_path / "parquet" / v) for k, v in data_files.items()}
        return real_load("parquet", data_files=local, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    utts = list(iter_fleurs(["de_de"], ["train"], cache_dir=str(tmp_path / "c")))
    assert [u.key for u in utts] == ["de_de/train/a.wav"]
    assert asked == [("google/fleurs", "refs/convert/parquet", {"train": "de_de/train/*.parquet"})]


def test_hub_unreachable_names_both_layouts(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match="data/de_de/dev.tsv: offline; refs/convert/parquet: .*offline"):
        list(iter_fleurs(["de_de"], ["validation"], cache_dir=str(tmp_path / "c")))


@pytest.mark.parametrize("layout", ["tsv", "parquet"])
def test_data_check_local_copy_without_a_split(tmp_path, capsys, layout):
    from astra.cli import main

    root = tmp_path / "fleurs"
    if layout == "tsv":
        write_tsv_split(root, "de_de", "train", [("1.wav", "Guten Tag.", 0.5)])
        write_tsv_split(root, "de_de", "test", [("4.wav", "Drei Tage.", 0.6)])
    else:
        row = {"num_samples": 8000, "path": "a.wav", "audio": {"bytes": _wav(0.5), "path": "a.wav"},
               "transcription": "x"}
        write_fleurs_split([row], root, "de_de", "train")
        write_fleurs_split([row], root, "de_de", "test")
    common = ["data", "check", "--fleurs", "de_de", "--fleurs-dir", str(root), "--hf-cache-dir", str(tmp_path / "c")]
    assert main(common) == 0
    out = capsys.readouterr().out
    assert "missing splits (not in the local FLEURS copy): de_de/validation" in out
    assert main([*common, "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["de_de"]) == ["test", "train"]
    # a split asked for explicitly is still an error
    assert main([*common, "--splits", "dev"]) == 2
    assert "de_de/validation" in capsys.readouterr().err


def test_corrupt_archive_is_a_clear_error(tmp_path):
    root = build_tsv_copy(tmp_path / "fleurs")
    (root / "data" / "de_de" / "audio" / "test.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="cannot read FLEURS audio archive .*test.tar.gz"):
        list(iter_fleurs(["de_de"], ["test"], data_dir=root, cache_dir=str(tmp_path / "c")))
    assert not list((tmp_path / "c").rglob("*.tmp*"))  # no half-extracted folder left behind
