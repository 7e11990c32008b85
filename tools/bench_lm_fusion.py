"""LM fusion decode-speed benchmark (bench_decode.py's setting plus LM rows): prints markdown tables.

One encoder configuration (a preset, default ``aligner_librispeech``), B=8 utterances of
T'=300 encoder frames (1203 fbank frames, 12 s) and U=100 output tokens, on CPU. Reported:
median wall time of encoding and of each decoder, each as a ratio to Aligner greedy.

The model is untrained, so to make every decoder do the work of a real U=100 transcript the
decoders read crafted encoder frames: one frame dimension drives the ``<eos>`` logit of the
Aligner joint (low on frames < U, high from frame U on) and another the blank logit of the
RNN-T joiner (low on every third frame, high elsewhere: 100 emissions in 300 frames); the
joint output layers are scaled up so that one token dominates each step, as in a trained
model (beam searches then keep their hypotheses to the end). This changes joint weights
only (no shapes), so the cost per step is that of a real model. RNN-T greedy runs with one
symbol per frame (like modified beam search); ``decode()``'s default allows 3, which costs
one more joiner call per emitted token. The Aligner + CTC beam reads the untrained CTC head's
(near-uniform) log-probs: its row measures the cost of CTC prefix scoring, not search quality.

The ``+ LM`` rows fuse an n-gram LM (``astra.lm``, weight 0.3) into each beam search: a
``--lm-order`` (default 6) modified Kneser-Ney model of ``--lm-sentences`` random piece
sequences (Zipf-distributed pieces, 20-60 per sentence), the same for every utterance; a
second table gives each search's cost with the LM over its cost without it.

Usage: ``python tools/bench_lm_fusion.py [--preset NAME] [--repeats 5] [--vocab 1024] [--threads N]
[--same-joint] [--lm-order 6] [--lm-sentences 2000]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from astra.lm.fusion import LmFusion
from astra.lm.kneser_ney import estimate
from astra.lm.ngram_scorer import NgramScorer
from astra.model import AstraModel, decoding, preset
from astra.model.astra_model import BLANK_ID, EOS_ID, SOS_ID, UNK_ID

BATCH, FRAMES_OUT, TOKENS = 8, 300, 100
INPUT_FRAMES = 1203  # -> 300 encoder frames with 4x Conv2d subsampling


def _craft(model: AstraModel, encoder_out: torch.Tensor) -> torch.Tensor:
    """Steer the joints with encoder dimension 0 (see the module docstring); returns frames."""
    frames = encoder_out.clone()
    t = torch.arange(frames.size(1))
    with torch.no_grad():
        for joint_in, output, token, on in (
            (model.aligner.encoder_proj, model.aligner.output, EOS_ID, t >= TOKENS),
        ):
            joint_in.weight[0].zero_()
            joint_in.weight[0, 0] = 10.0
            joint_in.bias[0] = 0.0
            output.weight.mul_(10.0)  # a confident model: one token dominates each step
            output.weight[:, 0] = 0.0
            output.weight[token, 0] = 500.0
            frames[:, :, 0] = torch.where(on, 1.0, -1.0)
        head = model.rnnt
        head.encoder_proj.weight[0].zero_()
        head.encoder_proj.weight[0, 1] = 10.0
        head.encoder_proj.bias[0] = 0.0
        head.output.weight.mul_(10.0)
        head.output.weight[:, 0] = 0.0
        head.output.weight[BLANK_ID, 0] = 500.0
        frames[:, :, 1] = torch.where(t % 3 == 0, -1.0, 1.0)
    return frames


def _random_lm(vocab: int, order: int, sentences: int) -> tuple[LmFusion, int]:
    """A fusion scorer (weight 0.3) of a KN model over random Zipf piece sequences; returns
    it and its number of n-grams."""
    gen = torch.Generator().manual_seed(1)
    pieces = vocab - 4
    zipf = 1.0 / torch.arange(1, pieces + 1, dtype=torch.float64)
    texts = []
    for _ in range(sentences):
        n = int(torch.randint(20, 61, (1,), generator=gen))
        texts.append([f"p{i + 4}" for i in torch.multinomial(zipf, n, replacement=True, generator=gen).tolist()])
    words = [f"p{i}" for i in range(4, vocab)]
    model = estimate(texts, order, words)
    scorer = NgramScorer({"xx": model}, {w: i for i, w in enumerate(words, 4)}, vocab, EOS_ID, UNK_ID)
    return LmFusion(scorer, 0.3, EOS_ID, neutral_ids=(BLANK_ID, SOS_ID)), sum(model.counts)


def _median_ms(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="aligner_librispeech")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--lm-order", type=int, default=6, help="order of the fused n-gram LM")
    parser.add_argument("--lm-sentences", type=int, default=2000, help="random sentences the LM is built from")
    parser.add_argument("--same-joint", action="store_true",
                        help="give the RNN-T head the Aligner's prediction/joint widths (seed 000's comparison)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = dict(dropout=0.0)
    if args.same_joint:
        base_cfg = preset(args.preset)
        overrides.update(rnnt_pred_dim=base_cfg.pred_dim, rnnt_joint_dim=base_cfg.joint_dim)
    model = AstraModel(preset(args.preset, **overrides), args.vocab).eval()
    features = torch.randn(BATCH, INPUT_FRAMES, model.cfg.num_features)
    lens = torch.full((BATCH,), INPUT_FRAMES)

    with torch.no_grad():
        encode_ms, (top, enc_lens, layers) = _median_ms(
            lambda: model.forward_encoder(features, lens, (model.cfg.rnnt_layer, model.cfg.inter_ctc_layer)),
            args.repeats,
        )
    if int(enc_lens[0]) != FRAMES_OUT:
        raise SystemExit(f"expected T'={FRAMES_OUT}, got {int(enc_lens[0])} (use a 4x-subsampling preset)")
    frames = _craft(model, top)
    ctc_head = model.ctc if model.ctc is not None else model.inter_ctc
    ctc_in = top if model.ctc is not None else layers[model.cfg.inter_ctc_layer]
    fusion, lm_ngrams = _random_lm(args.vocab, args.lm_order, args.lm_sentences)
    ctc_log_probs = ctc_head(ctc_in)

    def lm():
        return fusion.for_batch(["xx"] * BATCH, "cpu")

    searches = {
        f"Aligner beam {args.beam}": lambda lm=None: decoding.aligner_beam(
            model.aligner, frames, enc_lens, EOS_ID, args.beam, lm=lm),
        f"Aligner + CTC beam {args.beam} (ctc_weight 0.3)": lambda lm=None: decoding.aligner_beam(
            model.aligner, frames, enc_lens, EOS_ID, args.beam, ctc_log_probs=ctc_log_probs, ctc_weight=0.3, lm=lm),
        f"RNN-T beam {args.beam} (modified)": lambda lm=None: decoding.rnnt_beam(
            model.rnnt, frames, enc_lens, args.beam, lm=lm),
    }
    rows = {
        "Aligner greedy": lambda: decoding.aligner_greedy(model.aligner, frames, enc_lens, EOS_ID),
        "RNN-T greedy": lambda: decoding.rnnt_greedy(model.rnnt, frames, enc_lens, max_symbols=1),
        "CTC greedy": lambda: ctc_head.greedy(ctc_in, enc_lens),
    }
    for name, search in searches.items():
        rows[name] = search
        rows[f"{name} + LM"] = lambda search=search: search(lm())
    results = {"Encoding": (encode_ms, None)}
    for name, fn in rows.items():
        with torch.no_grad():
            results[name] = _median_ms(fn, args.repeats)
    base = results["Aligner greedy"][0]
    counts = model.num_parameters()
    cfg = model.cfg
    print(f"Preset `{args.preset}` ({counts['total'] / 1e6:.1f}M parameters, vocab {args.vocab}; Aligner LSTM "
          f"{cfg.pred_dim} x{cfg.pred_layers} + joint {cfg.joint_dim}; RNN-T head stateless {cfg.rnnt_pred_dim} "
          f"+ joint {cfg.rnnt_joint_dim}), "
          f"B={BATCH}, T'={FRAMES_OUT}, U={TOKENS}, CPU, {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}\n")
    print("| step | median ms | x Aligner greedy | tokens / utt |")
    print("|---|---:|---:|---:|")
    for name, (ms, hyps) in results.items():
        tokens = "" if hyps is None else f"{statistics.mean(len(h) for h in hyps):.0f}"
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} | {tokens} |")
    print(f"\nLM fusion ({args.lm_order}-gram, {lm_ngrams} n-grams, weight 0.3): cost over the same search "
          "without the LM\n")
    print("| search | without LM ms | with LM ms | with / without |")
    print("|---|---:|---:|---:|")
    for name in searches:
        plain, fused = results[name][0], results[f"{name} + LM"][0]
        print(f"| {name} | {plain:.1f} | {fused:.1f} | {fused / plain:.2f} |")
    total_aligner = encode_ms + base
    total_rnnt = encode_ms + results["RNN-T greedy"][0]
    print(f"\nTotal (encode + greedy decode): Aligner {total_aligner:.0f} ms, RNN-T {total_rnnt:.0f} ms "
          f"(RNN-T / Aligner = {total_rnnt / total_aligner:.2f}); decode only: RNN-T / Aligner = "
          f"{results['RNN-T greedy'][0] / base:.2f}")


if __name__ == "__main__":
    main()
