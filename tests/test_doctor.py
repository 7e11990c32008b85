"""``astra doctor``: the report names versions, backends, devices and espeak-ng."""

from __future__ import annotations

import json

import torch

import astra.lattice as lattice
from astra.cli import main


def _report(capsys, *argv) -> tuple[int, str]:
    code = main(["doctor", *argv])
    return code, capsys.readouterr().out


def test_report_lists_versions_backends_devices(capsys):
    code, out = _report(capsys)
    assert code == 0
    assert "torch" in out and torch.__version__ in out
    assert "torchaudio" in out and "python" in out
    for name in ("k2", "fast_rnnt", "torch"):
        assert f"lattice backend {name}" in out
    active = next(line for line in out.splitlines() if "lattice backend (active)" in line)
    assert active.split()[-1] == lattice.backend_name()
    assert ("CUDA GPU" in out) or ("CPU only" in out and "logical CPUs" in out)
    assert "espeak-ng" in out and "fast_rnnt build status" in out


def test_json_and_forced_backend(capsys, monkeypatch):
    monkeypatch.setenv("ASTRA_LATTICE_BACKEND", "torch")
    code, out = _report(capsys, "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["lattice backend (active)"]["value"] == "torch"
    assert rows["ASTRA_LATTICE_BACKEND"]["value"] == "torch"
    assert rows["lattice backend torch"]["ok"] is True


def test_missing_espeak_and_failed_build_are_reported(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng here
    monkeypatch.setenv("VIRTUAL_ENV", str(tmp_path))
    (tmp_path / "fast_rnnt.status").write_text("failed\n")
    code, out = _report(capsys, "--strict")
    assert code == 1
    lines = {line.split("  ")[0][3:].strip(): line for line in out.splitlines()}
    assert lines["espeak-ng"].startswith("--") and "not found" in lines["espeak-ng"]
    status = lines["fast_rnnt build status"]
    assert status.startswith("--") and "failed" in status and str(tmp_path) in status


def test_unavailable_forced_backend_is_an_error_line(capsys, monkeypatch):
    missing = [n for n, (ok, _) in lattice.available_backends().items() if not ok]
    name = missing[0] if missing else "nonsense"
    monkeypatch.setenv("ASTRA_LATTICE_BACKEND", name)
    code, out = _report(capsys, "--strict")
    active = next(line for line in out.splitlines() if "lattice backend (active)" in line)
    assert active.startswith("--") and "error" in active
    assert code == 1
