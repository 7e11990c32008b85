"""Bad input: clear ValueErrors or counted drops, never a deep crash or a silent skip."""

from __future__ import annotations

import logging

import pytest
import torch

from astra.model import AstraModel, preset

VOCAB = 20


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AstraModel(preset("tiny"), VOCAB)


def _batch(frames, token_lens, feature_dim=80):
    b = len(frames)
    tokens = torch.zeros(b, max(max(token_lens), 1), dtype=torch.long)
    for i, n in enumerate(token_lens):
        tokens[i, :n] = torch.arange(4, 4 + n) % VOCAB
    return dict(kind="speech", features=torch.randn(b, max(max(frames), 1), feature_dim),
                feature_lens=torch.tensor(frames), tokens=tokens, token_lens=torch.tensor(token_lens))


def test_empty_transcript_is_a_counted_drop(model, caplog):
    with caplog.at_level(logging.WARNING):
        out = model.forward_speech(_batch([100, 100], [3, 0]))
    assert out.counts["dropped/empty_transcript"] == 1 and out.counts["utterances"] == 1
    assert "empty transcript" in caplog.text
    text = model.forward_text(dict(kind="text", tokens=torch.tensor([[5, 6], [0, 0]]), token_lens=torch.tensor([2, 0])))
    assert text.counts["dropped/empty_transcript"] == 1 and text.counts["utterances"] == 1


def test_zero_length_and_too_short_audio_are_counted_drops(model):
    minimum = model.speech_encoder.subsampling.min_input_frames()
    out = model.forward_speech(_batch([100, 0, minimum - 1], [3, 2, 2]))
    assert out.counts["dropped/empty_audio"] == 1
    assert out.counts["dropped/too_short_audio"] == 1
    assert out.counts["utterances"] == 1
    sum(out.losses.values()).backward()


def test_transcript_longer_than_the_encoder_output_is_dropped_from_the_aligner_only(model):
    # 20 frames -> 4 encoder frames; 6 tokens + <eos> = 7 > 4
    out = model.forward_speech(_batch([120, 20], [3, 6]))
    assert out.counts["dropped/too_long"] == 1
    assert out.counts["aligner_tokens"] == 4  # only the first utterance (3 + <eos>)
    assert out.counts["dropped/ctc_too_short"] == 1
    assert all(torch.isfinite(v) for v in out.losses.values())


def test_all_dropped_batch_gives_zero_losses_that_support_backward(model):
    out = model.forward_speech(_batch([0, 100], [3, 0]))
    assert out.counts["utterances"] == 0
    assert set(out.losses) == {"aligner", "inter_ctc", "rnnt", "rnnt_simple", "consistency", "aligned_consistency"}
    total = sum(out.losses.values())
    assert total.item() == 0.0
    total.backward()


def test_wrong_feature_dim_and_malformed_batches_raise_clear_errors(model):
    with pytest.raises(ValueError, match="feature dim 40"):
        model.forward_speech(_batch([100], [3], feature_dim=40))
    with pytest.raises(ValueError, match="feature dim 40"):
        model.decode(_batch([100], [3], feature_dim=40))
    bad = _batch([100], [3])
    bad["tokens"][0, 0] = VOCAB + 5
    with pytest.raises(ValueError, match="outside"):
        model.forward_speech(bad)
    bad = _batch([100], [3])
    bad["feature_lens"] = torch.tensor([500])
    with pytest.raises(ValueError, match="feature_lens"):
        model.forward_speech(bad)
    with pytest.raises(ValueError, match="no 'tokens'"):
        model.forward_text(dict(kind="text"))
    bad = _batch([100], [3])
    bad["tokens"] = bad["tokens"].float()
    with pytest.raises(ValueError, match=r"batch\['tokens'\] must be an integer tensor"):
        model.forward_speech(bad)
    bad = _batch([100], [3])
    bad["feature_lens"] = [100]
    with pytest.raises(ValueError, match=r"batch\['feature_lens'\] must be a torch.Tensor"):
        model.forward_speech(bad)
    with pytest.raises(ValueError, match="2 feature rows but 1 token rows"):
        model.alignment_occupancy({**_batch([100, 100], [3, 3]), **{k: v[:1] for k, v in _batch([100], [3]).items()
                                                                    if k.startswith("token")}})
    with pytest.raises(ValueError, match="transcribe_long"):
        model.transcribe_long(torch.randn(100, 40))
    with pytest.raises(ValueError, match="fewer than"):
        model.transcribe_long(torch.randn(3, 80))


def test_decoding_rejects_too_short_audio_and_unknown_methods(model):
    model.eval()
    with pytest.raises(ValueError, match="fewer than"):
        model.decode(_batch([100, 3], [1, 1]))
    with pytest.raises(ValueError, match="decode method"):
        model.decode(_batch([100], [1]), method="viterbi")
    no_heads = AstraModel(preset("tiny", rnnt_head=False, consistency=False, inter_ctc_layer=None), VOCAB).eval()
    with pytest.raises(ValueError, match="rnnt_head"):
        no_heads.decode(_batch([100], [1]), method="rnnt_greedy")
    with pytest.raises(ValueError, match="ctc"):
        no_heads.decode(_batch([100], [1]), method="ctc_greedy")


def test_tiny_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="vocab_size"):
        AstraModel(preset("tiny"), 4)


def test_validation_skips_and_counts_a_50ms_clip(model, caplog):
    """``model.decode`` refuses the clip; validation decodes the rest and counts it."""
    from astra.features import fbank
    from astra.train.sections import LossConfig
    from astra.train.validation import validate

    g = torch.Generator().manual_seed(0)
    clips = [fbank(torch.randn(n, generator=g) * 0.1, 16000) for n in (19200, 800)]  # 1.2 s, 50 ms
    assert clips[1].size(0) < model.speech_encoder.subsampling.min_input_frames()
    features = torch.zeros(2, clips[0].size(0), 80)
    for i, c in enumerate(clips):
        features[i, : c.size(0)] = c
    batch = dict(_batch([c.size(0) for c in clips], [3, 2]), features=features,
                 keys=["long", "short"], languages=["en_us"] * 2, texts=["a b", "c"])
    with pytest.raises(ValueError, match="cannot decode"):
        model.decode(batch)

    class Words:
        def decode(self, ids):
            return " ".join(map(str, ids))

    with caplog.at_level(logging.WARNING, logger="astra.train.validation"):
        result = validate(model, [batch], LossConfig(), Words())
    assert result["skipped/too_short_audio"] == 1 and "wer/en_us" in result
    assert "1 utterance(s) shorter than 7 feature frames were not decoded" in caplog.text
    assert "short" in caplog.text
