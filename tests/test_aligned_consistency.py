"""Aligned consistency (speech top frame u vs text frame u): loops, skipped rows, the model's wiring."""

from __future__ import annotations

import pytest
import torch

from astra.losses.aligned_consistency import aligned_consistency
from astra.model import AstraModel, preset


def _loops(speech, speech_lens, text, text_lens, distance):
    total, count = 0.0, 0
    for b in range(speech.size(0)):
        if int(text_lens[b]) > int(speech_lens[b]):
            continue
        for u in range(int(text_lens[b])):
            d = speech[b, u] - text[b, u]
            total += float(d.abs().mean() if distance == "mae" else d.pow(2).mean())
            count += 1
    return total, count


@pytest.mark.parametrize("distance", ["mae", "mse"])
def test_equals_the_position_loops_and_leaves_out_too_short_rows(distance):
    g = torch.Generator().manual_seed(0)
    speech = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    text = torch.randn(4, 4, 3, generator=g, dtype=torch.float64)
    speech_lens = torch.tensor([5, 2, 4, 3])
    text_lens = torch.tensor([4, 3, 2, 3])  # row 1: 3 positions > 2 frames, left out
    loss, count = aligned_consistency(speech, speech_lens, text, text_lens, distance)
    total, n = _loops(speech, speech_lens, text, text_lens, distance)
    assert int(count) == n == 4 + 2 + 3
    assert float(loss) == pytest.approx(total, rel=1e-12)
    # frames past a row's length, and text frames past its positions, do not matter
    speech2, text2 = speech.clone(), text.clone()
    speech2[0, 4:] += 9.0
    text2[2, 2:] -= 9.0
    assert float(aligned_consistency(speech2, speech_lens, text2, text_lens, distance)[0]) == pytest.approx(total)


def test_more_text_positions_than_frames_in_the_batch_and_bad_shapes():
    speech, text = torch.zeros(2, 2, 3), torch.ones(2, 4, 3)
    loss, count = aligned_consistency(speech, torch.tensor([2, 2]), text, torch.tensor([2, 4]))
    assert int(count) == 2 and float(loss) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="agree in B and D"):
        aligned_consistency(speech, torch.tensor([2, 2]), torch.ones(2, 4, 5), torch.tensor([2, 4]))
    with pytest.raises(ValueError, match="distance"):
        aligned_consistency(speech, torch.tensor([2, 2]), text, torch.tensor([2, 4]), "l2")


def _speech_batch():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, 20, (2, 5), generator=g)
    tokens[1, 3:] = 0
    return dict(kind="speech", features=torch.randn(2, 100, 80, generator=g), feature_lens=torch.tensor([100, 80]),
                tokens=tokens, token_lens=torch.tensor([5, 3]))


def test_model_loss_trains_the_speech_path_only_and_is_zero_on_the_text_paths_frames(monkeypatch):
    torch.manual_seed(0)
    model = AstraModel(preset("tiny"), 20)
    batch = _speech_batch()
    out = model.forward_speech(batch, needed=["aligned_consistency"])
    assert set(out.losses) == {"aligned_consistency"} and out.losses["aligned_consistency"] > 0
    out.losses["aligned_consistency"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.speech_encoder.parameters())
    assert all(p.grad is None for p in model.text_encoder.parameters())  # the text side is a target
    # a speech path whose top frames are the text path's frames scores 0
    model.eval()
    text, _, _ = model.forward_text_encoder(batch["tokens"], batch["token_lens"])
    monkeypatch.setattr(model, "forward_encoder", lambda *a, **k: (
        torch.nn.functional.pad(text, (0, 0, 0, 10)), torch.tensor([16, 14]), {}))
    zero = model.forward_speech(batch, needed=["aligned_consistency"]).losses["aligned_consistency"]
    assert float(zero.detach()) == pytest.approx(0.0, abs=1e-6)
