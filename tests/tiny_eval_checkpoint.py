"""A tiny trained checkpoint + two-language local corpus for the evaluation/plot tests.

Built once per test process (memoised): a synthetic corpus (en_us: WER, cmn_hans_cn: CER),
a SentencePiece tokenizer on its transcripts, a ``tiny`` preset AstraModel trained for a
few dozen AdamW steps on the train split, saved in the checkpoint format that
``astra.inference.load_model`` reads. The numbers it produces only need to
be consistent, not good.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = ("en_us", "cmn_hans_cn")
TRAIN_STEPS = 30


@dataclass
class TinySetup:
    checkpoint: Path
    corpus: Path
    audio: Path  # one test-split audio file
    long_audio: Path  # a 5 s file (longer than a 2 s chunk)


_CACHE: dict[str, TinySetup] = {}


def _train(model, batches, steps: int) -> None:
    import torch

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(steps):
        batch = batches[step % len(batches)]
        out = model.forward_speech(batch)
        loss = sum(out.losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def build_tiny_setup(root: Path) -> TinySetup:
    """Write corpus, tokenizer and checkpoint under ``root`` (see module doc)."""
    import numpy as np
    import soundfile as sf
    import torch

    from astra.config import save_config
    from astra.data import build_eval_batches
    from astra.data.synthetic import tone, write_local_corpus
    from astra.data.tokenizer import TokenizerTrainConfig, train_tokenizer
    from astra.model import AstraModel, preset
    from astra.text_norm import normalize_text
    from astra.train.checkpoint import (
        CONFIG_FILE,
        MODEL_FILE,
        TOKENIZER_FILE,
        TRAINER_STATE,
        save_model_weights,
    )
    from astra.train.config import TrainConfig

    torch.manual_seed(0)
    corpus = write_local_corpus(
        root / "corpus", LANGUAGES, splits={"train": 6, "test": 3}, seconds=(1.0, 2.0),
        formats=("wav", "flac"), sample_rates=(16000, 8000),
    )
    sentences = {}
    for lang in LANGUAGES:
        lines = (corpus / lang / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
        sentences[lang] = [normalize_text(line.split("\t")[1]) for line in lines]
    ckpt = root / "run" / "checkpoints" / "step-00000030"
    ckpt.mkdir(parents=True)
    tokenizer = train_tokenizer(
        sentences, ckpt / TOKENIZER_FILE, TokenizerTrainConfig(vocab_size=60, alpha=1.0)
    )
    cfg = TrainConfig()
    cfg.model = preset("tiny", spec_augment=False, dropout=0.0)
    cfg.data.corpora = [str(corpus)]
    cfg.data.max_batch_seconds = 8.0
    model = AstraModel(cfg.model, tokenizer.vocab_size)
    batches = list(build_eval_batches(cfg.data, tokenizer, "train"))
    _train(model, batches, TRAIN_STEPS)
    save_config(cfg, ckpt / CONFIG_FILE)
    save_model_weights(model, ckpt / MODEL_FILE)
    (ckpt / TRAINER_STATE).write_text(json.dumps({"step": TRAIN_STEPS}), encoding="utf-8")
    audio = sorted((corpus / "en_us" / "audio").glob("test_*"))[0]
    long_audio = root / "long.wav"
    sf.write(str(long_audio), tone(5.0, 22050, 2, seed=7).astype(np.float32), 22050)
    return TinySetup(ckpt, corpus, audio, long_audio)


@contextmanager
def one_thread():
    """Run torch on one thread (tiny models run faster on one thread of a shared machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_setup(tmp_path_factory) -> TinySetup:
    """The memoised :class:`TinySetup` of this test process."""
    if "setup" not in _CACHE:
        with one_thread():
            _CACHE["setup"] = build_tiny_setup(tmp_path_factory.mktemp("tiny_eval"))
    return _CACHE["setup"]
