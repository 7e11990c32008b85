"""Model losses: names, counts, RNN-T head vs the full loss, ASTRA wiring, mixed precision."""

from __future__ import annotations

import pytest
import torch

import astra.lattice as lattice
from astra.model import AstraModel, preset

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
        ({}, {"aligner", "inter_ctc", "rnnt", "rnnt_simple", "astra"}),
        (dict(top_ctc=True, inter_aligner_layer=2, position_encoding="rel_pos", astra_layer=1, rnnt_layer=1,
              astra_mode="weighted_rnnt", astra_distance="mse", subsampling=6),
         {"aligner", "inter_aligner", "ctc", "inter_ctc", "rnnt", "rnnt_simple", "astra"}),
        (dict(rnnt_head=False, astra=False, inter_ctc_layer=0, top_ctc=True, subsampling=8), {"aligner", "ctc"}),
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
    expected = {"text_aligner"} | ({"text_rnnt"} if model.rnnt is not None else set())
    assert set(text.losses) == expected
    sum(text.losses.values()).backward()


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
    with pytest.raises(ValueError, match="lattice must be one of"):
        model.alignment_occupancy(batch, lattice="pruned")
    with pytest.raises(ValueError, match="rnnt_head"):
        AstraModel(preset("tiny", rnnt_head=False, astra=False), VOCAB).alignment_occupancy(batch)


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


def test_astra_loss_is_zero_when_speech_equals_the_aligned_text_and_grows_otherwise():
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
    matched = model._astra_loss(speech, lens, tokens, token_lens, px, py)
    assert matched.item() < 1e-4
    shifted = torch.roll(speech, 1, dims=1)
    assert model._astra_loss(shifted, lens, tokens, token_lens, px, py).item() > 0.1
    noisy = speech + 0.5 * torch.randn_like(speech)
    assert model._astra_loss(noisy, lens, tokens, token_lens, px, py).item() > matched.item() + 0.1


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
    plain = AstraModel(preset("tiny"), VOCAB)
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
        AstraModel(preset("tiny"), VOCAB).text_encoder(tokens, lens, some)


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
