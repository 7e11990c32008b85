"""CTC forced alignment against exhaustive enumeration of every frame labelling."""

import itertools

import pytest
import torch

from astra.constants import BLANK_ID
from astra.model.ctc_compress import ctc_compress
from astra.model.ctc_forced_align import ctc_forced_align


def _collapse(path):
    out, previous = [], None
    for label in path:
        if label != previous and label != BLANK_ID:
            out.append(label)
        previous = label
    return out


def _best_path_score(log_probs, length, reference):
    """Brute force: the best score over all labellings of ``length`` frames that collapse to
    ``reference`` (None when there is none)."""
    best = None
    for path in itertools.product(range(log_probs.size(1)), repeat=length):
        if _collapse(path) == reference:
            score = float(sum(log_probs[t, label] for t, label in enumerate(path)))
            best = score if best is None else max(best, score)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_forced_alignment_is_the_best_path_of_every_reference(seed):
    g = torch.Generator().manual_seed(seed)
    vocab, width = 3, 6
    log_probs = torch.randn(5, width, vocab, generator=g).mul(2).log_softmax(-1)
    lengths = torch.tensor([6, 5, 4, 3, 6])
    tokens = torch.tensor([[1, 2, 1], [1, 1, 0], [2, 0, 0], [1, 1, 1], [0, 0, 0]])
    token_lens = torch.tensor([3, 2, 1, 3, 0])  # row 3 (1 1 1) needs 5 frames, has 3
    labels, feasible = ctc_forced_align(log_probs, lengths, tokens, token_lens, BLANK_ID)
    for b in range(5):
        n, reference = int(lengths[b]), tokens[b, : token_lens[b]].tolist()
        expected = _best_path_score(log_probs[b], n, reference)
        assert bool(feasible[b]) == (expected is not None)
        assert (labels[b, n:] == BLANK_ID).all()
        if expected is None:
            assert (labels[b] == BLANK_ID).all()
            continue
        path = labels[b, :n].tolist()
        assert _collapse(path) == reference
        assert float(sum(log_probs[b, t, label] for t, label in enumerate(path))) == pytest.approx(expected, abs=1e-5)


def test_forced_labels_compress_to_exactly_u_plus_one_frames():
    g = torch.Generator().manual_seed(0)
    log_probs = torch.randn(3, 20, 8, generator=g).log_softmax(-1)
    log_probs[..., BLANK_ID] += 5.0  # greedy CTC would output (almost) nothing
    tokens = torch.tensor([[3, 3, 5, 7, 2], [4, 1, 0, 0, 0], [6, 6, 6, 6, 0]])
    token_lens = torch.tensor([5, 2, 4])
    lengths = torch.tensor([20, 9, 12])
    labels, feasible = ctc_forced_align(log_probs, lengths, tokens, token_lens, BLANK_ID)
    assert feasible.all()
    frames = torch.randn(3, 20, 4, generator=g)
    _, out_lens = ctc_compress(frames, lengths, labels, BLANK_ID, "labels", torch.zeros(4))
    assert out_lens.tolist() == (token_lens + 1).tolist()
