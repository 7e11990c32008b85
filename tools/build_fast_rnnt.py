#!/usr/bin/env python3
"""Build and install fast_rnnt (k2's RNN-T lattice code) from its PyPI sdist, CPU only.

PyPI has only the sdist of fast_rnnt 1.3. Its own build uses cmake and downloads
pybind11 at configure time, which this project's machines cannot do, and the CUDA
build of torch makes torch's cmake config look for a CUDA toolkit. Instead we
compile its three C++ sources with ``torch.utils.cpp_extension`` (pybind11 comes
with torch's headers; no cmake, no CUDA lookup) and install its Python package
unchanged. Nothing but the package registry is contacted (``pip download``).

Usage: python tools/build_fast_rnnt.py [--force]
Exit status 0 when ``import fast_rnnt`` works afterwards and matches a reference
computation; non-zero with a message otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

VERSION = "1.3"

SETUP_PY = textwrap.dedent(
    """
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    setup(
        name="fast_rnnt",
        version="{version}",
        packages=["fast_rnnt"],
        package_dir={{"fast_rnnt": "fast_rnnt/python/fast_rnnt"}},
        ext_modules=[
            CppExtension(
                "_fast_rnnt",
                sources=["src/mutual_information_cpu.cpp",
                         "src/py_mutual_information.cpp",
                         "src/py_fast_rnnt.cpp"],
                include_dirs=["."],
                extra_compile_args=["-O3", "-std=c++17"],
                # the extension sits in site-packages next to torch/: without an rpath to
                # torch's libraries, "import fast_rnnt" fails unless torch was imported first
                extra_link_args=["-Wl,-rpath,$ORIGIN/torch/lib"],
            )
        ],
        cmdclass={{"build_ext": BuildExtension.with_options(use_ninja=False)}},
    )
    """
)


def log(msg: str) -> None:
    print(f"[build_fast_rnnt] {msg}", file=sys.stderr, flush=True)


def works() -> bool:
    """True when fast_rnnt imports on its own and its rnnt_loss matches torchaudio's on a small case."""
    code = textwrap.dedent(
        """
        import torch, torchaudio, fast_rnnt
        g = torch.Generator().manual_seed(0)
        B, T, U, V = 2, 7, 3, 5
        logits = torch.randn(B, T, U + 1, V, generator=g)
        symbols = torch.randint(1, V, (B, U), generator=g)
        ref = torchaudio.functional.rnnt_loss(logits, symbols.int(), torch.full((B,), T, dtype=torch.int32),
                                              torch.full((B,), U, dtype=torch.int32), blank=0, reduction="sum")
        boundary = torch.tensor([[0, 0, U, T]] * B)
        got = fast_rnnt.rnnt_loss(logits, symbols, termination_symbol=0, boundary=boundary, reduction="sum")
        assert torch.allclose(ref, got, rtol=1e-4), (ref, got)
        """
    )
    alone = subprocess.run([sys.executable, "-c", "import fast_rnnt"], capture_output=True)
    if alone.returncode != 0:  # must import without torch imported first (rpath to torch/lib)
        return False
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if fast_rnnt already works")
    args = ap.parse_args()
    if not args.force and works():
        log("fast_rnnt already installed and working")
        return 0
    with tempfile.TemporaryDirectory(prefix="fast_rnnt-build-") as tmp:
        tmp = Path(tmp)
        log("making sure the build tools (setuptools, wheel) are present")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "setuptools>=68", "wheel"], check=True)
        log(f"downloading the fast_rnnt=={VERSION} sdist from the package index")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", f"fast_rnnt=={VERSION}",
             "--no-deps", "--no-binary", ":all:", "-d", str(tmp)],
            check=True,
        )
        sdist = next(tmp.glob("fast_rnnt-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        root = tmp / f"fast_rnnt-{VERSION}"
        src = root / "src"
        src.mkdir()
        # The sources are .cu files that are plain C++ once FT_WITH_CUDA is undefined.
        shutil.copy(root / "fast_rnnt/csrc/mutual_information_cpu.cu", src / "mutual_information_cpu.cpp")
        shutil.copy(root / "fast_rnnt/python/csrc/mutual_information.cu", src / "py_mutual_information.cpp")
        shutil.copy(root / "fast_rnnt/python/csrc/fast_rnnt.cu", src / "py_fast_rnnt.cpp")
        (root / "setup.py").write_text(SETUP_PY.format(version=VERSION))
        for f in ("setup.cfg", "pyproject.toml"):
            (root / f).unlink(missing_ok=True)
        log("compiling (CPU only; about a minute on 2 cores)")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(root)],
            check=True,
        )
    if not works():
        log("ERROR: fast_rnnt installed but does not import or disagrees with torchaudio")
        return 1
    log("fast_rnnt built, installed and checked against torchaudio.functional.rnnt_loss")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:
        log(f"ERROR: command failed ({e.returncode}): {' '.join(map(str, e.cmd))}")
        sys.exit(1)
