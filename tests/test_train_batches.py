"""The parts of a run on their own: the batch iterator, the concatenating training stream,
validation's loss weights, and the trainer's attributes."""

from __future__ import annotations

import pytest
import torch
from train_fakes import FakeDataConfig, FakeModel, FakeModelConfig, FakeStream

from astra.data.config import DataConfig
from astra.data.stream import build_train_stream
from astra.data.synthetic import write_local_corpus
from astra.data.tokenizer import TokenizerTrainConfig, train_tokenizer
from astra.data.training_text import collect_training_text
from astra.errors import TrainingError
from astra.train.batches import TrainBatches
from astra.train.sections import LossConfig, RampConfig
from astra.train.validation import validate


def test_batches_roll_epochs_over_and_resume_where_they_stopped():
    cfg = FakeDataConfig(utterances=8, batch_size=2, text_every=0)  # 4 batches an epoch
    straight = TrainBatches(FakeStream(cfg, 0, 1, seed=3), "cpu")
    want = [next(straight)["keys"] for _ in range(10)]
    assert straight.epoch == 2 and straight.batches_in_epoch == 2

    first = TrainBatches(FakeStream(cfg, 0, 1, seed=3), "cpu")
    got = [next(first)["keys"] for _ in range(5)]
    state = first.state_dict()
    second = TrainBatches(FakeStream(cfg, 0, 1, seed=3), "cpu")
    second.load_state_dict(state)
    got += [next(second)["keys"] for _ in range(5)]
    assert got == want

    empty = TrainBatches(FakeStream(FakeDataConfig(utterances=1, batch_size=2), 0, 1, seed=3), "cpu")
    with pytest.raises(TrainingError, match="gave no batch in epoch 0"):
        next(empty)


def test_batches_keep_the_last_speech_batch_only_when_asked():
    cfg = FakeDataConfig(utterances=8, batch_size=2, text_every=2)  # speech, text, speech, text
    kept = TrainBatches(FakeStream(cfg, 0, 1, seed=3), "cpu", keep_last_speech=True)
    first = next(kept)
    next(kept)  # a text batch leaves it alone
    assert kept.last_speech_batch is first
    assert TrainBatches(FakeStream(cfg, 0, 1, seed=3), "cpu").last_speech_batch is None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_local_corpus(tmp_path_factory.mktemp("corpus"), languages=("en_us",),
                              splits={"train": 8}, seconds=(0.8, 1.2))
    tok = train_tokenizer(collect_training_text(DataConfig(corpora=[str(root)]))[0], root / "tok.model",
                          TokenizerTrainConfig(vocab_size=40, character_coverage=1.0))
    return root, tok


def test_the_training_stream_concatenates_utterances_reproducibly(corpus):
    root, tok = corpus
    cfg = DataConfig(corpora=[str(root)], max_batch_seconds=4.0, num_buckets=1)
    plain = [b for b in build_train_stream(cfg, tok, seed=5)]
    joined = [b for b in build_train_stream(cfg, tok, seed=5, concat_fraction=1.0)]
    assert len(plain) == len(joined)
    for a, b in zip(plain, joined, strict=True):
        pairs = len(a["keys"]) // 2
        assert len(b["keys"]) == len(a["keys"]) - pairs
        assert sum("+" in k for k in b["keys"]) == pairs
        assert sorted(k for key in b["keys"] for k in key.split("+")) == sorted(a["keys"])
        assert int(b["feature_lens"].sum()) == int(a["feature_lens"].sum())
        assert int(b["token_lens"].sum()) == int(a["token_lens"].sum())
        torch.testing.assert_close(b["durations"].sum(), a["durations"].sum())
    again = [b["keys"] for b in build_train_stream(cfg, tok, seed=5, concat_fraction=1.0)]
    assert again == [b["keys"] for b in joined]  # the pairs are a function of seed, epoch, keys
    with pytest.raises(ValueError, match="concat_fraction"):
        build_train_stream(cfg, tok, concat_fraction=1.5)


class ExtraLossModel(FakeModel):
    """The fake model with one more speech loss, ``mystery`` (a copy of ``aligner``)."""

    def forward_speech(self, batch):
        out = super().forward_speech(batch)
        out.losses["mystery"] = out.losses["aligner"]
        return out


def test_validation_reports_the_configured_unramped_weights():
    model = ExtraLossModel(FakeModelConfig(dropout=0.0))
    batches = list(FakeStream(FakeDataConfig(utterances=4, text_every=0), 0, 1, seed=1))
    ramped = LossConfig(aligner=1.0, inter_ctc=0.5, other={"mystery": 0.25},
                        ramps={"inter_ctc": RampConfig(start=1000, steps=10)})
    result = validate(model, batches, ramped)
    want = result["loss/aligner"] + 0.5 * result["loss/inter_ctc"] + 0.25 * result["loss/mystery"]
    assert result["loss"] == pytest.approx(want)
    # as in training, a loss without a weight is an error (it used to count as weight 0)
    with pytest.raises(ValueError, match="losses.other.mystery"):
        validate(model, batches, LossConfig())
