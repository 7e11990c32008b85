"""Front end, attention, Conformer masking, identity attention, presets, config checks."""

from __future__ import annotations

import pytest
import torch

from astra.model import AstraModel, ModelConfig, preset
from astra.model.attention import MultiHeadSelfAttention, relative_shift
from astra.model.frontend import Conv2dSubsampling, FrequencyWarp, SpecAugment

VOCAB = 20


def _model(**overrides) -> AstraModel:
    torch.manual_seed(0)
    return AstraModel(preset("tiny", **overrides), VOCAB).eval()


@pytest.mark.parametrize("position_encoding", ["rope", "rel_pos"])
def test_valid_frames_do_not_change_when_padding_is_added(position_encoding):
    model = _model(position_encoding=position_encoding)
    torch.manual_seed(1)
    features = torch.randn(1, 90, 80)
    alone, lens, _ = model.forward_encoder(features, torch.tensor([90]), (0, 1))
    padded = torch.cat([features, torch.randn(1, 70, 80) * 5], dim=1)  # garbage padding
    other = torch.randn(1, 160, 80)
    batch = torch.cat([padded, other])
    together, lens2, layers = model.forward_encoder(batch, torch.tensor([90, 160]), (0, 1))
    n = int(lens[0])
    assert int(lens2[0]) == n and together.size(1) > n
    torch.testing.assert_close(together[0, :n], alone[0], atol=1e-5, rtol=1e-4)
    assert torch.count_nonzero(together[0, n:]) == 0
    # the text path too
    tokens = torch.tensor([[5, 6, 7, 0, 0, 0, 0]])
    text_alone, _, _ = model.forward_text_encoder(tokens[:, :3], torch.tensor([3]))
    text_batch = torch.tensor([[5, 6, 7, 9, 9, 9, 9], [4, 5, 6, 7, 8, 9, 10]])
    text_both, _, _ = model.forward_text_encoder(text_batch, torch.tensor([3, 7]))
    torch.testing.assert_close(text_both[0, :4], text_alone[0], atol=1e-5, rtol=1e-4)


def test_rotary_rotates_pairs_i_and_i_plus_half_and_scores_depend_on_relative_position():
    import math

    from astra.model.attention import apply_rotary, rotary_tables

    torch.manual_seed(0)
    t, d = 9, 8
    cos, sin = rotary_tables(t, d, torch.device("cpu"), torch.float32)
    q, k = torch.randn(1, 1, 1, d).expand(1, 1, t, d), torch.randn(1, 1, 1, d).expand(1, 1, t, d)
    rq, rk = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    for pos in (0, 3, 8):  # the definition: pair (i, i + d/2) turned by pos * 10000^(-2i/d)
        for i in range(d // 2):
            angle = pos * 10000.0 ** (-2 * i / d)
            x1, x2 = q[0, 0, pos, i], q[0, 0, pos, i + d // 2]
            want = (x1 * math.cos(angle) - x2 * math.sin(angle), x2 * math.cos(angle) + x1 * math.sin(angle))
            got = (rq[0, 0, pos, i], rq[0, 0, pos, i + d // 2])
            assert torch.allclose(torch.stack(got), torch.tensor(want), atol=1e-5)
    scores = rq[0, 0] @ rk[0, 0].T  # [T', T']: a function of j - i only
    for shift in (-3, 0, 2):
        diagonal = torch.diagonal(scores, shift)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-4)
    assert rotary_tables(t, d, torch.device("cpu"), torch.float32)[0] is cos  # cached


def test_rotary_tables_first_built_in_inference_mode_serve_training():
    # an evaluation (torch.inference_mode) can fill the cache before a training step of the same
    # length; the step saves the tables for backward, which inference tensors refuse
    from astra.model.attention import apply_rotary, rotary_tables

    length = 37  # a length no other test uses, so the inference-mode call builds the tables
    with torch.inference_mode():
        cos, sin = rotary_tables(length, 8, torch.device("cpu"), torch.float32)
    assert not cos.is_inference() and not sin.is_inference()
    x = torch.randn(1, 1, length, 8, requires_grad=True)
    apply_rotary(x, cos, sin).sum().backward()
    assert x.grad is not None


def test_identity_attention_warm_up_gives_identity_attention():
    model = _model()
    features = torch.randn(2, 100, 80)
    batch = dict(features=features, feature_lens=torch.tensor([100, 80]))
    model.set_identity_attention(True)
    maps = model.attention_maps(batch)
    assert set(maps) == {"speech.0", "shared.0", "shared.1", "shared.2"}
    for weights in maps.values():
        eye = torch.eye(weights.size(-1)).expand_as(weights)
        assert torch.equal(weights, eye)
    # the attention output at a frame depends on that frame only
    attn = model.shared_encoder.blocks[0].attn
    x = torch.randn(1, 6, 64)
    pad = torch.zeros(1, 6, dtype=torch.bool)
    y = attn(x, pad)
    x2 = x.clone()
    x2[0, 3:] = torch.randn(3, 64)
    torch.testing.assert_close(attn(x2, pad)[0, :3], y[0, :3])
    model.set_identity_attention(False)
    maps = model.attention_maps(batch)
    assert not torch.equal(maps["shared.0"], torch.eye(maps["shared.0"].size(-1)).expand_as(maps["shared.0"]))


@pytest.mark.parametrize("position_encoding", ["rope", "rel_pos"])
def test_attention_weights_path_matches_the_fast_path(position_encoding):
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, 2, 0.0, position_encoding).eval()
    x = torch.randn(2, 7, 16)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    fast = attn(x, pad)
    assert attn.last_weights is None
    attn.store_weights = True
    slow = attn(x, pad)
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=1e-4)
    weights = attn.last_weights
    assert weights.shape == (2, 2, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 7))
    assert torch.count_nonzero(weights[1, :, :, 4:]) == 0


def test_attention_maps_are_row_stochastic_and_switched_off_afterwards():
    model = _model()
    batch = dict(features=torch.randn(2, 100, 80), feature_lens=torch.tensor([100, 60]))
    maps = model.attention_maps(batch)
    tprime = model.speech_encoder.subsampling.output_lengths(torch.tensor([100, 60])).tolist()
    for weights in maps.values():
        assert weights.shape == (2, 2, tprime[0], tprime[0])
        assert torch.count_nonzero(weights[1, :, :, tprime[1]:]) == 0
    assert all(not b.attn.store_weights for b in model.shared_encoder.blocks)
    text_maps = model.attention_maps(dict(kind="text", tokens=torch.tensor([[5, 6, 7]]), token_lens=torch.tensor([3])))
    assert {"text.0", "shared.0"} <= set(text_maps) and text_maps["text.0"].shape == (1, 2, 4, 4)


def test_relative_shift_indexes_relative_positions():
    t = 4
    scores = torch.randn(1, 1, t, 2 * t - 1)  # column k <-> relative position (t-1) - k
    shifted = relative_shift(scores)
    for i in range(t):
        for j in range(t):
            assert shifted[0, 0, i, j] == scores[0, 0, i, (t - 1) - (i - j)]


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_subsampling_lengths_match_the_convolutions(factor):
    sub = Conv2dSubsampling(80, 32, factor, 8)
    for frames in (sub.min_input_frames(), 57, 100, 301):
        out, lens = sub(torch.randn(1, frames, 80), torch.tensor([frames]))
        assert out.shape == (1, int(lens[0]), 32)
    assert int(sub.output_lengths(torch.tensor([sub.min_input_frames()]))[0]) == 1
    assert int(sub.output_lengths(torch.tensor([sub.min_input_frames() - 1]))[0]) == 0
    assert int(sub.output_lengths(torch.tensor([1000]))[0]) in range(1000 // factor - 3, 1000 // factor + 1)


def test_spec_augment_only_in_training_and_only_on_valid_frames():
    torch.manual_seed(0)
    aug = SpecAugment(2, 10, 3, 20, 0.2)
    x = torch.randn(2, 120, 80) + 10.0
    x[1, 60:] = 0.0
    lens = torch.tensor([120, 60])
    aug.eval()
    assert torch.equal(aug(x, lens), x)
    aug.train()
    y = aug(x, lens)
    assert (y[:, :60] == 0).any()
    assert torch.count_nonzero(y[1, 60:]) == 0
    assert (y != x).any()


def test_frequency_warp_stretches_the_mel_axis_of_valid_frames_in_training_only():
    torch.manual_seed(0)
    warp = FrequencyWarp(0.2)
    bins = torch.arange(80, dtype=torch.float32)
    x = bins.expand(3, 50, 80).clone()  # every frame is the ramp 0..79: warped bin f reads f / a
    x[2, 20:] = -7.0  # padding of utterance 2 (length 20) must stay as it was
    lens = torch.tensor([50, 50, 20])
    warp.eval()
    assert torch.equal(warp(x, lens), x)
    warp.train()
    y = warp(x, lens)
    assert torch.equal(y[2, 20:], x[2, 20:])
    for b in range(3):
        frame = y[b, 0]
        factor = float(frame[10] / 10.0) ** -1  # the ramp turns into f / a
        assert 0.8 <= factor <= 1.2
        expected = (bins / factor).clamp(max=79.0)
        torch.testing.assert_close(frame, expected, atol=1e-4, rtol=0)
        assert torch.equal(y[b, : int(lens[b])], frame.expand(int(lens[b]), 80))  # one factor per utterance
    assert not torch.allclose(y[0, 0], y[1, 0])
    assert torch.equal(FrequencyWarp(0.0).train()(x, lens), x)
    with pytest.raises(ValueError, match="max_warp"):
        FrequencyWarp(1.0)


def test_feature_stats_are_buffers_and_normalise():
    model = _model()
    mean, std = torch.full((80,), 2.0), torch.full((80,), 4.0)
    model.set_feature_stats(mean, std)
    state = model.state_dict()
    assert torch.equal(state["cmvn.mean"], mean) and torch.equal(state["cmvn.std"], std)
    x = torch.full((1, 3, 80), 6.0)
    torch.testing.assert_close(model.cmvn(x, torch.tensor([2])),
                               torch.tensor([1.0, 1.0, 0.0])[None, :, None].expand(1, 3, 80))
    with pytest.raises(ValueError, match="shape"):
        model.set_feature_stats(torch.zeros(40), torch.ones(40))


def test_presets_span_tiny_to_paper_sizes():
    tiny = AstraModel(preset("tiny"), 64).num_parameters()
    assert 1e5 < tiny["total"] < 1e6
    with torch.device("meta"):
        big = AstraModel(preset("aligner_librispeech"), 1024).num_parameters()
        maestro_cfg = preset("astra_maestro")
        maestro = AstraModel(maestro_cfg, 1024).num_parameters()
    speech_path = big["speech_encoder"] + big["shared_encoder"] + big["aligner"]
    assert 90e6 < speech_path < 130e6
    assert (maestro_cfg.speech_layers, maestro_cfg.shared_layers) == (6, 18)
    assert maestro["total"] == sum(v for k, v in maestro.items() if k != "total")
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(position_encoding="alibi"), "position_encoding"),
        (dict(subsampling=5), "subsampling"),
        (dict(d_model=66, num_heads=4), "divisible"),
        (dict(inter_ctc_layer=99), "inter_ctc_layer"),
        (dict(rnnt_head=False, consistency=True), "rnnt_head"),
        (dict(consistency_mode="sampled"), "consistency_mode"),
        (dict(conv_kernel=4), "conv_kernel"),
        (dict(conv_kernel=-1), "conv_kernel"),
        (dict(time_masks=-2), "time_masks"),
        (dict(rnnt_lm_only_scale=0.6, rnnt_am_only_scale=0.5), "rnnt_lm_only_scale"),
        (dict(consistency_mode="weighted_rnnt", consistency_lam=0.0), "consistency_lam"),
    ],
)
def test_config_validation_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**overrides).validate()


@pytest.mark.parametrize("layers", [1, 2])
def test_decoder_step_matches_the_lstm(layers):
    from astra.model.aligner_decoder import AlignerDecoder

    torch.manual_seed(0)
    decoder = AlignerDecoder(16, 12, 8, layers, 10, 0.0).eval()
    tokens = torch.tensor([[2, 5, 7, 9], [2, 4, 4, 11]])
    g_seq, (h_seq, c_seq) = decoder.predict(tokens)
    g, state = decoder.start_state(2, torch.device("cpu"))
    torch.testing.assert_close(g, g_seq[:, 0])
    for i in range(1, tokens.size(1)):
        g, state = decoder.step(tokens[:, i], state)
        torch.testing.assert_close(g, g_seq[:, i], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state[0], h_seq, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state[1], c_seq, atol=1e-6, rtol=1e-5)


def test_decoder_lstm_runs_in_float32_under_cpu_bfloat16_autocast():
    # oneDNN has no bf16 LSTM on CPUs without AVX-512 (it raised "could not create a primitive
    # descriptor" on an AVX2 machine); under autocast the LSTM runs in float32 on every CPU
    from astra.model.aligner_decoder import AlignerDecoder

    torch.manual_seed(0)
    decoder = AlignerDecoder(16, 12, 8, 2, 10, 0.0)
    tokens = torch.tensor([[2, 5, 7], [2, 4, 4]])
    want, (h_want, _) = decoder.predict(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g, (h, c) = decoder.predict(tokens)
        logits = decoder(torch.randn(2, 3, 16), tokens)
    assert g.dtype == h.dtype == c.dtype == torch.float32
    torch.testing.assert_close(g, want)
    torch.testing.assert_close(h, h_want)
    logits.float().sum().backward()
    assert decoder.lstm.weight_ih_l0.grad is not None


def test_decoder_gate_table_cache_follows_weight_updates():
    from astra.model.aligner_decoder import AlignerDecoder

    torch.manual_seed(0)
    decoder = AlignerDecoder(16, 12, 8, 1, 10, 0.0).eval()
    tokens = torch.tensor([[2, 5], [2, 7]])
    with torch.no_grad():
        for _ in range(2):  # the second round changes the weights after the table was cached
            g, state = decoder.start_state(2, torch.device("cpu"))
            g, _ = decoder.step(tokens[:, 1], state)
            torch.testing.assert_close(g, decoder.predict(tokens)[0][:, 1], atol=1e-6, rtol=1e-5)
            decoder.embedding.weight.add_(0.5)
            decoder.lstm.bias_ih_l0.add_(0.1)


def test_teacher_forcing_with_a_history_matches_long_form_priming():
    from astra.model.aligner_decoder import AlignerDecoder

    torch.manual_seed(0)
    decoder = AlignerDecoder(8, 12, 6, 1, 7, 0.0).eval()
    frames, targets = torch.randn(1, 5, 8), torch.tensor([[5, 6, 3]])
    history = [7, 9, 4]
    logits = decoder(frames, targets, torch.tensor([history]))
    g, state = decoder.prime([history], torch.device("cpu"))
    torch.testing.assert_close(logits[0, 0], decoder.joint(frames[0, 0], g[0]))
    g, _ = decoder.step(targets[:, 0], state)
    torch.testing.assert_close(logits[0, 1], decoder.joint(frames[0, 1], g[0]), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="T' >= L"):
        decoder(frames[:, :2], targets)


def test_training_time_priming_changes_only_primed_examples():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", dropout=0.0, spec_augment=False, aligner_prime_prob=1.0), VOCAB)
    model.train()
    tokens, lens = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([3, 2])
    frames, frame_lens = torch.randn(2, 6, 64), torch.tensor([6, 6])
    primed, n, _ = model.forward_aligner(model.aligner, frames, frame_lens, tokens, lens)
    model.eval()
    plain, n2, _ = model.forward_aligner(model.aligner, frames, frame_lens, tokens, lens)
    assert n == n2 == 7 and primed.item() != pytest.approx(plain.item())
    with pytest.raises(ValueError, match="aligner_prime_prob"):
        preset("tiny", aligner_prime_prob=1.5)


def test_utterance_norm_uses_only_each_utterances_valid_frames():
    from astra.model.conformer import UtteranceNorm

    torch.manual_seed(0)
    norm = UtteranceNorm(6)
    x = torch.randn(2, 9, 6) * 3 + 1
    lens = torch.tensor([9, 5])
    pad = torch.arange(9)[None, :] >= lens[:, None]
    y = norm(x, pad)
    for b, n in enumerate(lens.tolist()):
        valid = x[b, :n]
        expected = (valid - valid.mean(0)) / torch.sqrt(valid.var(0, unbiased=False) + 1e-5)
        torch.testing.assert_close(y[b, :n], expected, atol=1e-5, rtol=1e-5)
    garbage = x.clone()
    garbage[1, 5:] = 1e3  # padding content and the other utterance never matter
    torch.testing.assert_close(norm(garbage, pad)[1, :5], y[1, :5])
    torch.testing.assert_close(norm(x[1:2, :5], pad[1:2, :5]), y[1:2, :5])
    with pytest.raises(ValueError, match="conv_norm"):
        ModelConfig(conv_norm="batch").validate()
