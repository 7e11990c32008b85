#!/usr/bin/env python
"""Benchmark the RNN-T losses of astra.lattice on CPU and print a markdown table.

For each size (B, T, U, V) and each method, one "step" is: build the joiner output from
``am [B, T, V]`` and ``lm [B, U+1, V]`` (a plain sum, so every method pays for its own
lattice), compute the loss, and backpropagate to ``am`` and ``lm``. Methods:

* ``torchaudio``: ``torchaudio.functional.rnnt_loss`` on the full ``[B, T, U+1, V]`` logits;
* ``full/<backend>``: ``astra.lattice.rnnt_loss`` on the full logits;
* ``pruned/<backend>``: ``rnnt_loss_simple(return_grad=True)`` -> ``get_rnnt_prune_ranges``
  -> ``do_rnnt_pruning`` -> ``rnnt_loss_pruned`` on ``[B, T, s_range, V]`` (k2's recipe; the
  simple and pruned losses are summed as in training).

Time: median over ``--runs`` timed steps after one warm-up step. Peak memory: an extra
step under ``torch.profiler`` with ``profile_memory=True``; the allocator's alloc/free
events are replayed in time order and the maximum of the running sum is the peak of live
CPU tensor bytes allocated *during* the step (the inputs ``am``/``lm`` are excluded).

Usage: ``python tools/bench_lattice.py [--quick] [--runs 5] [--threads 1]``
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import astra.lattice as lattice  # noqa: E402

SIZES = [(8, 100, 25, 500), (8, 200, 50, 500), (8, 400, 100, 500)]
QUICK_SIZES = [(2, 40, 10, 100), (2, 80, 20, 100)]


def make_inputs(B: int, T: int, U: int, V: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(B, T, V, generator=g).requires_grad_(True)
    lm = torch.randn(B, U + 1, V, generator=g).requires_grad_(True)
    symbols = torch.randint(1, V, (B, U), generator=g)
    t_lens = torch.full((B,), T, dtype=torch.int64)
    u_lens = torch.full((B,), U, dtype=torch.int64)
    t_lens[1:] = torch.randint(T // 2 + 1, T + 1, (B - 1,), generator=g)  # ragged
    u_lens[1:] = torch.randint(U // 2 + 1, U + 1, (B - 1,), generator=g)
    zeros = torch.zeros(B, dtype=torch.int64)
    boundary = torch.stack([zeros, zeros, u_lens, t_lens], 1)
    return am, lm, symbols, t_lens, u_lens, boundary


def step_torchaudio(am, lm, symbols, t_lens, u_lens, boundary, s_range):
    import torchaudio.functional as taf

    logits = am.unsqueeze(2) + lm.unsqueeze(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = taf.rnnt_loss(logits, symbols.int(), t_lens.int(), u_lens.int(), blank=0)
    loss.backward()


def step_full(am, lm, symbols, t_lens, u_lens, boundary, s_range):
    logits = am.unsqueeze(2) + lm.unsqueeze(1)
    lattice.rnnt_loss(logits, symbols, 0, boundary=boundary).backward()


def step_pruned(am, lm, symbols, t_lens, u_lens, boundary, s_range):
    simple, (px_grad, py_grad) = lattice.rnnt_loss_simple(
        lm, am, symbols, 0, boundary=boundary, return_grad=True
    )
    ranges = lattice.get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    am_pruned, lm_pruned = lattice.do_rnnt_pruning(am, lm, ranges)
    pruned = lattice.rnnt_loss_pruned(am_pruned + lm_pruned, symbols, ranges, 0, boundary=boundary)
    (simple + pruned).backward()


def run_step(step, inputs, s_range):
    am, lm = inputs[0], inputs[1]
    am.grad = lm.grad = None
    step(*inputs, s_range)


def time_step(step, inputs, s_range, runs: int) -> float:
    run_step(step, inputs, s_range)  # warm-up
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        run_step(step, inputs, s_range)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory(step, inputs, s_range) -> int:
    """Peak bytes of CPU tensors allocated during one step (profiler allocator events)."""
    from torch.profiler import ProfilerActivity, profile

    am, lm = inputs[0], inputs[1]
    am.grad = lm.grad = None  # freed before the profiler starts
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(*inputs, s_range)
    events = prof.profiler.kineto_results.events()
    deltas = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    current = peak = 0
    for _, nbytes in deltas:
        current += nbytes
        peak = max(peak, current)
    return peak


def time_recursion(B: int, T: int, U: int, backend: str, runs: int) -> tuple[float, float]:
    """(median, min) seconds of ``mutual_information_recursion`` forward+backward on a
    random ``[B, U, T+1]`` lattice."""
    g = torch.Generator().manual_seed(1)
    px = torch.randn(B, U, T + 1, generator=g).requires_grad_(True)
    py = torch.randn(B, U + 1, T, generator=g).requires_grad_(True)
    lattice.set_backend(backend)
    try:
        times = []
        for i in range(runs + 1):
            px.grad = py.grad = None
            t0 = time.perf_counter()
            lattice.mutual_information_recursion(px, py).sum().backward()
            if i:  # the first run is a warm-up
                times.append(time.perf_counter() - t0)
    finally:
        lattice.set_backend(None)
    return statistics.median(times), min(times)


def methods(backends: list[str]):
    out = [("torchaudio", None, step_torchaudio)]
    out += [(f"full / {b}", b, step_full) for b in backends]
    out += [(f"simple+pruned / {b}", b, step_pruned) for b in backends]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 3 runs: a smoke test")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per cell (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--s-range", type=int, default=5, help="pruning range")
    parser.add_argument("--no-memory", action="store_true", help="skip the profiler memory pass")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = QUICK_SIZES if args.quick else SIZES
    runs = 3 if args.quick and args.runs == 5 else args.runs
    backends = [n for n, (ok, _) in lattice.available_backends().items() if ok]

    load_before = os.getloadavg()[0]
    rows = []
    for B, T, U, V in sizes:
        inputs = make_inputs(B, T, U, V)
        base = None
        for label, backend, step in methods(backends):
            if backend is not None:
                lattice.set_backend(backend)
            try:
                seconds = time_step(step, inputs, args.s_range, runs)
                memory = None if args.no_memory else peak_memory(step, inputs, args.s_range)
            finally:
                lattice.set_backend(None)
            base = seconds if base is None else base
            rows.append(((B, T, U, V), label, seconds, seconds / base, memory))
            mem = "-" if memory is None else f"{memory / 2**20:.0f} MiB"
            print(
                f"# {B}x{T}x{U}x{V} {label}: {seconds * 1e3:.1f} ms, {mem}",
                file=sys.stderr,
                flush=True,
            )
        del inputs
        gc.collect()

    print(
        f"RNN-T loss, forward+backward on CPU ({args.threads} thread(s), torch {torch.__version__}); "
        f"time = median of {runs} runs, ratio = time / torchaudio's in the same run; peak memory = "
        "maximum of live CPU tensor bytes allocated during one step, replayed from torch.profiler's "
        "allocator events (profile_memory=True), inputs excluded. Joiner = am[t] + lm[u]; "
        f"pruned uses s_range={args.s_range}; lengths ragged (utterance 0 full length). "
        f"Machine: {os.cpu_count()} logical CPUs, 1-min load average {load_before:.1f} at the "
        f"start and {os.getloadavg()[0]:.1f} at the end (other jobs share the CPUs: times are noisy).\n"
    )
    print("| B, T, U, V | method | time (ms) | ratio to torchaudio | peak memory (MiB) |")
    print("|---|---|---:|---:|---:|")
    for (B, T, U, V), label, seconds, ratio, memory in rows:
        mem = "-" if memory is None else f"{memory / 2**20:.0f}"
        print(f"| {B}, {T}, {U}, {V} | {label} | {seconds * 1e3:.1f} | {ratio:.2f} | {mem} |")

    n_rec = max(runs, 30)
    print(
        "\nThe recursion alone: `mutual_information_recursion` forward+backward on random "
        f"px [B, U, T+1], py [B, U+1, T]; median (min) of {n_rec} runs, ms.\n"
    )
    print("| B, T, U | " + " | ".join(backends) + " | torch / fastest compiled (median, min) |")
    print("|---|" + "---:|" * (len(backends) + 1))
    for B, T, U, _ in sizes:
        times = {b: time_recursion(B, T, U, b, n_rec) for b in backends}
        compiled = [b for b in backends if b != "torch"]
        ratio = "-"
        if compiled:
            best = min(compiled, key=lambda b: times[b][0])
            ratio = f"{times['torch'][0] / times[best][0]:.2f}, {times['torch'][1] / times[best][1]:.2f}"
        cells = " | ".join(f"{times[b][0] * 1e3:.1f} ({times[b][1] * 1e3:.1f})" for b in backends)
        print(f"| {B}, {T}, {U} | {cells} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
