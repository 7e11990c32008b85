"""The CPU paths of the benchmark tools that tools/gpu_check.sh runs on a GPU."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

SMALL_BATCHES = ["--utterances", "2", "--seconds", "2", "--sentences", "2", "--text-tokens", "8", "--vocab", "64"]


def test_train_step_breakdown_of_the_small_preset_on_cpu(capsys):
    import bench_train_step

    assert bench_train_step.main(["--breakdown", "--preset", "small", "--device", "cpu", "--dtype", "bf16",
                                  "--steps", "2", "--warmup", "0", "--set", "optim.text_batches=add",
                                  *SMALL_BATCHES]) == 0
    out = capsys.readouterr().out
    rows = {(line.split("|")[1].strip(), line.split("|")[2].strip()): line
            for line in out.splitlines() if line.startswith("| ")}
    for part in (("speech", "speech encoder (front end + Conformer)"), ("speech", "shared encoder"),
                 ("text", "text encoder"), ("text", "RNN-T pruned loss (ranges, joiner, loss)"),
                 ("step", "optimizer (clip + AdamW)")):
        assert part in rows, part
    speech = rows[("speech", "speech encoder (front end + Conformer)")].split("|")
    assert float(speech[3]) > 0 and float(speech[4]) > 0  # forward and (attributed) backward
    shares = [float(line.split("|")[6]) for line in rows.values()
              if "**" not in line and line.split("|")[1].strip() in ("speech", "text", "step")]
    assert sum(shares) == pytest.approx(100.0, abs=0.5)
    assert "the three encoders" in out


def test_all_losses_variant_and_conformer_comparison_on_cpu(capsys):
    import bench_conformer
    import bench_train_step

    assert bench_train_step.main(["--preset", "tiny", "--steps", "1", "--warmup", "0", "--rounds", "1",
                                  "--all-losses", "--set", "losses.rnnt=0.0", *SMALL_BATCHES]) == 0
    out = capsys.readouterr().out
    assert "| config |" in out and "| config+all_losses |" in out
    assert bench_conformer.main(["--preset", "tiny", "--batch", "2", "--frames", "20", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| torchaudio.models.Conformer |" in out and "| astra (conv_norm=layer) |" in out


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine: the script would run")
def test_gpu_check_refuses_without_cuda():
    done = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode == 3 and "no CUDA device" in done.stderr


def test_decode_benchmark_lm_rows_on_cpu(capsys):
    import bench_decode

    assert bench_decode.main(["--preset", "tiny", "--batch-sizes", "1", "--repeats", "1", "--vocab", "64",
                              "--lm-order", "3", "--lm-sentences", "20"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if line.startswith("| ")}
    for search in ("Aligner beam 4", "Aligner + CTC beam 4 (ctc_weight 0.3)", "RNN-T beam 4 (modified, stateless head)",
                   "CTC prefix beam 4 (ctc_beam)"):
        assert float(rows[f"{search} + LM"][6]) > 0, search
        assert rows[search][6].strip() == ""
