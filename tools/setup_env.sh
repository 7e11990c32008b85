#!/usr/bin/env bash
# Create (first time) or reuse (afterwards) the project's Python environment.
#
# The environment lives in a cache folder keyed by the dependency pins, so every
# clone of astra on this machine shares one 7 GB torch install:
#   ${ASTRA_ENV_ROOT:-$HOME/.cache/astra/envs}/py311-<key>
# and ./.venv is a symlink to it. The key hashes the python version, the
# dependency lists of pyproject.toml and the fast_rnnt build script; change any
# of them and a new environment is built. An environment whose build did not
# finish (no .astra-env-complete marker) is deleted and rebuilt.
#
# Steps: Debian packages (espeak-ng, fortunes*) -> venv -> pip install deps -> fast_rnnt
# from its PyPI sdist (tools/build_fast_rnnt.py) -> editable install of astra.
#
# Environment variables:
#   PYTHON                  interpreter to build the venv from (default python3.11)
#   ASTRA_ENV_ROOT          cache folder for environments
#   ASTRA_REQUIRE_FAST_RNNT 1: fail if fast_rnnt did not build (default 1 when CI=true)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
PYTHON="${PYTHON:-python3.11}"
require_ft="${ASTRA_REQUIRE_FAST_RNNT:-$([ "${CI:-}" = "true" ] && echo 1 || echo 0)}"

say() { printf '[astra setup] %s\n' "$*" >&2; }

command -v "$PYTHON" >/dev/null || { say "ERROR: $PYTHON not found; astra needs Python 3.11 (set PYTHON=...)"; exit 1; }

# --- Debian packages --------------------------------------------------------
# espeak-ng synthesises the demo corpus; the fortunes collections are its text. Installed
# state is read from dpkg's status (the fortunes packages install no command).
debian_packages=(espeak-ng fortunes fortunes-min fortunes-de fortunes-es fortunes-it fortunes-ru)
missing_packages=()
for pkg in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing_packages+=("$pkg")
done
if [ ${#missing_packages[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo_cmd=""
        [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
        say "installing ${missing_packages[*]} (Debian packages: the demo corpus's speech synthesiser and text)"
        { $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing_packages[@]}" >/dev/null; } \
            || say "WARNING: could not install ${missing_packages[*]}; the tiny recipe's corpus cannot be built"
    else
        say "WARNING: ${missing_packages[*]} missing and no apt-get; install them to build the tiny recipe's corpus"
    fi
fi

# --- the cached environment ---------------------------------------------------
key="$("$PYTHON" - <<'PY'
import hashlib, sys, tomllib, pathlib
p = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
h = hashlib.sha256()
h.update(sys.version.encode())
h.update(repr(sorted(p["dependencies"])).encode())
h.update(repr(sorted((k, sorted(v)) for k, v in p.get("optional-dependencies", {}).items())).encode())
h.update(pathlib.Path("tools/build_fast_rnnt.py").read_bytes())
print(h.hexdigest()[:16])
PY
)"
env_root="${ASTRA_ENV_ROOT:-$HOME/.cache/astra/envs}"
env_dir="$env_root/py311-$key"
mkdir -p "$env_root"

exec 9>"$env_root/.lock-$key"
flock 9   # one builder at a time; other clones wait and then reuse

if [ ! -f "$env_dir/.astra-env-complete" ]; then
    say "building environment $env_dir (first time: ~7 GB of torch wheels, several minutes)"
    rm -rf "$env_dir"
    "$PYTHON" -m venv "$env_dir"
    "$env_dir/bin/python" -m pip install -q --upgrade pip setuptools wheel
    deps="$("$PYTHON" - <<'PY'
import tomllib, pathlib
p = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))
PY
)"
    # torch first with torchaudio, so pip never resolves a different torch for a dependant
    # shellcheck disable=SC2086
    "$env_dir/bin/python" -m pip install -q $deps
    if "$env_dir/bin/python" tools/build_fast_rnnt.py; then
        echo ok > "$env_dir/fast_rnnt.status"
    else
        echo failed > "$env_dir/fast_rnnt.status"
        say "WARNING: fast_rnnt did not build; astra will use its torch lattice backend (see the log above)"
    fi
    touch "$env_dir/.astra-env-complete"
fi

if [ "$require_ft" = 1 ] && [ "$(cat "$env_dir/fast_rnnt.status" 2>/dev/null)" != ok ]; then
    say "retrying the fast_rnnt build (required here: CI or ASTRA_REQUIRE_FAST_RNNT=1)"
    if "$env_dir/bin/python" tools/build_fast_rnnt.py; then
        echo ok > "$env_dir/fast_rnnt.status"
    else
        say "ERROR: fast_rnnt did not build and it is required"; exit 1
    fi
fi

ln -sfn "$env_dir" .venv

# --- astra itself, editable (fast; redone when the venv points at another clone;
#     -I: ask the environment, not the current folder, which copy it imports;
#     pip runs as "$env_dir/bin/python", not through this clone's .venv symlink: console
#     scripts get that interpreter in their #! line, and must outlive the clone) ---
here="$("$env_dir/bin/python" -I -c 'import astra, os; print(os.path.dirname(os.path.dirname(astra.__file__)))' 2>/dev/null || true)"
if [ "$here" != "$repo" ] || ! "$env_dir/bin/astra" --help >/dev/null 2>&1; then
    say "installing astra (editable) from $repo"
    "$env_dir/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo" 2>&1 | grep -v "^$" >&2 || true
    "$env_dir/bin/astra" --help >/dev/null || { say "ERROR: astra did not install"; exit 1; }
fi
flock -u 9
