"""Trainer loop on a tiny fake model: exact resume, crash during save, non-finite losses."""

from __future__ import annotations

import json

import pytest
import torch
from train_fakes import FakeTrainConfig, build_fake_parts

from astra.checkpoint_paths import latest_checkpoint
from astra.config import load_config
from astra.train import checkpoint as ckpt
from astra.train.trainer import Trainer, TrainingError
from astra.train.validation import ValidationData

BASE = [
    "run.max_steps=8",
    "run.save_every=100",
    "run.log_every=2",
    "run.validate_every=3",
    "run.keep_best=1",
    "optim.warmup_steps=2",
    "optim.grad_accum_steps=2",
    "losses.ramps.consistency.start=0",
    "losses.identity_attention_steps=3",
]


def make_cfg(tmp_path, name: str, *overrides: str) -> FakeTrainConfig:
    return load_config(FakeTrainConfig, None, [*BASE, f"run.out_dir={tmp_path / name}", *overrides])


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k] - b[k]).abs().max()}"


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_exact_resume_after_interrupt(tmp_path, signal_name):
    straight = Trainer(make_cfg(tmp_path, "straight"), build_fake_parts)
    straight.run()
    want = params(straight.model)
    want_order = straight.stream.seen

    # a signal while global batch 7 (micro-batch 2 of step 4) is made: step 4 finishes, is saved
    cfg = make_cfg(tmp_path, "resumed", "data.interrupt_at_batch=7", f"data.interrupt_signal={signal_name}")
    first = Trainer(cfg, build_fake_parts)
    last = first.run()
    assert first.state.step == 4 and last.name == "step-00000004"
    assert first.stopped_by == signal_name
    assert not torch.equal(params(first.model)["head.weight"], want["head.weight"])

    second = Trainer(cfg, build_fake_parts, resume=True)
    second.run()
    assert second.state.step == 8
    assert_same_params(params(second.model), want)
    assert first.stream.seen + second.stream.seen == want_order
    # identity attention: on for steps 0-2, off afterwards, re-applied after resume
    assert straight.model.identity_calls == [True, False]
    assert second.model.identity_calls == [False]


def test_resume_of_a_checkpoint_saved_with_the_old_loss_wrapper_is_exact(tmp_path):
    """Checkpoints written when Accelerate prepared a loss wrapper (``LossModule``) hold the
    model's state under ``model.``; resuming them gives the same run as a straight one."""
    from safetensors.torch import load_file, save_file

    straight = Trainer(make_cfg(tmp_path, "straight"), build_fake_parts)
    straight.run()
    cfg = make_cfg(tmp_path, "old", "data.interrupt_at_batch=7")
    last = Trainer(cfg, build_fake_parts).run()
    weights = last / ckpt.ACCELERATE_DIR / "model.safetensors"
    state = load_file(str(weights))
    save_file({f"model.{k}": v for k, v in state.items()}, str(weights))  # the old layout

    resumed = Trainer(cfg, build_fake_parts, resume=True)
    resumed.run()
    assert resumed.state.step == 8
    assert_same_params(params(resumed.model), params(straight.model))
    assert set(load_file(str(weights))) == {f"model.{k}" for k in state}  # the old file is left as it was


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    straight = Trainer(make_cfg(tmp_path, "straight", "run.max_steps=6"), build_fake_parts)
    straight.run()

    cfg = make_cfg(tmp_path, "crashy", "run.max_steps=6", "run.save_every=2")
    real_save = ckpt.save_model_weights
    calls = {"n": 0}

    def crash_on_second_save(model, path):
        calls["n"] += 1
        if calls["n"] == 2:
            path.write_bytes(b"half a file")
            raise OSError("disk died during save")
        real_save(model, path)

    monkeypatch.setattr(ckpt, "save_model_weights", crash_on_second_save)
    with pytest.raises(OSError, match="disk died"):
        Trainer(cfg, build_fake_parts).run()
    monkeypatch.setattr(ckpt, "save_model_weights", real_save)

    root = tmp_path / "crashy" / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step-00000002"]
    assert latest_checkpoint(root).name == "step-00000002"
    state = ckpt.read_model_state(root / "step-00000002")
    assert "head.weight" in state

    resumed = Trainer(cfg, build_fake_parts, resume=True)
    resumed.run()
    assert resumed.state.step == 6
    assert_same_params(params(resumed.model), params(straight.model))
    assert not any(p.name.startswith(".tmp") for p in root.iterdir())


def test_nonfinite_loss_is_skipped_and_counted(tmp_path):
    cfg = make_cfg(tmp_path, "nan", "optim.grad_accum_steps=1", "data.poison_batches=[3]")
    trainer = Trainer(cfg, build_fake_parts)
    trainer.run()
    assert trainer.state.step == 8
    assert trainer.state.nonfinite_total == 1
    assert trainer.state.nonfinite_in_a_row == 0
    assert all(torch.isfinite(v).all() for v in params(trainer.model).values())
    saved = json.loads((tmp_path / "nan/checkpoints/step-00000008/trainer_state.json").read_text())
    assert saved["nonfinite_total"] == 1
    assert saved["counts"]["counts/nonfinite_skipped"] == 1


def test_nonfinite_loss_k_in_a_row_stops(tmp_path):
    cfg = make_cfg(
        tmp_path, "nan", "optim.grad_accum_steps=1", "data.poison_batches=[2, 3, 4, 5]",
        "run.max_nonfinite=3", "data.text_every=0",
    )
    trainer = Trainer(cfg, build_fake_parts)
    with pytest.raises(TrainingError, match="non-finite for 3 steps in a row"):
        trainer.run()
    assert trainer.state.nonfinite_total == 3


def test_validation_keeps_best_and_last(tmp_path):
    cfg = make_cfg(tmp_path, "keep", "run.save_every=2", "run.keep_last=2", "run.max_steps=9")
    Trainer(cfg, build_fake_parts).run()
    root = tmp_path / "keep" / "checkpoints"
    names = [p.name for p in ckpt.list_checkpoints(root)]
    best = (root / "best").resolve()
    assert names[-2:] == ["step-00000008", "step-00000009"]
    assert best.name in names and len(names) <= 3
    state = ckpt.read_trainer_state(best)
    assert state["metric"] == pytest.approx(state["best_metric"])
    assert "wer/xx" in state["valid"]
    assert (best / "tokenizer.model").read_text() == "fake sentencepiece model"
    assert (best / "config.yaml").is_file()


def test_resume_with_other_world_size_is_refused(tmp_path):
    cfg = make_cfg(tmp_path, "ws", "run.max_steps=2")
    Trainer(cfg, build_fake_parts).run()
    state_file = tmp_path / "ws/checkpoints/step-00000002/trainer_state.json"
    state = json.loads(state_file.read_text())
    state["world_size"] = 2
    state_file.write_text(json.dumps(state))
    cfg.run.max_steps = 4
    with pytest.raises(TrainingError, match="already has checkpoints .* pass --resume"):
        Trainer(cfg, build_fake_parts).run()
    with pytest.raises(TrainingError, match="same number of processes"):
        Trainer(cfg, build_fake_parts, resume=True).run()


def test_bf16_mixed_precision_trains(tmp_path):
    cfg = make_cfg(tmp_path, "bf16", "run.mixed_precision=bf16", "run.max_steps=3")
    trainer = Trainer(cfg, build_fake_parts)
    trainer.run()
    assert trainer.accelerator.mixed_precision == "bf16"
    batch = next(iter(trainer.stream))
    with trainer.accelerator.autocast():
        total, losses, _ = trainer.objective(trainer.wrapped, batch, trainer.state.step)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert all(torch.isfinite(v).all() for v in params(trainer.model).values())


def test_finetune_init_freeze_and_shape_errors(tmp_path):
    pre = Trainer(make_cfg(tmp_path, "pre", "run.max_steps=2"), build_fake_parts)
    init = pre.run()
    init_state = ckpt.read_model_state(init)
    cfg = make_cfg(tmp_path, "ft", "run.max_steps=3", "finetune.freeze=[speech_encoder]",
                   "run.validate_every=0")
    ft = Trainer(cfg, build_fake_parts, init=init)
    ft.run()
    after = params(ft.model)
    assert torch.equal(after["speech_encoder.weight"], init_state["speech_encoder.weight"])
    assert not torch.equal(after["head.weight"], init_state["head.weight"])
    # CMVN stats come from the checkpoint, not recomputed
    assert torch.equal(after["feature_mean"], init_state["feature_mean"])

    bad = make_cfg(tmp_path, "bad", "model.dim=4")
    with pytest.raises(TrainingError, match="shapes do not fit"):
        Trainer(bad, build_fake_parts, init=init).run()
    typo = make_cfg(tmp_path, "typo", "finetune.freeze=[spech_encoder]")
    with pytest.raises(TrainingError, match="no parameters under 'spech_encoder'"):
        Trainer(typo, build_fake_parts, init=init).run()


def test_all_weights_ramping_in_still_steps(tmp_path):
    # text losses off for the first 4 steps: text batches back-propagate zeros, no error
    cfg = make_cfg(tmp_path, "ramp", "run.max_steps=4", "optim.grad_accum_steps=1",
                   "losses.ramps.text_aligner.start=10")
    trainer = Trainer(cfg, build_fake_parts)
    trainer.run()
    assert trainer.state.step == 4 and trainer.state.counts["batches/text"] >= 1


def test_empty_batch_is_a_counted_zero_step(tmp_path):
    # global batch 2 lost every utterance: it is consumed as a step of its own (with several
    # processes, every rank then still takes part in each step's gradient all-reduce)
    cfg = make_cfg(tmp_path, "empty", "optim.grad_accum_steps=1", "data.text_every=0",
                   "data.empty_batches=[2]", "run.concat_fraction=0.5")
    trainer = Trainer(cfg, build_fake_parts)
    trainer.run()
    assert trainer.state.step == 8
    assert trainer.state.counts["counts/dropped/empty_batch"] == 1
    assert trainer.state.counts["batches/speech"] == 7
    assert len(trainer.stream.seen) == 7 * 2  # 8 batches drawn, one of them empty
    assert all(torch.isfinite(v).all() for v in params(trainer.model).values())


def _event_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}


@pytest.mark.parametrize("with_validation_data", [True, False])
def test_alignment_statistics_are_logged(tmp_path, caplog, with_validation_data):
    def parts(cfg, rank, world_size):
        built = build_fake_parts(cfg, rank, world_size)
        if not with_validation_data:  # statistics of the training batch instead
            built.eval_batches = None
        return built

    cfg = make_cfg(tmp_path, "align", "run.max_steps=4", "run.alignment_every=2",
                   "run.validate_every=0")
    with caplog.at_level("WARNING", logger="astra.train.hooks"):
        Trainer(cfg, parts).run()
    scalars = _event_scalars(tmp_path / "align")
    # the fake model's layer1 is identity attention, layer2 the time-reversed anti-diagonal
    assert [s for s, _ in scalars["alignment/layer1/locality"]] == [2, 4]
    assert all(v == pytest.approx(1.0) for _, v in scalars["alignment/layer1/locality"])
    assert all(v == pytest.approx(-1.0) for _, v in scalars["alignment/layer2/monotonicity"])
    assert scalars["alignment/reversal_alarm"] == [(2, 1.0), (4, 1.0)]
    alarms = [r.getMessage() for r in caplog.records if "reversal alarm" in r.getMessage()]
    assert len(alarms) == 2 and "layer2" in alarms[0] and alarms[0].startswith("step 2:")


def test_num_threads_is_applied(tmp_path):
    before = torch.get_num_threads()
    try:
        cfg = make_cfg(tmp_path, "threads", "run.max_steps=1", "run.num_threads=1")
        Trainer(cfg, build_fake_parts).run()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("mode, accum", [("share", 1), ("add", 1), ("add", 2)])
def test_text_batches_share_or_add_to_the_speech_of_a_step(tmp_path, mode, accum):
    # every 3rd global batch of the fake stream is text
    cfg = make_cfg(tmp_path, f"{mode}{accum}", "run.max_steps=6", f"optim.grad_accum_steps={accum}",
                   f"optim.text_batches={mode}")
    trainer = Trainer(cfg, build_fake_parts)
    trainer.run()
    counts = trainer.state.counts
    assert trainer.state.step == 6 and counts["batches/text"] >= 2
    if mode == "add":  # every step has its accum speech batches; text comes on top
        assert counts["batches/speech"] == 6 * accum
    else:  # a text batch took a speech batch's place
        assert counts["batches/speech"] + counts["batches/text"] == 6 * accum
    with pytest.raises(ValueError, match="text_batches"):
        make_cfg(tmp_path, "bad", "optim.text_batches=both")


class _LanguageBatches:
    """Validation batches of three languages, one language per batch (like EvalBatches)."""

    def __init__(self, batches: list[dict]):
        self.batches = []
        for i, batch in enumerate(batches):
            lang = ["aa", "bb", "cc"][i % 3]
            self.batches.append({**batch, "languages": [lang] * len(batch["keys"])})
        self.utterances = [
            type("Utt", (), {"language": lang})() for b in self.batches for lang in b["languages"]
        ]

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.parametrize("limit, missing", [(2, "cc"), (3, None)])
def test_validation_warns_about_languages_it_never_sees(tmp_path, caplog, limit, missing):
    def parts(cfg, rank, world_size):
        p = build_fake_parts(cfg, rank, world_size)
        batches = p.eval_batches()
        p.eval_batches = lambda: _LanguageBatches(batches + batches)
        return p

    cfg = make_cfg(tmp_path, f"langs{limit}", "run.max_steps=3", f"run.valid_max_batches={limit}")
    with caplog.at_level("WARNING", logger="astra.train.validation"):
        Trainer(cfg, parts).run()
    warnings = [r.getMessage() for r in caplog.records if "not validated" in r.getMessage()]
    if missing is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].endswith(
            f"not validated: {missing} (raise run.valid_max_batches to at least the number of languages)"
        )


def test_a_validation_clip_too_short_to_decode_is_counted_and_training_goes_on(tmp_path, caplog):
    """A 50 ms clip (5 frames) below the front end's minimum (7): validation skips and counts
    it (as ``astra evaluate`` does) instead of stopping the run in ``model.decode``."""

    def parts(cfg, rank, world_size):
        p = build_fake_parts(cfg, rank, world_size)
        batches = p.eval_batches()
        long = dict(batches[0], features=torch.randn(2, 100, batches[0]["features"].size(2)),
                    feature_lens=torch.tensor([100, 5]), durations=torch.tensor([1.0, 0.05]))
        p.eval_batches = lambda: [long]
        return p

    cfg = make_cfg(tmp_path, "short", "run.max_steps=4", "model.min_input_frames=7")
    trainer = Trainer(cfg, parts)
    with caplog.at_level("WARNING", logger="astra.train.validation"):
        trainer.run()
    assert trainer.state.step == 4
    assert trainer.state.valid["skipped/too_short_audio"] == 1
    short_key = parts(cfg, 0, 1).eval_batches()[0]["keys"][1]
    assert any("1 utterance(s) shorter than 7 feature frames were not decoded" in r.getMessage()
               and short_key in r.getMessage() for r in caplog.records)


def test_mean_counts_are_averaged_per_log_window_not_summed(tmp_path):
    cfg = make_cfg(tmp_path, "means", "run.max_steps=4", "run.log_every=2", "run.validate_every=0")
    trainer = Trainer(cfg, build_fake_parts)
    trainer.run()
    scalars = _event_scalars(tmp_path / "means")
    assert [v for _, v in scalars["stats/fake_norm"]] == [pytest.approx(2.0)] * 2
    assert not any("fake_norm" in k for k in trainer.state.counts)


def test_every_trainer_attribute_is_born_in_init(tmp_path):
    cfg = make_cfg(tmp_path, "attrs", "run.max_steps=3", "run.plot_every=3", "run.alignment_every=3")
    trainer = Trainer(cfg, build_fake_parts)
    born = set(vars(trainer))
    trainer.run()
    assert set(vars(trainer)) == born
    used = trainer.jobs[0].data  # validated on, first batch plotted: its caches were filled
    assert used.first_batch() is not None
    assert set(vars(used)) == set(vars(ValidationData(None, 0)))
