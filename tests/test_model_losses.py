"""Model losses: names, counts, RNN-T head vs the full loss, ASTRA wiring, mixed precision."""

from __future__ import annotations

import pytest
import torch

import astra.lattice as lattice
from astra.model import AstraModel, preset
from astra.model.astra_model import append_eos

VOCAB = 20


def _speech_batch(b=3, frames=(120, 100, 60), token_lens=(6, 4, 3), seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    width = max(token_lens)
    tokens = torch.randint(4, VOCAB, (b, width), generator=g)
    for i, n in enumerate(token_lens):
        tokens[i, n:] = 0
    return dict(kind="speech", features=torch.randn(b, max(frames), 80, generator=g),
                feature_lens=torch.tensor(frames), tokens=tokens, token_lens=torch.tensor(token_lens))


@pytest.mark.parametrize(
    "overrides, names",
    [
        ({}, {"aligner", "inter_ctc", "rnnt", "rnnt_simple", "consistency", "aligned_consistency"}),
        (dict(top_ctc=True, inter_aligner_layer=2, position_encoding="rel_pos", consistency_layer=1, rnnt_layer=1,
              consistency_mode="weighted_rnnt", consistency_distance="mse", subsampling=6),
         {"aligner", "inter_aligner", "ctc", "inter_ctc", "rnnt", "rnnt_simple", "consistency", "aligned_consistency"}),
        (dict(rnnt_head=False, consistency=False, inter_ctc_layer=None, top_ctc=True, subsampling=8),
         {"aligner", "ctc", "aligned_consistency"}),
    ],
)
def test_forward_speech_and_text_return_the_enabled_losses(overrides, names):
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", **overrides), VOCAB)
    batch = _speech_batch()
    out = model.forward_speech(batch)
    assert set(out.losses) == names
    for name, value in out.losses.items():
        assert value.dim() == 0 and torch.isfinite(value) and value.dtype == torch.float32, name
    sum(out.losses.values()).backward()
    assert out.counts["utterances"] == 3 and out.counts["tokens"] == 13
    assert out.counts["aligner_tokens"] == 16 and out.counts["dropped/too_long"] == 0
    text = model.forward_text(dict(kind="text", tokens=batch["tokens"], token_lens=batch["token_lens"]))
    expected = {"text_aligner", "text_ctc"} | ({"text_rnnt"} if model.rnnt is not None else set())
    assert set(text.losses) == expected
    sum(text.losses.values()).backward()


@pytest.mark.parametrize("top_ctc", [False, True])
def test_text_ctc_is_the_ctc_heads_loss_on_repeated_text_frames(top_ctc):
    """``text_ctc`` = F.ctc_loss of the CTC head that decoding reads (top CTC if on, else
    InterCTC) on its layer's first U text frames, each repeated ``text_ctc_repeat`` times."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = AstraModel(preset("tiny", top_ctc=top_ctc, inter_ctc_layer=1, text_ctc_repeat=3), VOCAB).eval()
    tokens = torch.tensor([[5, 5, 7, 8], [9, 4, 0, 0]])  # a repeated token needs the blank between
    token_lens = torch.tensor([4, 2])
    out = model.forward_text(dict(kind="text", tokens=tokens, token_lens=token_lens), needed={"text_ctc"})
    assert set(out.losses) == {"text_ctc"}
    layer = model.cfg.shared_layers if top_ctc else 1
    head = model.ctc if top_ctc else model.inter_ctc
    _, _, layers = model.forward_text_encoder(tokens, token_lens, (layer,))
    frames = layers[layer][:, :4].repeat_interleave(3, dim=1)  # [B, 3U, D]
    expected = F.ctc_loss(head(frames).transpose(0, 1), tokens, token_lens * 3, token_lens,
                          blank=0, reduction="sum") / 6
    assert torch.isfinite(expected) and out.losses["text_ctc"].item() == pytest.approx(expected.item(), rel=1e-5)
    out.losses["text_ctc"].backward()
    assert head.proj.weight.grad.abs().sum() > 0
    assert model.text_encoder.embedding.weight.grad.abs().sum() > 0


def test_text_ctc_needs_a_ctc_head_and_room_for_blanks():
    from astra.model.config import ModelConfig

    model = AstraModel(preset("tiny", inter_ctc_layer=None, top_ctc=False), VOCAB)
    assert "text_ctc" not in model.loss_names("text")
    with pytest.raises(ValueError, match="text_ctc_repeat=1 must be >= 2"):
        ModelConfig(text_ctc_repeat=1).validate()


def test_pruned_rnnt_equals_the_full_loss_when_nothing_is_pruned():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", rnnt_prune_range=8), VOCAB)
    head = model.rnnt
    enc = torch.randn(2, 9, 64)
    enc_lens = torch.tensor([9, 7])
    tokens = torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0]])
    token_lens = torch.tensor([4, 2])
    losses = head.loss(enc, enc_lens, tokens, token_lens)
    pred = head.predict_sequence(tokens)  # [B, U+1, P]
    logits = head.joint(head.encoder_proj(enc)[:, :, None], head.pred_proj(pred)[:, None])  # [B, T', U+1, V]
    boundary = torch.tensor([[0, 0, 4, 9], [0, 0, 2, 7]])
    full = lattice.rnnt_loss(logits, tokens, 0, boundary=boundary, reduction="sum")
    assert losses.pruned.item() == pytest.approx(full.item(), rel=1e-4)
    assert losses.px.shape == (2, 4, 10) and losses.py.shape == (2, 5, 9)
    assert not losses.px.requires_grad


def _check_occupancy(occ, token_lens, frame_lens):
    for b, (u, t) in enumerate(zip(token_lens.tolist(), frame_lens.tolist(), strict=True)):
        torch.testing.assert_close(occ[b, :u, :t].sum(dim=1), torch.ones(u), rtol=1e-4, atol=1e-4)
        assert occ[b, u:].abs().sum() == 0 and occ[b, :, t:].abs().sum() == 0
        assert (occ[b] >= 0).all()


def test_alignment_occupancy_is_the_heads_lattice_posterior():
    from astra.model.rnnt_head import emit_occupancy

    torch.manual_seed(0)
    model = AstraModel(preset("tiny"), VOCAB)  # training mode: the method must switch to eval
    batch = _speech_batch()
    occ, token_lens, frame_lens = model.alignment_occupancy(batch)
    assert model.training
    assert occ.shape == (3, 6, int(frame_lens.max())) and occ.dtype == torch.float32
    assert not occ.requires_grad and token_lens.tolist() == [6, 4, 3]
    assert frame_lens.tolist() == model.speech_encoder.subsampling.output_lengths(batch["feature_lens"]).tolist()
    _check_occupancy(occ, token_lens, frame_lens)
    # the lattice the training losses (and ASTRA) use, in eval mode
    model.eval()
    with torch.no_grad():
        layer = model.cfg.rnnt_layer
        _, lens, layers = model.forward_encoder(batch["features"], batch["feature_lens"], (layer,))
        rnnt = model.rnnt.loss(layers[layer], lens, batch["tokens"], batch["token_lens"])
    torch.testing.assert_close(occ, emit_occupancy(rnnt.px, rnnt.py, rnnt.boundary))
    full, _, _ = model.alignment_occupancy(batch, lattice="full")
    _check_occupancy(full, token_lens, frame_lens)
    assert not torch.allclose(full, occ)
    pruned, _, _ = model.alignment_occupancy(batch, lattice="pruned")
    _check_occupancy(pruned, token_lens, frame_lens)
    with pytest.raises(ValueError, match="lattice must be one of"):
        model.alignment_occupancy(batch, lattice="joint")
    with pytest.raises(ValueError, match="rnnt_head"):
        AstraModel(preset("tiny", rnnt_head=False, consistency=False), VOCAB).alignment_occupancy(batch)


def _peaked_lattice(frames: list[int], num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """px [1, U, T+1], py [1, U+1, T] that put (almost) all mass on emitting token u at frames[u]."""
    u_count, low = len(frames), -30.0
    px = torch.full((1, u_count, num_frames + 1), low)
    py = torch.full((1, u_count + 1, num_frames), low)
    previous = 0
    for u, t in enumerate(frames):
        px[0, u, t] = 0.0
        py[0, u, previous:t] = 0.0
        previous = t
    py[0, u_count, previous:] = 0.0
    px[:, :, num_frames] = float("-inf")
    return px, py


def test_consistency_loss_is_zero_when_speech_equals_the_aligned_text_and_grows_otherwise():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny"), VOCAB).eval()
    tokens, token_lens = torch.tensor([[5, 6, 7]]), torch.tensor([3])
    text, _, _ = model.forward_text_encoder(tokens, token_lens, (0,), num_shared=0)
    frames, num_frames = [1, 4, 6], 8
    speech = torch.randn(1, num_frames, 64)
    for u, t in enumerate(frames):
        speech[0, t] = text[0, u]
    px, py = _peaked_lattice(frames, num_frames)
    lens = torch.tensor([num_frames])
    matched = model._consistency_loss(speech, lens, tokens, token_lens, px, py)
    assert matched.item() < 1e-4
    shifted = torch.roll(speech, 1, dims=1)
    assert model._consistency_loss(shifted, lens, tokens, token_lens, px, py).item() > 0.1
    noisy = speech + 0.5 * torch.randn_like(speech)
    assert model._consistency_loss(noisy, lens, tokens, token_lens, px, py).item() > matched.item() + 0.1


def test_losses_stay_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny"), VOCAB)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_speech(_speech_batch())
    for name, value in out.losses.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
    sum(out.losses.values()).backward()


def test_identity_attention_switch_reaches_every_attention_module():
    model = AstraModel(preset("tiny"), VOCAB)
    model.set_identity_attention(True)
    blocks = [*model.speech_encoder.blocks, *model.text_encoder.blocks, *model.shared_encoder.blocks]
    assert all(block.attn.identity for block in blocks)
    out = model.forward_speech(_speech_batch())
    sum(out.losses.values()).backward()
    model.set_identity_attention(False)
    assert not any(block.attn.identity for block in blocks)


@pytest.mark.parametrize("span", [1, 3])
def test_text_masking_masks_spans_inside_each_text_and_trains_the_mask_vector(span):
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", text_mask_prob=0.3, text_mask_span=span), VOCAB)
    lens = torch.tensor([200, 120, 0])
    masked = model.draw_text_mask(lens, 200)
    assert masked.shape == (3, 200) and masked.dtype == torch.bool
    assert not masked[1, 120:].any() and not masked[2].any()
    fraction = float(masked[0].float().mean())
    assert 0.15 < fraction < 0.45, fraction
    if span > 1:  # masked tokens come in runs of at least `span`
        runs = torch.diff(torch.cat([torch.tensor([0]), masked[0].int(), torch.tensor([0])])).nonzero().flatten()
        assert ((runs[1::2] - runs[::2]) >= span).all()
    batch = _speech_batch()
    out = model.forward_text(dict(kind="text", tokens=batch["tokens"], token_lens=batch["token_lens"]))
    assert out.counts["masked_tokens"] >= 0
    sum(out.losses.values()).backward()
    assert model.text_encoder.mask_embedding.grad is not None or out.counts["masked_tokens"] == 0
    model.eval()
    assert model.draw_text_mask(lens, 200) is None
    plain = AstraModel(preset("tiny", text_mask_prob=0.0), VOCAB)
    assert plain.text_encoder.mask_embedding is None and plain.train().draw_text_mask(lens, 200) is None


def test_masked_text_changes_only_through_the_mask_vector():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", text_mask_prob=0.2, dropout=0.0), VOCAB).eval()
    tokens, lens = torch.randint(4, VOCAB, (2, 7)), torch.tensor([7, 5])
    none = torch.zeros(2, 7, dtype=torch.bool)
    plain, _, _ = model.forward_text_encoder(tokens, lens, (0,), num_shared=0)
    same, _, _ = model.forward_text_encoder(tokens, lens, (0,), num_shared=0, masked=none)
    torch.testing.assert_close(plain, same)
    some = none.clone()
    some[0, 2] = True
    with torch.no_grad():
        model.text_encoder.mask_embedding.fill_(3.0)
    hidden, _, _ = model.forward_text_encoder(tokens, lens, (0,), num_shared=0, masked=some)
    assert not torch.allclose(hidden[0], plain[0])
    torch.testing.assert_close(hidden[1], plain[1])
    with pytest.raises(ValueError, match="text_mask_prob"):
        AstraModel(preset("tiny", text_mask_prob=0.0), VOCAB).text_encoder(tokens, lens, some)


def test_text_rnnt_pruned_loss_is_close_to_the_full_loss_on_text_frames():
    """``text_rnnt`` keeps R symbols per text frame. Its windows used to come from the simple
    (lm + am) head, which is never trained on text frames: a head trained on speech (here a
    sharpened ``simple_am``) put them off the path, and the pruned loss was 2.49 nats/token
    against a full loss of 1.43. The diagonal windows hold the path a text model learns."""
    import dataclasses

    import astra.lattice as lattice
    from astra.model import preset
    from astra.model.rnnt_head import RnntHead, diagonal_prune_ranges

    torch.manual_seed(0)
    V, D = 20, 16
    head = RnntHead(dataclasses.replace(preset("tiny"), d_model=D, rnnt_pred_dim=D, rnnt_joint_dim=D), V)
    g = torch.Generator().manual_seed(1)
    table = torch.randn(V, D, generator=g)

    def text_batch():  # frame t reads token t+1 (a stand-in for E), the last frame <eos>
        lens = torch.randint(6, 13, (4,), generator=g)
        tokens = torch.randint(4, V, (4, 12), generator=g) * (torch.arange(12) < lens[:, None])
        frames = table[torch.cat([tokens, torch.zeros(4, 1, dtype=torch.long)], 1)]
        frames[torch.arange(4), lens] = table[3]
        return frames, lens + 1, tokens, lens

    def full_loss(frames, frame_lens, tokens, lens):
        px, py, boundary = head.lattice(frames, frame_lens, tokens, lens, which="full")
        return -lattice.mutual_information_recursion(px, py, boundary).sum() / lens.sum()

    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(80):  # fresh text every step: the head must read the frames
        loss = full_loss(*text_batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    batch = text_batch()
    with torch.no_grad():
        head.simple_am.weight.mul_(30)  # what speech training does to the simple head, on E
        full = float(full_loss(*batch))
        pruned = float(head.text_loss(*batch) / batch[3].sum())
        ranges = diagonal_prune_ranges(lattice.rnnt_boundary(batch[3], batch[1]), 13, 5)
    assert full < 2.0  # the head learned the text alignment
    assert full - 1e-4 <= pruned < full + 0.02
    assert (ranges[:, 0, 0] == 0).all() and (ranges[:, 1:, 0] - ranges[:, :-1, 0]).le(1).all()
    assert (ranges[torch.arange(4), batch[1] - 1, -1] == batch[3]).all()  # the last row is kept


class _LogitsAreFrames(torch.nn.Module):
    """An Aligner decoder that reads its logits off the encoder frames ``[B, L, V]``."""

    def forward(self, frames, targets, history=None):
        return frames


def test_text_aligner_loss_sits_on_masked_tokens_so_a_copy_model_scores_badly(monkeypatch):
    """A model that passes each input token through (the copy task) knows every unmasked
    target and nothing at a masked one: scored on masked positions it gets ~log V, not ~0."""
    from astra.model.astra_model import append_eos

    torch.manual_seed(0)
    model = AstraModel(preset("tiny", rnnt_head=False, consistency=False, text_mask_prob=0.4), VOCAB).train()

    def copy_encoder(tokens, token_lens, return_layers=(), num_shared=None, masked=None):
        inputs = append_eos(tokens, token_lens)
        frames = 30.0 * torch.nn.functional.one_hot(inputs, VOCAB).float()
        if masked is not None:  # a masked input is the mask vector: no clue to the token
            frames[:, :-1][masked] = 0.0
        return frames, token_lens + 1, {}

    monkeypatch.setattr(model, "forward_text_encoder", copy_encoder)
    model.aligner = _LogitsAreFrames()
    tokens = torch.randint(4, VOCAB, (8, 30))
    batch = dict(kind="text", tokens=tokens, token_lens=torch.full((8,), 30))
    out = model.forward_text(batch, needed={"text_aligner"})
    log_v = float(torch.log(torch.tensor(float(VOCAB))))
    assert out.counts["masked_tokens"] > 0
    assert out.counts["aligner_tokens"] == out.counts["masked_tokens"]
    assert float(out.losses["text_aligner"]) == pytest.approx(log_v, rel=1e-3)
    # the unmasked positions, weighted in, make the copy model look good again
    model.cfg.text_unmasked_weight = 1.0
    diluted = float(model.forward_text(batch, needed={"text_aligner"}).losses["text_aligner"])
    assert diluted < 0.6 * log_v
    # no masking (evaluation): every position is scored
    model.eval()
    assert float(model.forward_text(batch, needed={"text_aligner"}).losses["text_aligner"]) < 0.01


def test_text_position_weights():
    from astra.model.astra_model import text_position_weights

    masked = torch.tensor([[True, False, False], [False, True, False]])
    assert text_position_weights(None, 0.0) is None
    torch.testing.assert_close(text_position_weights(masked, 0.25),
                               torch.tensor([[1.0, 0.25, 0.25, 0.25], [0.25, 1.0, 0.25, 0.25]]))


def test_pruned_alignment_is_the_full_lattice_when_nothing_is_pruned():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", rnnt_prune_range=8), VOCAB)
    head = model.rnnt
    enc, enc_lens = torch.randn(2, 9, 64), torch.tensor([9, 7])
    tokens, token_lens = torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0]]), torch.tensor([4, 2])
    losses = head.loss(enc, enc_lens, tokens, token_lens, pruned_lattice=True)
    assert head.loss(enc, enc_lens, tokens, token_lens).px_pruned is None
    with torch.no_grad():
        px, py, boundary = head.lattice(enc, enc_lens, tokens, token_lens, "full")
    from astra.model.rnnt_head import emit_occupancy

    torch.testing.assert_close(emit_occupancy(losses.px_pruned, losses.py_pruned, boundary),
                               emit_occupancy(px, py, boundary), atol=1e-5, rtol=1e-4)
    assert not losses.px_pruned.requires_grad


@pytest.mark.parametrize("alignment", ["simple", "pruned"])
def test_consistency_alignment_option_picks_the_lattice(alignment, monkeypatch):
    import astra.losses.astra_consistency as consistency

    torch.manual_seed(0)
    model = AstraModel(preset("tiny", consistency_alignment=alignment, dropout=0.0), VOCAB)
    seen = {}
    real_loss = model.rnnt.loss

    def spy_loss(*args, **kwargs):
        seen["rnnt"] = real_loss(*args, **kwargs)
        return seen["rnnt"]

    real = consistency.astra_consistency

    def spy(speech, speech_lens, text, text_lens, px, py, **kwargs):
        seen["px"] = px
        return real(speech, speech_lens, text, text_lens, px, py, **kwargs)

    monkeypatch.setattr(model.rnnt, "loss", spy_loss)
    monkeypatch.setattr(consistency, "astra_consistency", spy)
    model.forward_speech(_speech_batch())
    expected = seen["rnnt"].px_pruned if alignment == "pruned" else seen["rnnt"].px
    assert seen["px"] is not None and torch.equal(seen["px"], expected.float())


@pytest.mark.parametrize("stop", ["none", "speech", "text"])
def test_consistency_stop_gradient_trains_one_side_and_logs_the_norms(stop):
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", consistency_stop_gradient=stop), VOCAB)
    out = model.forward_speech(_speech_batch())
    assert out.counts["mean/consistency_speech_norm"] > 0 and out.counts["mean/consistency_text_norm"] > 0
    out.losses["consistency"].backward()
    speech_grad = sum(float(p.grad.abs().sum()) for p in model.speech_encoder.parameters() if p.grad is not None)
    text_grad = sum(float(p.grad.abs().sum()) for p in model.text_encoder.parameters() if p.grad is not None)
    assert (speech_grad > 0) == (stop != "speech")
    assert (text_grad > 0) == (stop != "text")


def test_bad_alignment_and_stop_gradient_names_are_rejected():
    with pytest.raises(ValueError, match="consistency_alignment"):
        preset("tiny", consistency_alignment="full").validate()
    with pytest.raises(ValueError, match="consistency_stop_gradient"):
        preset("tiny", consistency_stop_gradient="both").validate()


def test_text_entry_layer_feeds_the_text_path_above_the_lower_shared_layers():
    """``model.text_entry_layer=k``: E is the input of shared blocks k+1.., so the text losses
    train none of the blocks up to k (nor the InterCTC head there); the consistency meets E at
    layer k; the text RNN-T (its head reads layer 0, which the text path no longer has) is
    not offered."""
    torch.manual_seed(0)
    options = dict(shared_layers=3, inter_ctc_layer=1, ctc_compress="labels", ctc_compress_align="forced",
                   ctc_compress_stop_gradient=True, text_entry_layer=1, consistency_layer=1, dropout=0.0)
    model = AstraModel(preset("tiny", **options), VOCAB)
    assert model.loss_names("text") == ["text_aligner", "text_ctc"]
    batch = _speech_batch()
    tokens, lens = batch["tokens"], batch["token_lens"]
    model.eval()
    with torch.no_grad():
        top, top_lens, layers = model.forward_text_encoder(tokens, lens, (1, 2))
        e, e_lens = model.text_encoder(append_eos(tokens, lens), lens + 1)  # y_1..y_U, <eos>
        expected, _ = model.shared_encoder(e, e_lens, first_block=1)
    assert torch.equal(layers[1], e) and 0 not in layers and torch.allclose(top, expected)
    model.train()
    text = model.forward_text(dict(kind="text", tokens=tokens, token_lens=lens))
    assert set(text.losses) == {"text_aligner", "text_ctc"}
    model.zero_grad()
    text.losses["text_aligner"].backward()
    lower = [p.grad for p in model.shared_encoder.blocks[0].parameters()]
    upper = [p.grad for p in model.shared_encoder.blocks[1].parameters()]
    assert all(g is None for g in lower) and any(g is not None and g.abs().sum() > 0 for g in upper)
    speech = model.forward_speech(batch)
    assert torch.isfinite(speech.losses["consistency"]) and speech.losses["consistency"] > 0
    with pytest.raises(ValueError, match="text_rnnt"):
        model.forward_text(dict(kind="text", tokens=tokens, token_lens=lens), needed=["text_aligner", "text_rnnt"])


def test_bad_text_entry_layers_are_refused():
    with pytest.raises(ValueError, match="text_entry_layer=4 must be in"):
        preset("tiny", shared_layers=4, text_entry_layer=4).validate()
    with pytest.raises(ValueError, match="text_entry_layer=-1 must be in"):
        preset("tiny", text_entry_layer=-1).validate()
    with pytest.raises(ValueError, match="consistency_layer=0 is below model.text_entry_layer=1"):
        preset("tiny", text_entry_layer=1).validate()
    preset("tiny", text_entry_layer=1, consistency=False).validate()
    preset("tiny", text_entry_layer=1, consistency_layer=2).validate()
