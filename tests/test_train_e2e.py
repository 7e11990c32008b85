"""``astra pretrain`` -> ``astra finetune`` -> ``astra average`` with the real tiny model."""

from __future__ import annotations

import pytest
import torch
import yaml

from astra.cli import main
from astra.config import load_config
from astra.data.synthetic import write_local_corpus
from astra.inference import load_model
from astra.model.presets import PRESETS
from astra.train import checkpoint as ckpt
from astra.train.build import build_parts
from astra.train.config import TrainConfig
from astra.train.trainer import Trainer


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    corpus = write_local_corpus(
        tmp / "corpus", languages=("en_us", "ru_ru"), splits={"train": 6, "validation": 2},
        seconds=(1.0, 2.0),
    )
    text = tmp / "en.txt"
    text.write_text("the lazy dog sings\nseven birds jump over the fox\nthe brown fox\n")
    tok = tmp / "tok.model"
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--text", f"en_us={text}",
                 "--vocab-size", "60", "--out", str(tok)]) == 0
    return corpus, text, tok


class RecordingStream:
    """Delegates to a train stream and records the keys of the batches it yields."""

    def __init__(self, stream):
        self.stream = stream
        self.seen: list[tuple[str, list[str]]] = []

    def __iter__(self):
        for batch in self.stream:
            self.seen.append((batch["kind"], list(batch.get("keys") or batch["texts"])))
            yield batch

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _recording_parts(cfg, rank, world_size):
    parts = build_parts(cfg, rank, world_size)
    parts.train_stream = RecordingStream(parts.train_stream)
    return parts


@pytest.mark.slow
def test_real_model_resume_is_exact(tmp_path, corpus_and_tokenizer):
    corpus, text, tok = corpus_and_tokenizer
    overrides = [
        *(f"model.{k}={v}" for k, v in PRESETS["tiny"].items()),
        f"data.corpora=[{corpus}]", f"data.tokenizer={tok}", f"data.unpaired_text=[en_us={text}]",
        "data.text_ratio=0.5", "data.max_batch_seconds=4.0", "data.speed_perturb=true",
        "optim.decay=constant", "optim.warmup_steps=2", "optim.grad_accum_steps=2",
        "losses.ramps.consistency.start=1", "losses.identity_attention_steps=2",
        "run.validate_every=0", "run.save_every=100", "run.concat_fraction=0.5",
    ]
    straight = Trainer(load_config(TrainConfig, None, [*overrides, f"run.out_dir={tmp_path / 'a'}",
                                                       "run.max_steps=4"]), _recording_parts)
    straight.run()
    first = Trainer(load_config(TrainConfig, None, [*overrides, f"run.out_dir={tmp_path / 'b'}",
                                                    "run.max_steps=2"]), _recording_parts)
    first.run()
    second = Trainer(load_config(TrainConfig, None, [*overrides, f"run.out_dir={tmp_path / 'b'}",
                                                     "run.max_steps=4"]), _recording_parts, resume=True)
    second.run()
    assert second.state.step == 4
    assert first.stream.seen + second.stream.seen == straight.stream.seen
    want = straight.model.state_dict()
    for k, v in second.model.state_dict().items():
        torch.testing.assert_close(v, want[k], atol=1e-6, rtol=0, msg=k)


@pytest.mark.slow
def test_pretrain_finetune_average(tmp_path, corpus_and_tokenizer):
    corpus, text, tok = corpus_and_tokenizer
    pre = {
        "model": dict(PRESETS["tiny"]),
        "data": {"corpora": [str(corpus)], "tokenizer": str(tok), "unpaired_text": [f"en_us={text}"],
                 "text_ratio": 0.5, "max_batch_seconds": 5.0},
        "losses": {"ramps": {"consistency": {"start": 1, "steps": 2}}, "identity_attention_steps": 1},
        "optim": {"warmup_steps": 2},
        "run": {"out_dir": str(tmp_path / "pre"), "max_steps": 3, "save_every": 2,
                "validate_every": 3, "plot_every": 3, "concat_fraction": 0.5, "log_every": 1,
                "alignment_every": 3},
    }
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(pre))
    assert main(["pretrain", "--config", str(tmp_path / "pre.yaml")]) == 0

    root = tmp_path / "pre" / "checkpoints"
    last = root / "step-00000003"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step-00000002", "step-00000003"]
    for name in ("config.yaml", "model.safetensors", "tokenizer.model", "trainer_state.json",
                 "accelerate/optimizer.bin", "accelerate/random_states_0.pkl",
                 "accelerate/sampler_state_0.pt"):
        assert (last / name).is_file(), name
    assert (tmp_path / "pre" / "plots" / "attention_step00000003.png").is_file()
    assert list((tmp_path / "pre" / "tensorboard").glob("events.out.tfevents*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "pre" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "alignment/reversal_alarm" in tags and "alignment/speech.0/locality" in tags
    assert [e.step for e in events.Scalars("alignment/max_front_alignment")] == [3]
    state = ckpt.read_trainer_state(last)
    assert "wer/en_us" in state["valid"] and "loss/consistency" in state["valid"]
    assert (root / "best").resolve() == last.resolve()
    assert state["counts"]["batches/text"] > 0 and state["counts"]["batches/speech"] > 0

    loaded = load_model(tmp_path / "pre")  # the run folder: its latest checkpoint
    model = loaded.model
    assert loaded.files.folder == last.resolve() and not model.training
    assert float(model.cmvn.mean.abs().sum()) > 0, "CMVN stats were not stored in the model"

    # fine-tune: model config and tokenizer from the checkpoint, text encoder frozen, no text
    ft = {
        "data": {"corpora": [str(corpus)], "languages": ["ru_ru"], "unpaired_text": [f"en_us={text}"],
                 "text_ratio": 0.5, "max_batch_seconds": 5.0},
        "losses": {"ramps": {}},
        "optim": {"warmup_steps": 1, "lr": 1e-3},
        "run": {"out_dir": str(tmp_path / "ft"), "max_steps": 2, "save_every": 1, "validate_every": 0,
                "mixed_precision": "bf16"},
        "finetune": {"freeze": ["text_encoder"], "text_injection": False},
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(ft))
    assert main(["finetune", "--config", str(tmp_path / "ft.yaml"), "--init", str(last)]) == 0
    before = ckpt.read_model_state(last)
    after = ckpt.read_model_state(tmp_path / "ft" / "checkpoints" / "step-00000002")
    text_keys = [k for k in before if k.startswith("text_encoder.")]
    assert text_keys and all(torch.equal(before[k], after[k]) for k in text_keys)
    aligner_key = next(k for k in before if k.startswith("aligner.") and before[k].dim() == 2)
    assert not torch.equal(before[aligner_key], after[aligner_key])
    ft_state = ckpt.read_trainer_state(tmp_path / "ft" / "checkpoints" / "step-00000002")
    assert ft_state["counts"].get("batches/text", 0) == 0 and ft_state["counts"]["batches/speech"] > 0

    # a model of another size cannot be initialised from it
    assert main(["finetune", "--config", str(tmp_path / "ft.yaml"), "--init", str(last),
                 "--set", "model.d_model=32", "--set", f"run.out_dir={tmp_path / 'bad'}"]) == 2

    out = tmp_path / "avg"
    assert main(["average", "--run", str(tmp_path / "ft"), "--last", "2", "--out", str(out)]) == 0
    averaged = load_model(out).model
    a = ckpt.read_model_state(tmp_path / "ft" / "checkpoints" / "step-00000001")
    b = ckpt.read_model_state(tmp_path / "ft" / "checkpoints" / "step-00000002")
    k = next(k for k in a if k.startswith("shared_encoder.") and a[k].is_floating_point())
    torch.testing.assert_close(averaged.state_dict()[k], (a[k] + b[k]) / 2)


def test_bench_train_step_prints_one_row_per_variant(tmp_path, corpus_and_tokenizer, capsys):
    import sys
    from pathlib import Path

    from astra.config import save_config

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import bench_train_step

    with pytest.raises(ValueError, match="KEY=VALUE"):
        bench_train_step.parse_variant("bad=data.num_workers")
    assert bench_train_step.parse_variant("base=") == ("base", [])
    corpus, text, tok = corpus_and_tokenizer
    cfg = load_config(TrainConfig, None, [
        *(f"model.{k}={v}" for k, v in PRESETS["tiny"].items()),
        f"data.corpora=[{corpus}]", f"data.tokenizer={tok}", f"data.unpaired_text=[en_us={text}]",
        "data.max_batch_seconds=4.0", "run.feature_stats_utterances=4",
    ])
    config = tmp_path / "config.yaml"
    save_config(cfg, config)
    cache = tmp_path / "fc"
    assert bench_train_step.main([
        "--config", str(config), "--steps", "1", "--warmup", "0", "--rounds", "2",
        "--variant", "base=", "--variant", f"cache=data.feature_cache={cache}",
    ]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| base", "| cache"))]
    assert len(rows) == 2 and rows[0].endswith("| 1.00 |")
    assert all(float(cell) > 0 for row in rows for cell in row.strip("|").split("|")[2:])
    assert any(cache.rglob("*.pt"))  # the cache variant really read and wrote the cache
