"""Aligner loss (arXiv:2502.05232): masking of frames beyond U, hand-computed value, drops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from astra.constants import EOS_ID
from astra.losses.aligner import aligner_loss
from astra.model.aligner_decoder import AlignerDecoder
from astra.model.astra_model import append_eos


def test_hand_computed_two_token_example():
    # target: one token (id 4) + <eos> (id 3) -> 2 scored frames; frames 2 and 3 are ignored
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0, 1.0, 2.0], [0.5, 0.0, 0.0, 3.0, 0.0], [9.0, 0, 0, 0, 0], [0, 9.0, 0, 0, 0]]]
    )
    targets = torch.tensor([[4, EOS_ID, 0, 0]])
    lse0 = math.log(3 * math.exp(0.0) + math.exp(1.0) + math.exp(2.0))
    lse1 = math.log(math.exp(0.5) + 2 * math.exp(0.0) + math.exp(3.0) + math.exp(0.0))
    expected_sum = (lse0 - 2.0) + (lse1 - 3.0)
    loss, kept = aligner_loss(logits, targets, torch.tensor([2]), torch.tensor([4]), reduction="sum")
    assert kept.tolist() == [True]
    assert loss.item() == pytest.approx(expected_sum, rel=1e-6)
    mean, _ = aligner_loss(logits, targets, torch.tensor([2]), torch.tensor([4]))
    assert mean.item() == pytest.approx(expected_sum / 2, rel=1e-6)


def _decoder_loss(decoder: AlignerDecoder, frames: torch.Tensor, targets, target_lens, frame_lens):
    logits = decoder(frames, targets)  # every frame gets logits; the loss must mask them
    loss, _ = aligner_loss(logits, targets, target_lens, frame_lens, reduction="sum")
    return loss


def test_frames_beyond_u_change_neither_loss_nor_gradients():
    torch.manual_seed(0)
    decoder = AlignerDecoder(d_model=8, vocab_size=10, pred_dim=6, pred_layers=1, joint_dim=7, dropout=0.0)
    tokens = torch.tensor([[5, 6, 7, 0, 0, 0], [8, 9, 0, 0, 0, 0]])
    token_lens = torch.tensor([3, 2])
    targets = append_eos(tokens, token_lens)  # [2, 7]
    target_lens = token_lens + 1
    frame_lens = torch.tensor([7, 5])
    frames = torch.randn(2, 7, 8, requires_grad=True)
    loss = _decoder_loss(decoder, frames, targets, target_lens, frame_lens)
    (grad,) = torch.autograd.grad(loss, frames)

    changed = frames.detach().clone()
    for b, length in enumerate(target_lens.tolist()):
        changed[b, length:] = torch.randn_like(changed[b, length:]) * 100
    changed.requires_grad_(True)
    loss2 = _decoder_loss(decoder, changed, targets, target_lens, frame_lens)
    (grad2,) = torch.autograd.grad(loss2, changed)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(grad2, grad)
    for b, length in enumerate(target_lens.tolist()):
        assert grad[b, :length].abs().sum() > 0
        assert torch.count_nonzero(grad[b, length:]) == 0


def test_examples_with_u_plus_one_above_t_prime_are_dropped_not_crashing():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, requires_grad=True)
    targets = torch.tensor([[4, 5, 3, 0], [4, 4, 4, 3]])
    target_lens = torch.tensor([3, 4])
    frame_lens = torch.tensor([4, 3])  # second example: 4 targets > 3 frames
    per_utt, kept = aligner_loss(logits, targets, target_lens, frame_lens, reduction="none")
    assert kept.tolist() == [True, False]
    assert per_utt[1].item() == 0.0
    mean, _ = aligner_loss(logits, targets, target_lens, frame_lens)
    assert mean.item() == pytest.approx(per_utt[0].item() / 3, rel=1e-6)
    mean.backward()
    assert torch.count_nonzero(logits.grad[1]) == 0
    # nothing kept: a zero loss that still supports backward
    none_kept, kept = aligner_loss(logits, targets, target_lens, torch.tensor([1, 1]))
    assert not kept.any() and none_kept.item() == 0.0
    none_kept.backward()


def test_label_smoothing_matches_torch_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 7)
    targets = torch.tensor([[4, 6, 3]])
    loss, _ = aligner_loss(logits, targets, torch.tensor([3]), torch.tensor([3]), label_smoothing=0.1)
    expected = F.cross_entropy(logits[0], targets[0], label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_bad_arguments_raise_clear_errors():
    logits = torch.randn(1, 2, 5)
    targets = torch.tensor([[4, 3]])
    with pytest.raises(ValueError, match="reduction"):
        aligner_loss(logits, targets, torch.tensor([2]), torch.tensor([2]), reduction="avg")
    with pytest.raises(ValueError, match="at least <eos>"):
        aligner_loss(logits, targets, torch.tensor([0]), torch.tensor([2]))
    with pytest.raises(ValueError, match="do not cover"):
        aligner_loss(logits, targets, torch.tensor([3]), torch.tensor([5]))
    with pytest.raises(ValueError, match="batch sizes differ"):
        aligner_loss(logits, targets, torch.tensor([2, 2]), torch.tensor([2, 2]))


def test_append_eos_places_eos_after_each_transcript():
    tokens = torch.tensor([[5, 6, 0], [7, 0, 0]])
    out = append_eos(tokens, torch.tensor([2, 1]))
    assert out.tolist() == [[5, 6, EOS_ID, 0], [7, EOS_ID, 0, 0]]


def test_position_weights_match_a_weighted_brute_force_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    target_lens, frame_lens = torch.tensor([4, 3]), torch.tensor([5, 2])  # example 1 is dropped
    weights = torch.tensor([[1.0, 0.0, 0.5, 1.0, 9.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
    loss, kept = aligner_loss(logits, targets, target_lens, frame_lens, position_weights=weights)
    assert kept.tolist() == [True, False]
    ce = [F.cross_entropy(logits[0, i], targets[0, i]).item() for i in range(4)]
    expected = sum(w * c for w, c in zip(weights[0, :4].tolist(), ce, strict=True)) / 2.5
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    ones, _ = aligner_loss(logits, targets, target_lens, frame_lens, position_weights=torch.ones(2, 5))
    plain, _ = aligner_loss(logits, targets, target_lens, frame_lens)
    assert ones.item() == pytest.approx(plain.item(), rel=1e-6)
    with pytest.raises(ValueError, match="position_weights"):
        aligner_loss(logits, targets, target_lens, frame_lens, position_weights=torch.ones(5))
