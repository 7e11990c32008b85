"""Learning-rate and loss-weight schedules are pure functions of the step."""

from __future__ import annotations

import pytest

from astra.train.objective import loss_weights
from astra.train.schedules import identity_attention, learning_rate, ramp_factor
from astra.train.sections import LossConfig, OptimConfig, RampConfig


def test_warmup_then_decay():
    optim = OptimConfig(lr=1.0, warmup_steps=4, decay="cosine", min_lr_ratio=0.1)
    lrs = [learning_rate(s, optim, max_steps=14) for s in range(15)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lrs[14] == pytest.approx(0.1)
    linear = OptimConfig(lr=1.0, warmup_steps=0, decay="linear", min_lr_ratio=0.0)
    assert learning_rate(5, linear, max_steps=10) == pytest.approx(0.5)
    inv = OptimConfig(lr=1.0, warmup_steps=4, decay="inverse_sqrt", min_lr_ratio=0.0)
    assert learning_rate(15, inv, max_steps=100) == pytest.approx(0.5)
    const = OptimConfig(lr=2.0, warmup_steps=0, decay="constant")
    assert learning_rate(99, const, max_steps=10) == 2.0


def test_loss_weight_ramps_and_identity_attention():
    losses = LossConfig(consistency=0.4, ramps={"consistency": RampConfig(start=10, steps=4)},
                        identity_attention_steps=3, other={"lattice_kl": 0.2})
    assert ramp_factor(9, 10, 4) == 0.0 and ramp_factor(10, 10, 4) == 0.25 and ramp_factor(20, 10, 4) == 1.0
    assert ramp_factor(5, 5, 0) == 1.0
    w = loss_weights(losses, ["aligner", "consistency", "lattice_kl"], 11)
    assert w == pytest.approx({"aligner": 1.0, "consistency": 0.2, "lattice_kl": 0.2})
    assert loss_weights(losses, ["consistency"], 0)["consistency"] == 0.0
    with pytest.raises(ValueError, match="losses.other.mystery"):
        loss_weights(losses, ["mystery"], 0)
    # the same lookup without a step: the configured weights (what validation reports)
    assert loss_weights(losses, ["consistency", "lattice_kl"]) == pytest.approx({"consistency": 0.4, "lattice_kl": 0.2})
    with pytest.raises(ValueError, match="losses.other.mystery"):
        loss_weights(losses, ["mystery"])
    assert [identity_attention(s, losses) for s in range(5)] == [True, True, True, False, False]


def test_weight_decays_to_zero():
    losses = LossConfig(transduction_kl=0.5,
                        ramps={"transduction_kl": RampConfig(decay_start=4, decay_steps=2)})
    w = [loss_weights(losses, ["transduction_kl"], s)["transduction_kl"] for s in range(8)]
    assert w == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.25, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="decay_start"):
        RampConfig(start=5, steps=5, decay_start=6, decay_steps=1).validate()
