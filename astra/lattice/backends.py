"""Lattice backends: which implementation of ``mutual_information_recursion`` is active.

Three backends compute the same recursion (see ``astra.lattice.mutual_information_recursion``):

* ``k2``: k2's CUDA/CPU kernels, used only if ``import k2`` works and its recursion runs.
* ``fast_rnnt``: the k2 kernels packaged alone (``bash tools/setup_env.sh`` builds it).
* ``torch``: the pure-PyTorch anti-diagonal wavefront in ``astra.lattice.torch_backend``;
  always available.

Selection: the best available (k2, then fast_rnnt, then torch) unless the environment
variable ``ASTRA_LATTICE_BACKEND`` or :func:`set_backend` names one. Probing a backend
imports it and runs a tiny recursion once; the result is cached for the process.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

BACKEND_NAMES = ("k2", "fast_rnnt", "torch")
ENV_VAR = "ASTRA_LATTICE_BACKEND"

INSTALL_HINTS = {
    "k2": (
        "install a k2 wheel built for this exact torch version from k2's own index "
        "(https://k2-fsa.github.io/k2/installation/from_wheels.html); PyPI's k2 is too old"
    ),
    "fast_rnnt": (
        "build it into the environment with `bash tools/setup_env.sh` "
        "(or `python tools/build_fast_rnnt.py` inside the venv)"
    ),
    "torch": "it needs only torch",
}


class BackendUnavailableError(RuntimeError):
    """A lattice backend was requested that cannot be imported or does not run."""


_lock = threading.Lock()
_probe_cache: dict[str, tuple[bool, str]] = {}
_recursions: dict[str, Callable] = {}
_forced: str | None = None


def _smoke_test(recursion: Callable) -> None:
    """Run a 1x2x3 lattice through ``recursion`` and compare with the closed form."""
    import math

    import torch

    px = torch.tensor([[[-1.0, -2.0, float("-inf")]]])  # [B=1, S=1, T+1=3]
    py = torch.tensor([[[-0.5, -0.7], [-0.3, -0.4]]])  # [B=1, S+1=2, T=2]
    score = recursion(px, py)
    # paths: x then y y | y x y | y y x(-inf)
    expected = math.log(math.exp(-1.0 - 0.3 - 0.4) + math.exp(-0.5 - 2.0 - 0.4))
    if not math.isclose(float(score[0]), expected, rel_tol=1e-4, abs_tol=1e-5):
        raise RuntimeError(f"smoke test gave {float(score[0]):.6f}, expected {expected:.6f}")


def _probe_k2_out_of_process() -> None:
    """Import k2 and run its recursion in a child process first: a k2 wheel built for another
    torch can crash the interpreter (ABI mismatch), which no ``except`` could catch here."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("k2") is None:
        raise ModuleNotFoundError("No module named 'k2'")
    code = (
        "import torch, k2; px = torch.zeros(1, 1, 3); py = torch.zeros(1, 2, 2); "
        "k2.mutual_information_recursion(px, py)"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError("importing k2 in a child process timed out") from e
    if done.returncode != 0:
        lines = (done.stderr or "").strip().splitlines()
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise RuntimeError(f"k2 fails in a child process: {last}")


def _load(name: str) -> Callable:
    if name == "torch":
        from astra.lattice.torch_backend import mutual_information_recursion

        return mutual_information_recursion
    if name == "fast_rnnt":
        import fast_rnnt

        return fast_rnnt.mutual_information_recursion
    if name == "k2":
        import k2

        return k2.mutual_information_recursion
    raise ValueError(f"unknown lattice backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")


def probe(name: str) -> tuple[bool, str]:
    """Return ``(ok, detail)`` for backend ``name``; cached after the first call."""
    if name not in BACKEND_NAMES:
        raise ValueError(
            f"unknown lattice backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}"
        )
    with _lock:
        if name in _probe_cache:
            return _probe_cache[name]
        try:
            if name == "k2":
                _probe_k2_out_of_process()
            recursion = _load(name)
            _smoke_test(recursion)
        except Exception as e:  # noqa: BLE001 - any failure means "not usable", with the reason
            result = (False, f"{type(e).__name__}: {e}".strip())
        else:
            _recursions[name] = recursion
            result = (True, _version_of(name))
        _probe_cache[name] = result
        return result


def _version_of(name: str) -> str:
    import torch

    if name == "torch":
        return f"pure PyTorch (torch {torch.__version__})"
    module = __import__(name)
    return f"{name} {getattr(module, '__version__', 'unknown version')}"


def available_backends() -> dict[str, tuple[bool, str]]:
    """Every backend name -> ``(ok, detail)``: the version if usable, else why not."""
    return {name: probe(name) for name in BACKEND_NAMES}


def _require(name: str, origin: str) -> str:
    ok, detail = probe(name)
    if not ok:
        raise BackendUnavailableError(
            f"lattice backend {name!r} ({origin}) is not available ({detail}); "
            f"to use it, {INSTALL_HINTS[name]}"
        )
    return name


def set_backend(name: str | None) -> str:
    """Force backend ``name`` (``k2``, ``fast_rnnt``, ``torch``); ``None`` restores the default.

    Raises ``ValueError`` for an unknown name and :class:`BackendUnavailableError` (with the
    way to install it) for a backend that cannot be used here. Returns the active name.
    """
    global _forced
    if name is None:
        _forced = None
        return backend_name()
    _forced = _require(name, "requested with set_backend")
    return _forced


def backend_name() -> str:
    """The active backend: ``set_backend``'s choice, else ``$ASTRA_LATTICE_BACKEND``, else the best."""
    if _forced is not None:
        return _forced
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        if env not in BACKEND_NAMES:
            raise ValueError(
                f"{ENV_VAR}={env!r} is not a lattice backend; choose one of {', '.join(BACKEND_NAMES)}"
            )
        return _require(env, f"requested with {ENV_VAR}")
    for name in BACKEND_NAMES:
        if probe(name)[0]:
            return name
    raise BackendUnavailableError("no lattice backend works, not even the pure-PyTorch one")


def get_recursion(name: str | None = None) -> Callable:
    """The ``mutual_information_recursion`` callable of backend ``name`` (default: active)."""
    name = backend_name() if name is None else _require(name, "requested by name")
    return _recursions[name]
