"""Lattice-guided self-transduction KL: zero when attention follows the lattice, wired in."""

from __future__ import annotations

import pytest
import torch

from astra.losses.transduction_kl import lattice_attention_kl
from astra.model import AstraModel, preset


def test_kl_is_zero_when_attention_rows_equal_the_occupancy_and_positive_otherwise():
    torch.manual_seed(0)
    occupancy = torch.rand(2, 3, 6).softmax(dim=-1)
    occupancy[1, :, 4:] = 0.0  # second utterance: 4 frames
    occupancy[1] = occupancy[1] / occupancy[1].sum(-1, keepdim=True)
    token_lens, frame_lens = torch.tensor([3, 2]), torch.tensor([6, 4])
    # T' = 5 attention frames: the occupancy (6 columns, like k2's px_grad) is cut to 5 and
    # renormalised; rows u >= U are free
    attention = torch.rand(2, 2, 5, 5).softmax(dim=-1)
    cut = occupancy[:, :, :5] / occupancy[:, :, :5].sum(-1, keepdim=True)
    attention[:, :, :3] = cut[:, None]
    exact = lattice_attention_kl(attention, occupancy, token_lens, torch.tensor([5, 4]), reduction="none")
    assert exact.abs().max().item() < 1e-5
    uniform = torch.full((2, 2, 5, 5), 0.2, requires_grad=True)
    loss = lattice_attention_kl(uniform, occupancy, token_lens, torch.tensor([5, 4]))
    assert loss.item() > 0.01
    loss.backward()
    assert torch.count_nonzero(uniform.grad[:, :, 3:]) == 0  # rows beyond U get no gradient
    with pytest.raises(ValueError, match="reduction"):
        lattice_attention_kl(uniform, occupancy, token_lens, frame_lens, reduction="avg")
    with pytest.raises(ValueError, match="batch sizes differ"):
        lattice_attention_kl(uniform, occupancy[:1], token_lens, frame_lens)


def test_transduction_kl_is_returned_and_trains_the_attention():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", transduction_kl_layer=2), 20)
    g = torch.Generator().manual_seed(0)
    batch = dict(kind="speech", features=torch.randn(2, 100, 80, generator=g), feature_lens=torch.tensor([100, 80]),
                 tokens=torch.tensor([[5, 6, 7], [8, 9, 0]]), token_lens=torch.tensor([3, 2]))
    out = model.forward_speech(batch)
    assert "transduction_kl" in out.losses and out.losses["transduction_kl"].item() > 0
    out.losses["transduction_kl"].backward()
    assert model.shared_encoder.blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    assert not model.shared_encoder.blocks[1].attn.keep_attention_with_grad
    model.set_identity_attention(True)
    assert model.forward_speech(batch).losses["transduction_kl"].item() == 0.0
