"""A tiny model and data stream with the AstraModel / train-stream API, for trainer tests.

The model has dropout (so RNG restore matters), a CMVN buffer, per-utterance mean losses
(so a DDP average over equal-size batches equals one process accumulating them), turns a
batch with ``poison=True`` into a NaN loss and has attention maps whose second layer
reverses time. The stream shuffles per epoch with its own seed,
shards global batches by rank and records the keys it yields.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

import torch

from astra.train.sections import FinetuneConfig, LossConfig, OptimConfig, RunConfig
from astra.train.trainer import TrainingParts

F = 6  # feature dim
V = 11  # vocab


@dataclass
class FakeModelConfig:
    dim: int = 8
    dropout: float = 0.2
    min_input_frames: int = 1  # decode() refuses shorter utterances, like AstraModel.decode


@dataclass
class FakeDataConfig:
    utterances: int = 24
    batch_size: int = 2
    text_every: int = 3  # every 3rd global batch is a text batch; 0 = none
    poison_batches: list[int] = field(default_factory=list)  # global batch indices -> NaN loss
    interrupt_at_batch: int = -1  # raise a signal when this global batch index (epoch 0) is made
    interrupt_signal: str = "SIGINT"
    empty_batches: list[int] = field(default_factory=list)  # global batch indices -> B = 0


@dataclass
class FakeTrainConfig:
    model: FakeModelConfig = field(default_factory=FakeModelConfig)
    data: FakeDataConfig = field(default_factory=FakeDataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class FakeOutput:
    losses: dict
    counts: dict
    idle_loss: torch.Tensor | None = None


class NoSubsampling(torch.nn.Module):
    """``output_lengths`` of a front end that keeps every frame (T' = T)."""

    def __init__(self, min_frames: int = 1):
        super().__init__()
        self.min_frames = min_frames

    def output_lengths(self, lengths):
        return lengths

    def min_input_frames(self) -> int:
        return self.min_frames


class FakeModel(torch.nn.Module):
    def __init__(self, cfg: FakeModelConfig, vocab_size: int = V):
        super().__init__()
        self.speech_encoder = torch.nn.Linear(F, cfg.dim)
        self.speech_encoder.subsampling = NoSubsampling(cfg.min_input_frames)
        self.text_encoder = torch.nn.Embedding(vocab_size, cfg.dim)
        self.shared = torch.nn.Linear(cfg.dim, cfg.dim)
        self.head = torch.nn.Linear(cfg.dim, vocab_size)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.register_buffer("feature_mean", torch.zeros(F))
        self.register_buffer("feature_std", torch.ones(F))
        self.identity_calls: list[bool] = []

    def set_feature_stats(self, mean, std):
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def set_identity_attention(self, enabled: bool):
        self.identity_calls.append(enabled)

    def _loss(self, h, batch):
        logits = self.head(self.dropout(torch.tanh(self.shared(h))))  # [B, V]
        per_utt = torch.nn.functional.cross_entropy(logits, batch["tokens"][:, 0], reduction="none")
        loss = per_utt.mean()
        if batch.get("poison"):
            loss = loss * float("nan")
        return loss

    def forward(self, batch):
        if batch["tokens"].shape[0] == 0:  # every utterance failed to decode: join the all-reduce
            zero = 0.0 * sum(p.sum() for p in self.parameters())
            return FakeOutput(losses={}, counts={}, idle_loss=zero)
        return self.forward_speech(batch) if batch.get("kind", "speech") == "speech" else self.forward_text(batch)

    def forward_speech(self, batch):
        x = (batch["features"] - self.feature_mean) / self.feature_std
        h = self.speech_encoder(x).mean(dim=1)  # [B, D]
        loss = self._loss(h, batch)
        return FakeOutput(
            losses={"aligner": loss, "inter_ctc": 0.5 * loss},
            counts={"utterances": float(len(batch["keys"])), "dropped/too_long": 0.0, "mean/fake_norm": 2.0},
        )

    def forward_text(self, batch):
        h = self.text_encoder(batch["tokens"]).mean(dim=1)
        return FakeOutput(losses={"text_aligner": self._loss(h, batch)}, counts={})

    def decode(self, batch, method="aligner_greedy", beam=4, ctc_weight=0.3):
        if bool((batch["feature_lens"] < self.speech_encoder.subsampling.min_frames).any()):
            raise ValueError("cannot decode: utterance(s) shorter than the front end's minimum")
        x = (batch["features"] - self.feature_mean) / self.feature_std
        logits = self.head(torch.tanh(self.shared(self.speech_encoder(x).mean(dim=1))))
        return [[int(i)] for i in logits.argmax(-1)]

    def attention_maps(self, batch):
        b, t = batch["features"].shape[:2]
        eye = torch.eye(t).expand(b, 2, t, t)
        return {"layer1": eye, "layer2": eye.flip(-1)}  # layer2 reverses time


def _utterances(n: int):
    g = torch.Generator().manual_seed(7)
    utts = []
    for i in range(n):
        feats = torch.randn(5, F, generator=g) + 0.5
        token = int(torch.randint(4, V, (1,), generator=g))
        utts.append((f"utt{i:03d}", feats, token))
    return utts


class FakeStream:
    """Global batches in a per-epoch shuffled order, batch i given to rank i % world_size."""

    def __init__(self, cfg: FakeDataConfig, rank: int, world_size: int, seed: int):
        self.cfg = cfg
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.utts = _utterances(cfg.utterances)
        self.epoch = 0
        self.position = 0  # global batch index of the next batch of this rank
        self.seen: list[tuple[int, str]] = []  # (epoch, key) yielded

    def set_epoch(self, epoch: int):
        self.epoch = epoch
        self.position = 0

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.epoch = state["epoch"]
        self.position = state["position"]

    def skip_summary(self):
        return {}

    def _global_batches(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.utts), generator=g).tolist()
        b = self.cfg.batch_size
        return [order[i : i + b] for i in range(0, len(order) - b + 1, b)]

    def _make(self, index: int, members: list[int]):
        utts = [self.utts[i] for i in members]
        if index in self.cfg.empty_batches:  # every utterance failed to decode
            utts = []
        text = self.cfg.text_every and index % self.cfg.text_every == self.cfg.text_every - 1
        text = text and index not in self.cfg.empty_batches
        tokens = torch.tensor([[u[2], 5] for u in utts], dtype=torch.int64).reshape(len(utts), 2)
        batch = {
            "tokens": tokens,
            "token_lens": torch.full((len(utts),), 2),
            "keys": [u[0] for u in utts],
            "languages": ["xx"] * len(utts),
            "texts": [str(u[2]) for u in utts],
            "poison": index in self.cfg.poison_batches,
        }
        if text:
            batch["kind"] = "text"
        else:
            batch.update(
                kind="speech",
                features=torch.stack([u[1] for u in utts]) if utts else torch.zeros(0, 5, F),
                feature_lens=torch.full((len(utts),), 5),
                durations=torch.full((len(utts),), 0.05),
            )
        return batch

    def __iter__(self):
        batches = self._global_batches()
        while self.position * self.world_size + self.rank < len(batches):
            index = self.position * self.world_size + self.rank
            self.position += 1
            if index == self.cfg.interrupt_at_batch and self.epoch == 0:
                signal.raise_signal(getattr(signal, self.cfg.interrupt_signal))
            batch = self._make(index, batches[index])
            self.seen.extend((self.epoch, k) for k in batch["keys"])
            yield batch


class FakeTokenizer:
    def decode(self, ids):
        return " ".join(str(i) for i in ids)


def build_fake_parts(cfg: FakeTrainConfig, rank: int, world_size: int) -> TrainingParts:
    model = FakeModel(cfg.model)
    stream = FakeStream(cfg.data, rank, world_size, cfg.run.seed)
    eval_stream = FakeStream(FakeDataConfig(utterances=6, text_every=0), rank, world_size, seed=99)

    def stats():
        feats = torch.cat([u[1] for u in stream.utts])
        return feats.mean(0), feats.std(0)

    tokenizer_path = Path(cfg.run.out_dir).with_name("fake_tokenizer.model")
    tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer_path.write_text("fake sentencepiece model")
    return TrainingParts(
        model=model,
        train_stream=stream,
        tokenizer=FakeTokenizer(),
        tokenizer_path=tokenizer_path,
        eval_batches=lambda: list(eval_stream),
        feature_stats=stats,
    )
