"""Brute force: on tiny lattices enumerate every path; the recursions must agree."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_lattice import BACKENDS_WITH_REASON, using_backend

import astra.lattice as lattice


def lattice_paths(S: int, T: int, modified: bool):
    """Every monotone path from (0, 0) to (S, T) as a list of arcs ("x"|"y", s, t)."""
    if modified:  # T moves; S of them are x (s+1, t+1), the rest y (s, t+1)
        orders = (
            ["x" if i in xs else "y" for i in range(T)]
            for xs in itertools.combinations(range(T), S)
        )
    else:  # S + T moves; x (s+1, t), y (s, t+1)
        orders = (
            ["x" if i in xs else "y" for i in range(S + T)]
            for xs in itertools.combinations(range(S + T), S)
        )
    for order in orders:
        s = t = 0
        arcs = []
        for move in order:
            arcs.append((move, s, t))
            s += move == "x"
            t += 1 if (move == "y" or modified) else 0
        yield arcs


def path_log_weight(arcs, px, py) -> float:
    return sum(float(px[s, t] if kind == "x" else py[s, t]) for kind, s, t in arcs)


@pytest.mark.parametrize("backend", BACKENDS_WITH_REASON)
@pytest.mark.parametrize("modified", [False, True])
def test_log_partition_equals_enumeration(backend, modified):
    g = torch.Generator().manual_seed(11)
    B, S, T = 4, 3, 4
    px = torch.randn(B, S, T if modified else T + 1, generator=g, dtype=torch.float64)
    py = torch.randn(B, S + 1, T, generator=g, dtype=torch.float64)
    boundary = torch.tensor([[0, 0, 3, 4], [0, 0, 2, 3], [1, 1, 3, 4], [0, 0, 0, 2]])
    with using_backend(backend):
        scores, (gx, gy) = lattice.mutual_information_recursion(px, py, boundary, return_grad=True)
    for b in range(B):
        s0, t0, s1, t1 = boundary[b].tolist()
        sub_x, sub_y = px[b, s0:, t0:], py[b, s0:, t0:]
        weights = [
            (arcs, path_log_weight(arcs, sub_x, sub_y))
            for arcs in lattice_paths(s1 - s0, t1 - t0, modified)
        ]
        log_z = math.log(sum(math.exp(w) for _, w in weights))
        assert abs(float(scores[b]) - log_z) < 1e-5
        # occupancies = posterior probability that a path uses the arc
        occ_x = torch.zeros_like(px[b])
        occ_y = torch.zeros_like(py[b])
        for arcs, w in weights:
            for kind, s, t in arcs:
                target = occ_x if kind == "x" else occ_y
                target[s + s0, t + t0] += math.exp(w - log_z)
        torch.testing.assert_close(gx[b], occ_x, atol=1e-5, rtol=0)
        torch.testing.assert_close(gy[b], occ_y, atol=1e-5, rtol=0)


def rnnt_alignment_nll(logits, symbols, T: int, U: int) -> float:
    """-log sum over RNN-T alignments (U emissions, T blanks, last move blank) from logits."""
    logp = logits.log_softmax(-1)
    total = []
    for emits in itertools.combinations(range(U + T - 1), U):
        u = t = 0
        score = 0.0
        for i in range(U + T):
            if i in emits:
                score += float(logp[t, u, symbols[u]])
                u += 1
            else:
                score += float(logp[t, u, 0])
                t += 1
        total.append(score)
    return -math.log(sum(math.exp(x) for x in total))


@pytest.mark.parametrize("backend", BACKENDS_WITH_REASON)
def test_rnnt_loss_equals_alignment_enumeration(backend):
    g = torch.Generator().manual_seed(12)
    B, T, U, V = 3, 4, 3, 6
    logits = torch.randn(B, T, U + 1, V, generator=g, dtype=torch.float64)
    symbols = torch.randint(1, V, (B, U), generator=g)
    boundary = torch.tensor([[0, 0, 3, 4], [0, 0, 3, 2], [0, 0, 1, 3]])
    with using_backend(backend):
        loss = lattice.rnnt_loss(logits, symbols, 0, boundary, reduction="none")
    for b in range(B):
        u, t = int(boundary[b, 2]), int(boundary[b, 3])
        assert abs(float(loss[b]) - rnnt_alignment_nll(logits[b], symbols[b], t, u)) < 1e-5
