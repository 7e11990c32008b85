"""``astra doctor``: report the environment astra runs in.

Prints python/torch/torchaudio versions, the lattice backends (k2, fast_rnnt, torch) with
the reason any is missing, which one is active, fast_rnnt's build status file, the devices
(CUDA GPUs or CPU threads) and whether ``espeak-ng`` (needed to synthesise the tiny
recipe's corpus) is on PATH. ``--json`` prints the same as a JSON object. Exit status 0,
or 1 with ``--strict`` when any check is not ok.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass


@dataclass
class Check:
    """One line of the report: what, its value (version, state, reason), and whether it is ok."""

    name: str
    value: str
    ok: bool = True


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="show versions, lattice backends, devices and espeak-ng",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any check is not ok")
    parser.set_defaults(func=run)


def _module_version(name: str) -> Check:
    try:
        module = __import__(name)
    except Exception as e:  # noqa: BLE001 - report why it is missing, whatever it is
        return Check(name, f"not importable ({type(e).__name__}: {e})", ok=False)
    return Check(name, str(getattr(module, "__version__", "unknown version")))


def fast_rnnt_status_file() -> Check:
    """Read ``fast_rnnt.status`` written by tools/setup_env.sh into the environment folder."""
    prefixes = [os.environ.get("VIRTUAL_ENV"), sys.prefix]
    for prefix in dict.fromkeys(p for p in prefixes if p):
        path = os.path.join(prefix, "fast_rnnt.status")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                status = f.read().strip() or "(empty)"
            return Check("fast_rnnt build status", f"{status} ({path})", ok=status == "ok")
    return Check(
        "fast_rnnt build status",
        "no fast_rnnt.status in $VIRTUAL_ENV or sys.prefix (environment not built by tools/setup_env.sh)",
        ok=False,
    )


def lattice_checks() -> list[Check]:
    from astra.lattice import available_backends, backend_name

    checks = []
    for name, (ok, detail) in available_backends().items():
        optional = name == "k2"  # k2 is a bonus; fast_rnnt is part of the environment
        value = detail if ok else f"missing{' (optional)' if optional else ''}: {detail}"
        checks.append(Check(f"lattice backend {name}", value, ok or optional))
    try:
        active = backend_name()
        checks.append(Check("lattice backend (active)", active, ok=True))
    except Exception as e:  # noqa: BLE001 - e.g. ASTRA_LATTICE_BACKEND names a missing backend
        checks.append(Check("lattice backend (active)", f"error: {e}", ok=False))
    forced = os.environ.get("ASTRA_LATTICE_BACKEND")
    if forced:
        checks.append(Check("ASTRA_LATTICE_BACKEND", forced))
    return checks


def device_checks() -> list[Check]:
    import torch

    checks = []
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpu:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(n_gpu))
        checks.append(Check("devices", f"{n_gpu} CUDA GPU(s): {names}"))
    else:
        checks.append(Check("devices", "CPU only (no CUDA device)"))
    checks.append(
        Check(
            "cpu threads", f"torch uses {torch.get_num_threads()} of {os.cpu_count()} logical CPUs"
        )
    )
    return checks


def espeak_check() -> Check:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return Check("espeak-ng", "not found on PATH (apt-get install espeak-ng)", ok=False)
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("espeak-ng", f"{exe} does not run: {e}", ok=False)
    text = (out.stdout or out.stderr).strip().splitlines()
    if out.returncode != 0 or not text:
        return Check("espeak-ng", f"{exe} --version failed (exit {out.returncode})", ok=False)
    return Check("espeak-ng", text[0])


def collect() -> list[Check]:
    """All checks, in report order."""
    checks = [
        Check("python", f"{platform.python_version()} ({sys.executable})"),
        Check("platform", platform.platform()),
    ]
    from astra import __version__

    checks.append(Check("astra", __version__))
    checks += [_module_version("torch"), _module_version("torchaudio")]
    if checks[-2].ok:
        checks += lattice_checks()
        checks.append(fast_rnnt_status_file())
        checks += device_checks()
    checks.append(espeak_check())
    return checks


def run(args: argparse.Namespace) -> int:
    checks = collect()
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark = "ok " if c.ok else "-- "
            print(f"{mark}{c.name.ljust(width)}  {c.value}")
    if args.strict and not all(c.ok for c in checks):
        return 1
    return 0
