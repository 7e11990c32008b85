"""CTC compression: the vectorised merge against a per-utterance loop, and the model paths."""

import pytest
import torch

from astra.constants import BLANK_ID, DECODE_METHODS
from astra.model import AstraModel, preset
from astra.model.ctc_compress import ctc_compress

VOCAB = 40


def _loop_compress(frames, length, labels, mode, end_frame):
    """Brute force: walk the frames, one output per run of equal labels."""
    runs, current = [], None
    for t in range(length):
        label = int(labels[t])
        if t == 0 or label != int(labels[t - 1]):
            current = [label, []]
            runs.append(current)
        current[1].append(frames[t])
    kept = [torch.stack(f).mean(0) for label, f in runs if mode == "runs" or label != BLANK_ID]
    if mode == "labels":
        kept.append(end_frame)
    return torch.stack(kept) if kept else frames.new_zeros(0, frames.size(1))


@pytest.mark.parametrize("mode", ["runs", "labels"])
def test_compression_matches_a_loop_over_runs(mode):
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(5, 12, 3, generator=g, requires_grad=True)
    lengths = torch.tensor([12, 7, 1, 0, 9])
    labels = torch.randint(0, 3, (5, 12), generator=g)  # many blanks and repeats
    labels[4] = BLANK_ID  # all blank
    end = torch.randn(3, generator=g)
    out, out_lens = ctc_compress(frames, lengths, labels, BLANK_ID, mode, end)
    for b in range(5):
        expected = _loop_compress(frames[b], int(lengths[b]), labels[b], mode, end)
        assert int(out_lens[b]) == expected.size(0)
        torch.testing.assert_close(out[b, : expected.size(0)], expected)
        assert out[b, expected.size(0):].abs().sum() == 0  # padding
    assert out_lens[4] == 1  # one blank run / only the end frame
    out.sum().backward()  # the mean passes gradient to every merged frame, none to dropped ones
    merged = labels[0] != BLANK_ID if mode == "labels" else torch.ones(12, dtype=torch.bool)
    assert ((frames.grad[0] != 0).all(dim=1) == merged).all()


def test_labels_mode_of_a_perfect_ctc_output_gives_u_plus_one_frames():
    labels = torch.tensor([[0, 5, 5, 0, 0, 6, 0, 6, 6, 0]])  # tokens 5 6 6
    frames = torch.arange(10.0)[None, :, None]
    out, lens = ctc_compress(frames, torch.tensor([10]), labels, BLANK_ID, "labels", torch.tensor([-1.0]))
    assert lens.tolist() == [4]
    assert out[0, :, 0].tolist() == [1.5, 5.0, 7.5, -1.0]


def test_bad_modes_are_errors():
    x, lens, labels = torch.zeros(1, 2, 1), torch.tensor([2]), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="mode"):
        ctc_compress(x, lens, labels, BLANK_ID, "none")
    with pytest.raises(ValueError, match="end_frame"):
        ctc_compress(x, lens, labels, BLANK_ID, "labels")
    with pytest.raises(ValueError, match="ctc_compress"):
        preset("tiny", ctc_compress="drop").validate()
    with pytest.raises(ValueError, match="inter_ctc_layer"):
        preset("tiny", ctc_compress="labels", inter_ctc_layer=None).validate()
    with pytest.raises(ValueError, match="rnnt_layer"):
        preset("tiny", ctc_compress="labels", inter_ctc_layer=1, rnnt_layer=2).validate()
    with pytest.raises(ValueError, match="ctc_compress_align"):
        preset("tiny", ctc_compress="runs", inter_ctc_layer=1, ctc_compress_align="forced").validate()
    with pytest.raises(ValueError, match="ctc_compress_stop_gradient"):
        preset("tiny", ctc_compress_stop_gradient=True).validate()


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, VOCAB, (3, 6), generator=g)
    tokens[1, 4:] = 0
    tokens[2, 3:] = 0
    return dict(kind="speech", features=torch.randn(3, 120, 80, generator=g),
                feature_lens=torch.tensor([120, 100, 60]), tokens=tokens, token_lens=torch.tensor([6, 4, 3]))


def _labels_forced(model, labels_of):
    """Make the InterCTC head's greedy labels ``labels_of(T')`` (a [T'] long tensor)."""
    head = model.inter_ctc

    def forward(x):
        labels = labels_of(x.size(1)).to(x.device)
        return torch.nn.functional.one_hot(labels, VOCAB).float()[None].expand(x.size(0), -1, -1) * 10

    head.forward = forward


@pytest.mark.parametrize("mode", ["runs", "labels"])
def test_model_compresses_above_the_inter_ctc_layer_and_falls_back_when_too_short(mode):
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", ctc_compress=mode, inter_ctc_layer=1, dropout=0.0), VOCAB).eval()
    batch = _batch()
    # label runs: tokens 5,6,7,... each 2 frames then a blank frame: ~T'/3 labels per utterance
    _labels_forced(model, lambda t: torch.tensor([0 if i % 3 == 2 else 4 + i // 3 for i in range(t)]))
    frame_lens = model.frame_lengths(batch["feature_lens"])
    top, lens, layers = model.forward_encoder(batch["features"], batch["feature_lens"], (0, 1, 2))
    expected = torch.tensor([len({i // 3 for i in range(t) if i % 3 != 2}) for t in frame_lens.tolist()])
    if mode == "runs":
        expected = torch.tensor([len([i for i in range(t) if i % 3 != 1]) for t in frame_lens.tolist()])
    else:
        expected = expected + 1
    assert lens.tolist() == expected.tolist()
    assert layers[0].size(1) == layers[1].size(1) == int(frame_lens.max())  # up to the InterCTC layer: T'
    assert layers[2].size(1) == top.size(1) == int(lens.max())
    # training: a row compressed below U + 1 keeps its frames, and is counted
    counts = {}
    tokens, need = torch.ones(3, 999, dtype=torch.long), torch.tensor([0, 999, 0])  # U + 1 = 1, 1000, 1
    _, lens2, _ = model.forward_encoder(batch["features"], batch["feature_lens"], references=(tokens, need),
                                        counts=counts)
    assert lens2.tolist() == [int(lens[0]), int(frame_lens[1]), int(lens[2])]
    assert counts["compress_fallback"] == 1.0


@pytest.mark.parametrize("align", ["greedy", "forced"])
def test_training_compresses_along_the_forced_alignment_of_the_reference(align):
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", ctc_compress="labels", inter_ctc_layer=1, ctc_compress_align=align), VOCAB)
    _labels_forced(model, lambda t: torch.zeros(t, dtype=torch.long))  # greedy InterCTC: all blank
    batch = _batch()
    counts = {}
    _, lens, _ = model.forward_encoder(batch["features"], batch["feature_lens"],
                                       references=(batch["tokens"], batch["token_lens"]), counts=counts)
    if align == "forced":  # every utterance gets its U + 1 frames
        assert lens.tolist() == (batch["token_lens"] + 1).tolist() and counts["compress_fallback"] == 0
    else:  # greedy compresses to the end frame alone: every utterance falls back
        assert lens.tolist() == model.frame_lengths(batch["feature_lens"]).tolist()
        assert counts["compress_fallback"] == 3
    _, test_lens, _ = model.eval().forward_encoder(batch["features"], batch["feature_lens"])
    assert test_lens.tolist() == [1, 1, 1]  # decoding reads the greedy labels either way


def test_compressed_model_trains_and_decodes_every_method():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", ctc_compress="labels", inter_ctc_layer=1), VOCAB)
    out = model.forward_speech(_batch())
    assert {"aligner", "inter_ctc", "rnnt_simple", "consistency"} <= set(out.losses)
    assert out.counts["compress_fallback"] >= 0 and "compressed_frames" in out.counts
    sum(out.losses.values()).backward()
    assert model.compress_end.grad is not None or out.counts["compress_fallback"] == 3
    model.eval()
    batch = _batch()
    frame_lens = model.frame_lengths(batch["feature_lens"])
    _, compressed_lens, _ = model.forward_encoder(batch["features"], batch["feature_lens"])
    for method in DECODE_METHODS:
        hyps = model.decode(batch, method=method, beam=2)
        assert len(hyps) == 3
        limit = compressed_lens if method.startswith("aligner") else frame_lens * (3 if "rnnt" in method else 1)
        assert all(len(h) <= int(n) for h, n in zip(hyps, limit, strict=True)), method
    occupancy, _, lens = model.alignment_occupancy(batch)
    assert lens.tolist() == frame_lens.tolist() and occupancy.size(2) == int(frame_lens.max())



@pytest.mark.parametrize("stop", [False, True])
def test_stop_gradient_keeps_the_upper_losses_out_of_the_lower_layers(stop):
    torch.manual_seed(0)
    model = AstraModel(preset("tiny", ctc_compress="labels", inter_ctc_layer=1, ctc_compress_align="forced",
                              ctc_compress_stop_gradient=stop), VOCAB)
    out = model.forward_speech(_batch())
    lower = list(model.speech_encoder.parameters()) + list(model.shared_encoder.blocks[0].parameters())
    grads = torch.autograd.grad(out.losses["aligner"], lower, allow_unused=True, retain_graph=True)
    reaches = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert reaches != stop  # the Aligner's loss reaches the layers below the compression unless stopped
    grads = torch.autograd.grad(out.losses["inter_ctc"], lower, allow_unused=True)
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)  # the InterCTC loss always does


@pytest.mark.parametrize("wrt", ["features", "shared"])
def test_gradient_alignment_of_a_compressed_model_runs_through_the_compression(wrt):
    """The recipe's model (compression with the gradient stopped in training): the
    diagnostic differentiates the Aligner's teacher-forced scores through the merged frames
    (eval mode), so the rows are not zero, and the "shared" input goes through the same
    compression as decoding (``forward_shared`` = the upper part of ``forward_encoder``)."""
    from astra.analysis.gradient_alignment import model_gradient_alignment

    torch.manual_seed(0)
    model = AstraModel(preset("tiny", ctc_compress="labels", inter_ctc_layer=1, ctc_compress_align="forced",
                              ctc_compress_stop_gradient=True, dropout=0.0), VOCAB)
    features = _batch()["features"][0]
    with torch.no_grad():
        model.eval()
        top, top_lens, layers = model.forward_encoder(features[None], torch.tensor([120]), (0,))
        again, again_lens, _ = model.forward_shared(layers[0], torch.tensor([int(model.frame_lengths(
            torch.tensor([120])))]))
    assert torch.equal(top, again) and torch.equal(top_lens, again_lens)
    tokens = [5, 6]
    if int(top_lens[0]) < len(tokens) + 1:  # greedy compression of an untrained head: few frames
        tokens = tokens[: max(int(top_lens[0]) - 1, 1)]
    grads = model_gradient_alignment(model, features, tokens, wrt)
    assert grads.shape[0] == len(tokens) + 1 and bool((grads.abs().sum(dim=1) > 0).all())
