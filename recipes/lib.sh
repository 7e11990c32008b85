# Shared by the recipes' run.sh scripts, sourced after their argument parsing with
# `recipe_name` set (the tag of their progress lines): goes to the repository root and
# defines PY (the environment's python; $PYTHON overrides it), say, need, timed and
# validation_choice. `timed` appends to "$timings", which the script sets before a stage runs.

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
PY="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$PY" ] || { echo "run.sh: $PY not found: run 'make env' (tools/setup_env.sh) first" >&2; exit 2; }

say() { printf '\n[%s] %s\n' "$recipe_name" "$*" >&2; }
need() { [ -e "$1" ] || { echo "run.sh: $1 missing: run the '$2' stage first" >&2; exit 2; }; }
timed() {  # timed NAME command...: run, append "NAME<TAB>seconds" to $timings
    local name="$1" start end; shift
    start=$(date +%s)
    "$@"
    end=$(date +%s)
    printf '%s\t%s\n' "$name" "$((end - start))" >> "$timings"
}

# validation_choice SWEEP MESSAGE EVALUATE_COMMAND...: "LM_WEIGHT LENGTH_BONUS [CTC_WEIGHT]"
# with the lowest validation error. Runs the sweep (an `astra evaluate --split validation`
# command with several weights; its last stdout line is the best point) into SWEEP unless
# SWEEP/best.json exists from an earlier run. Call it as `choice="$(validation_choice ...)"`
# (an assignment passes a failure on under `set -e`).
validation_choice() {
    local sweep="$1" message="$2"; shift 2
    if [ ! -f "$sweep/best.json" ]; then
        say "$message -> $sweep"
        "$@" --output-dir "$sweep" | tail -n 1 > "$sweep.best.tmp" || return 1  # (pipefail)
        mkdir -p "$sweep" && mv "$sweep.best.tmp" "$sweep/best.json"
    fi
    "$PY" -c 'import json, sys; b = json.load(open(sys.argv[1]))
print(b["best_lm_weight"], b["best_length_bonus"], "" if b.get("best_ctc_weight") is None else b["best_ctc_weight"])' \
        "$sweep/best.json"
}
