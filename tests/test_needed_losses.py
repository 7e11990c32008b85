"""Losses whose weight is 0 are not computed: the objective tells the model what it needs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import astra.lattice as lattice
from astra.errors import TrainingError
from astra.model import AstraModel, preset
from astra.train.objective import Objective, needed_losses, objective_needs
from astra.train.sections import LossConfig, RampConfig

VOCAB = 20
LATTICE_CALLS = ("rnnt_loss_simple", "rnnt_loss_pruned", "get_rnnt_logprobs")


def _speech_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, VOCAB, (3, 6), generator=g)
    tokens[1, 4:] = 0
    tokens[2, 3:] = 0
    return dict(kind="speech", features=torch.randn(3, 120, 80, generator=g),
                feature_lens=torch.tensor([120, 100, 60]), tokens=tokens, token_lens=torch.tensor([6, 4, 3]))


def _text_batch() -> dict:
    batch = _speech_batch()
    return dict(kind="text", tokens=batch["tokens"], token_lens=batch["token_lens"])


@pytest.fixture
def calls(monkeypatch) -> Counter:
    """Counts the RNN-T head's calls of the lattice functions (the module's own names)."""
    counter: Counter = Counter()
    for name in LATTICE_CALLS:
        real = getattr(lattice, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counter[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(lattice, name, counted)
    return counter


def _model() -> AstraModel:
    torch.manual_seed(0)
    return AstraModel(preset("tiny"), VOCAB).eval()  # eval: no SpecAugment, same values each call


def test_speech_losses_not_needed_are_not_computed(calls):
    model = _model()
    everything = model.forward_speech(_speech_batch())
    assert set(everything.losses) == set(model.loss_names("speech"))
    assert calls == Counter(rnnt_loss_simple=1, rnnt_loss_pruned=1, get_rnnt_logprobs=1)

    calls.clear()  # the tiny recipe: rnnt weight 0, ASTRA on (its lattice is needed)
    out = model.forward_speech(_speech_batch(), needed={"aligner", "inter_ctc", "rnnt_simple", "consistency"})
    assert set(out.losses) == {"aligner", "inter_ctc", "rnnt_simple", "consistency"}
    assert calls == Counter(rnnt_loss_simple=1, get_rnnt_logprobs=1)
    for name, value in out.losses.items():
        torch.testing.assert_close(value, everything.losses[name], msg=name)

    calls.clear()  # neither ASTRA nor a KL term: no detached lattice
    out = model.forward_speech(_speech_batch(), needed={"aligner", "rnnt_simple"})
    assert set(out.losses) == {"aligner", "rnnt_simple"} and calls == Counter(rnnt_loss_simple=1)

    calls.clear()  # ASTRA alone: its lattice, no RNN-T loss and no gradient into the head
    out = model.forward_speech(_speech_batch(), needed={"aligner", "consistency"})
    assert calls == Counter(get_rnnt_logprobs=1)
    sum(out.losses.values()).backward()
    assert all(p.grad is None for p in model.rnnt.parameters())

    calls.clear()
    out = model.forward_speech(_speech_batch(), needed={"aligner"})
    assert set(out.losses) == {"aligner"} and not calls
    assert "dropped/ctc_too_short" not in out.counts  # no CTC head asked for


def test_text_rnnt_runs_only_the_pruned_loss_on_diagonal_windows(calls):
    model = _model().train()
    out = model.forward_text(_text_batch(), needed={"text_rnnt"})
    assert set(out.losses) == {"text_rnnt"}
    # the windows follow the diagonal of the U+1 text frames: no simple recursion on text
    assert calls == Counter(rnnt_loss_pruned=1)
    out.losses["text_rnnt"].backward()
    assert model.rnnt.output.weight.grad is not None
    assert model.rnnt.simple_lm.weight.grad is None and model.rnnt.simple_am.weight.grad is None
    calls.clear()
    assert set(model.forward_text(_text_batch(), needed={"text_aligner"}).losses) == {"text_aligner"}
    assert not calls


def test_a_needed_loss_the_model_cannot_compute_is_an_error():
    model = AstraModel(preset("tiny", rnnt_head=False, consistency=False), VOCAB)
    with pytest.raises(ValueError, match=r"\['rnnt'\] are not enabled"):
        model.forward_speech(_speech_batch(), needed={"aligner", "rnnt"})
    with pytest.raises(ValueError, match="text_rnnt"):
        model.forward_text(_text_batch(), needed={"text_rnnt"})


def test_the_objective_needs_weights_above_zero_including_ramps_from_zero():
    losses = LossConfig(rnnt=0.0, inter_ctc=1.0, consistency=0.1,
                        ramps={"consistency": RampConfig(start=300, steps=300)})
    needed = needed_losses(losses, ["aligner", "rnnt", "rnnt_simple", "consistency"])
    assert needed == {"aligner", "rnnt_simple", "consistency"}
    with pytest.raises(ValueError, match="losses.other.mystery"):
        needed_losses(losses, ["mystery"])
    model = AstraModel(preset("tiny"), VOCAB)
    needs = objective_needs(model, losses)
    assert needs == {"speech": {"aligner", "inter_ctc", "rnnt_simple", "consistency"},
                     "text": {"text_aligner", "text_rnnt"}}  # text_ctc: weight 0 by default
    kl_model = AstraModel(preset("tiny", transduction_kl_layer=1), VOCAB)
    assert "transduction_kl" not in objective_needs(kl_model, losses)["speech"]  # weight 0 by default
    assert objective_needs(object(), losses) is None  # a model that cannot say computes everything


def test_objective_skips_the_pruned_loss_of_the_tiny_recipe(calls):
    """recipes/tiny/pretrain.yaml: ``rnnt: 0.0`` with the head on; ``text_rnnt: 0.5``."""
    losses = LossConfig(aligner=1.0, inter_ctc=1.0, rnnt_simple=0.5, rnnt=0.0, consistency=0.1,
                        text_aligner=1.0, text_rnnt=0.5, ramps={"consistency": RampConfig(start=300, steps=300)})
    model = _model().train()
    objective = Objective(losses, objective_needs(model, losses))
    total, logged, _ = objective(model, _speech_batch(), 0)
    assert set(logged) == {"aligner", "inter_ctc", "rnnt_simple", "consistency"}
    assert calls["rnnt_loss_pruned"] == 0 and calls["get_rnnt_logprobs"] == 1
    total.backward()
    objective(model, _text_batch(), 0)
    assert calls["rnnt_loss_pruned"] == 1  # the text batch's text_rnnt

    no_text = LossConfig(text_aligner=0.0, text_rnnt=0.0)
    objective = Objective(no_text, objective_needs(model, no_text))
    calls.clear()
    total, logged, _ = objective(model, _text_batch(), 0)  # nothing to compute, but every process joins the all-reduce
    assert logged == {} and not calls and total.item() == 0.0 and total.requires_grad


def test_a_model_loss_without_a_weight_stops_before_training():
    model = AstraModel(preset("tiny", transduction_kl_layer=1), VOCAB)

    class NoKlWeight(LossConfig):
        def weight(self, name):
            if name == "transduction_kl":
                raise KeyError(name)
            return super().weight(name)

    with pytest.raises(TrainingError, match="losses.other.transduction_kl"):
        objective_needs(model, NoKlWeight())


def test_model_call_is_forward_speech_or_forward_text_by_batch_kind():
    model = _model()
    speech, text = _speech_batch(), _text_batch()
    for batch, direct in ((speech, model.forward_speech), (text, model.forward_text)):
        called, expected = model(batch), direct(batch)
        assert called.losses.keys() == expected.losses.keys() and called.counts == expected.counts
        assert all(torch.equal(called.losses[k], expected.losses[k]) for k in expected.losses)
    assert set(model(speech, needed={"aligner"}).losses) == {"aligner"}
    empty = {**speech, "tokens": speech["tokens"][:0], "token_lens": speech["token_lens"][:0]}
    for idle in (model(empty), model(text, needed=set())):
        assert idle.losses == {} and idle.idle_loss.item() == 0.0
        idle.idle_loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="neither 'speech' nor 'text'"):
        model({**speech, "kind": "image"})
