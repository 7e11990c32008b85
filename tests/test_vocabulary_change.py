"""Fine-tuning on a language the pretrained tokenizer cannot encode: ``astra tokenizer extend``
+ ``finetune.tokenizer`` (rows copied by piece string, new pieces initialised)."""

from __future__ import annotations

import argparse
import random
from functools import partial

import pytest
import torch
import yaml

from astra.cli import main
from astra.data.synthetic import sentence, write_local_corpus
from astra.data.tokenizer import Tokenizer, TokenizerTrainConfig, extend_tokenizer, train_tokenizer
from astra.model import AstraModel, preset
from astra.train.vocabulary import transfer_vocabulary, vocabulary_keys


def _texts(language: str, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [sentence(language, rng, 5) for _ in range(n)]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_extend_keeps_every_base_id_and_encodes_the_new_script(tmp_path, model_type):
    base = train_tokenizer({"en_us": _texts("en_us", 40)}, tmp_path / "base.model",
                           TokenizerTrainConfig(vocab_size=40, model_type=model_type, language_tags=True))
    ru = _texts("ru_ru", 40)
    assert all(base.unk_id in base.encode(s) for s in ru)  # Cyrillic is unencodable before
    ext, report = extend_tokenizer(tmp_path / "base.model", {"ru_ru": ru}, tmp_path / "ext.model", new_pieces=40)
    assert [ext.id_to_piece(i) for i in range(base.vocab_size)] == [
        base.id_to_piece(i) for i in range(base.vocab_size)
    ]
    assert ext.vocab_size == base.vocab_size + report.added_pieces + 1 and report.added_tags == ["<lang:ru_ru>"]
    assert ext.language_ids["en_us"] == base.language_ids["en_us"] and ext.language_id("ru_ru") == ext.vocab_size - 1
    assert report.unencodable_before == {"ru_ru": 40} and report.unencodable_after == {"ru_ru": 0}
    for s in ru[:5]:
        assert ext.decode([ext.language_id("ru_ru"), *ext.encode(s)]) == s
    for s in _texts("en_us", 20, seed=1):  # the base language still encodes as before
        assert ext.encode(s) == base.encode(s)


def test_tokenizer_extend_cli_and_errors(tmp_path, capsys):
    base = tmp_path / "base.model"
    train_tokenizer({"en_us": _texts("en_us", 40)}, base, TokenizerTrainConfig(vocab_size=40))
    text = tmp_path / "ru.txt"
    text.write_text("\n".join(_texts("ru_ru", 30)) + "\n", encoding="utf-8")
    out = tmp_path / "ext.model"
    assert main(["tokenizer", "extend", "--base", str(base), "--text", f"ru_ru={text}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| ru_ru | 30 | 30 | 0 |" in printed and "finetune.tokenizer=" in printed
    assert Tokenizer(out).vocab_size > Tokenizer(base).vocab_size
    assert main(["tokenizer", "extend", "--base", str(text), "--text", f"ru_ru={text}", "--out", str(out)]) == 2
    assert "astra tokenizer" in capsys.readouterr().err


def test_transfer_vocabulary_copies_shared_rows_by_piece():
    cfg = preset("tiny")
    old_pieces = ["<blank>", "<unk>", "<sos>", "<eos>", "a", "b", "c"]
    new_pieces = ["<blank>", "<unk>", "<sos>", "<eos>", "c", "a", "x", "y"]
    torch.manual_seed(0)
    old = AstraModel(cfg, len(old_pieces))
    new = AstraModel(cfg, len(new_pieces))
    keys = vocabulary_keys(new)
    assert "aligner.output.weight" in keys and "text_encoder.embedding.weight" in keys
    assert "aligner.output.bias" in keys and not any(k.startswith("speech_encoder.") for k in keys)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    state, report = transfer_vocabulary(old.state_dict(), new, old_pieces, new_pieces)
    assert (report.copied, report.new, report.dropped) == (6, ["x", "y"], 1)
    for k in keys:
        for new_id, old_id in [(0, 0), (3, 3), (4, 6), (5, 4)]:
            assert torch.equal(state[k][new_id], old.state_dict()[k][old_id]), k
        assert torch.equal(state[k][6:], fresh[k][6:]), k
    assert all(torch.equal(state[k], v) for k, v in old.state_dict().items() if k not in keys)
    new.load_state_dict(state)
    with pytest.raises(ValueError, match="rows"):
        transfer_vocabulary(old.state_dict(), new, old_pieces[:-1], new_pieces)


@pytest.mark.slow
def test_latin_pretrained_model_finetunes_on_cyrillic_with_nothing_skipped(tmp_path, caplog):
    from astra.cli.train import _load
    from astra.train import checkpoint as ckpt
    from astra.train.build import build_parts
    from astra.train.trainer import Trainer, TrainingError

    corpus = write_local_corpus(tmp_path / "corpus", languages=("en_us", "ru_ru"),
                                splits={"train": 6, "validation": 2}, seconds=(1.0, 1.5))
    base = tmp_path / "en.model"
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--languages", "en_us",
                 "--vocab-size", "40", "--out", str(base)]) == 0
    pre = {
        "model": dict(preset("tiny").__dict__),
        "data": {"corpora": [str(corpus)], "languages": ["en_us"], "tokenizer": str(base),
                 "max_batch_seconds": 5.0},
        "losses": {"ramps": {}},
        "run": {"out_dir": str(tmp_path / "pre"), "max_steps": 2, "save_every": 2, "validate_every": 0},
    }
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(pre))
    assert main(["pretrain", "--config", str(tmp_path / "pre.yaml")]) == 0
    exported = tmp_path / "exported"
    assert main(["export", "--checkpoint", str(tmp_path / "pre"), "--out", str(exported)]) == 0

    ext = tmp_path / "en_ru.model"
    assert main(["tokenizer", "extend", "--base", str(base), "--corpus", str(corpus), "--languages", "ru_ru",
                 "--new-pieces", "40", "--out", str(ext)]) == 0
    ft = {
        "data": {"corpora": [str(corpus)], "languages": ["ru_ru"], "max_batch_seconds": 5.0},
        "losses": {"ramps": {}},
        "optim": {"warmup_steps": 1},
        "run": {"out_dir": str(tmp_path / "ft"), "max_steps": 2, "save_every": 2, "validate_every": 0},
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(ft))

    def trainer(*overrides):
        args = argparse.Namespace(config=str(tmp_path / "ft.yaml"), overrides=list(overrides), out_dir=None)
        cfg = _load(args, exported)
        t = Trainer(cfg, partial(build_parts, finetune=True), init=exported)
        t._setup()
        return t

    # before: the pretrained tokenizer cannot encode Cyrillic, every utterance is skipped
    with pytest.raises(TrainingError, match=r"skipped 6 \(unencodable_text 6\)"):
        trainer(f"run.out_dir={tmp_path / 'before'}")

    # another vocabulary through data.tokenizer alone: the shape error points to finetune.tokenizer
    with pytest.raises(TrainingError, match="needs finetune.tokenizer"):
        trainer(f"data.tokenizer={ext}", f"run.out_dir={tmp_path / 'shapes'}")
    with pytest.raises(ValueError, match="data.tokenizer .* and finetune.tokenizer .* differ"):
        trainer(f"data.tokenizer={base}", f"finetune.tokenizer={ext}")

    caplog.set_level("INFO", logger="astra")
    t = trainer(f"finetune.tokenizer={ext}")
    assert f"{Tokenizer(base).vocab_size} loaded from the pretrained rows" in caplog.text
    skipped = t.stream.skip_summary()["speech"]
    assert not skipped.get("unencodable_text"), skipped
    old, new = Tokenizer(base), Tokenizer(ext)
    pretrained = ckpt.read_model_state(exported)
    own = t.model.state_dict()
    assert t.vocabulary_transfer.copied == old.vocab_size and t.vocabulary_transfer.dropped == 0
    assert len(t.vocabulary_transfer.new) == new.vocab_size - old.vocab_size > 0
    for k in t.vocabulary_transfer.tensors:
        assert torch.equal(own[k][: old.vocab_size], pretrained[k]), k
    others = [k for k in own if k not in t.vocabulary_transfer.tensors]
    assert others and all(torch.equal(own[k], pretrained[k]) for k in others)

    # and the real command fine-tunes with it
    assert main(["finetune", "--config", str(tmp_path / "ft.yaml"), "--init", str(exported),
                 "--set", f"finetune.tokenizer={ext}", "--set", f"run.out_dir={tmp_path / 'ft2'}"]) == 0
    final = ckpt.read_trainer_state(tmp_path / "ft2" / "checkpoints" / "step-00000002")
    assert final["step"] == 2
    saved = tmp_path / "ft2" / "checkpoints" / "step-00000002" / "tokenizer.model"
    assert Tokenizer(saved).vocab_size == new.vocab_size
