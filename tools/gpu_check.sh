#!/usr/bin/env bash
# GPU figures of astra on one CUDA machine (written for a single H200), from a fresh venv.
#
#   bash tools/gpu_check.sh            # from the repository root or anywhere
#
# 1. checks that a CUDA device is there (exit 3 with a message otherwise);
# 2. builds a venv from PyPI only: torch==2.9.1, torchaudio==2.9.1 and the project's
#    dependencies (pyproject.toml, `pip install -e .`); fast_rnnt is not built (its build here is
#    CPU only), the lattice runs on the `torch` backend (ASTRA_LATTICE_BACKEND=torch);
#    ASTRA_GPU_VENV=DIR reuses or places the venv (default .venv-gpu, ignored by git);
# 3. runs, within 5 minutes (each part has its own time limit), on synthetic inputs (no corpus,
#    nothing downloaded):
#    - decode benchmark, fp32 and bf16, batch sizes 1 and 8, the 127M preset aligner_librispeech;
#    - training-step breakdown, bf16, presets small and aligner_librispeech;
#    - astra's Conformer stack vs torchaudio's, bf16, aligner_librispeech sizes;
#    and prints their tables and the elapsed seconds per part. Exit status: 0 when every part
#    passed, 1 when one failed or ran out of time (the others still run), 3 without CUDA.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here" || exit 2
venv="${ASTRA_GPU_VENV:-$here/.venv-gpu}"
failed=0
t_all=$(date +%s)

say() { printf '\n[gpu_check] %s\n' "$*" >&2; }
elapsed() { echo $(($(date +%s) - $1)); }

if ! command -v nvidia-smi > /dev/null 2>&1 || ! nvidia-smi -L > /dev/null 2>&1; then
    echo "gpu_check: no CUDA device found (nvidia-smi is missing or lists no GPU): run this on a CUDA machine" >&2
    exit 3
fi
nvidia-smi -L

# ---- environment ----------------------------------------------------------------------------
t=$(date +%s)
py=""
for candidate in python3.11 python3; do
    if command -v "$candidate" > /dev/null 2>&1 \
        && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2> /dev/null; then
        py="$candidate"
        break
    fi
done
if [ ! -x "$venv/bin/python" ]; then
    if [ -z "$py" ]; then
        echo "gpu_check: needs Python 3.11 (python3.11 or python3) to build the venv" >&2
        exit 2
    fi
    say "building $venv (PyPI: torch==2.9.1 torchaudio==2.9.1, then the project's dependencies)"
    "$py" -m venv "$venv" || exit 2
    "$venv/bin/python" -m pip install -q --upgrade pip || exit 2
    "$venv/bin/python" -m pip install -q torch==2.9.1 torchaudio==2.9.1 || exit 2
    "$venv/bin/python" -m pip install -q -e "$here" || exit 2
fi
PY="$venv/bin/python"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch in $venv sees no CUDA device (driver / wheel mismatch?): $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)')" >&2
    exit 3
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))'
echo "environment: $(elapsed "$t") s"
export ASTRA_LATTICE_BACKEND=torch PYTHONPATH="$here"

# ---- benchmarks (each with a time limit; 5 minutes in all) -----------------------------------
declare -a report=()
part() {  # part NAME SECONDS command...: run with a time limit, record the elapsed time
    local name="$1" limit="$2" start rc
    shift 2
    say "$name (limit ${limit} s)"
    start=$(date +%s)
    timeout --signal=TERM --kill-after=10 "$limit" "$@"
    rc=$?
    local took
    took=$(elapsed "$start")
    if [ "$rc" -ne 0 ]; then
        failed=1
        report+=("| $name | $took | FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ', time limit')) |")
    else
        report+=("| $name | $took | ok |")
    fi
}

t_bench=$(date +%s)
for dtype in fp32 bf16; do
    part "decode $dtype" 50 "$PY" tools/bench_decode.py --device cuda --dtype "$dtype" --batch-sizes 1,8 \
        --preset aligner_librispeech --repeats 3
done
part "train step small bf16" 60 "$PY" tools/bench_train_step.py --breakdown --preset small --device cuda \
    --dtype bf16 --steps 5 --warmup 3
part "train step aligner_librispeech bf16" 90 "$PY" tools/bench_train_step.py --breakdown \
    --preset aligner_librispeech --device cuda --dtype bf16 --steps 5 --warmup 3
part "conformer aligner_librispeech bf16" 40 "$PY" tools/bench_conformer.py --preset aligner_librispeech \
    --device cuda --dtype bf16 --batch 16 --frames 250 --repeats 5

printf '\n| part | seconds | result |\n|---|---:|---|\n'
printf '%s\n' "${report[@]}"
echo "benchmarks: $(elapsed "$t_bench") s; everything: $(elapsed "$t_all") s"
exit "$failed"
