"""Decode-speed benchmark (Aligner paper, Table 5 setting): prints a markdown table per batch size.

One encoder configuration (a preset, default ``aligner_librispeech``, 127M parameters), B
utterances (``--batch-sizes 1,8``) of T'=300 encoder frames (1203 fbank frames, 12 s) and
U=100 output tokens. Reported per decoder: median wall time per batch, the ratio to Aligner
greedy, and the peak memory the decoder adds.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated()`` minus the memory allocated before
the call (after ``reset_peak_memory_stats``). On CPU each decoder runs once more in a forked
child process: the child's peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``; Linux
starts a fork's high-water mark at its current RSS) minus its RSS at the start
(``/proc/self/statm``), i.e. the resident memory the call adds, allocator caches included
(the child runs with one thread: OpenMP's pool does not survive a fork).

The model is untrained, so to make every decoder do the work of a real U=100 transcript the
decoders read crafted encoder frames: one frame dimension drives the ``<eos>`` logit of the
Aligner joint (low on frames < U, high from frame U on) and another the blank logit of the
RNN-T joiners (low on every third frame, high elsewhere: 100 emissions in 300 frames); the
joint output layers are scaled up so that one token dominates each step, as in a trained
model (beam searches then keep their hypotheses to the end). This changes joint weights
only (no shapes), so the cost per step is that of a real model. RNN-T greedy runs with one
symbol per frame (like modified beam search); ``decode()``'s default allows 3, which costs
one more joiner call per emitted token. The Aligner + CTC beam reads the untrained CTC head's
(near-uniform) log-probs: its row measures the cost of CTC prefix scoring, not search quality.

``--same-predictor`` adds the Aligner-Encoders paper's comparison (arXiv:2502.05232): an RNN-T
head whose prediction network is an LSTM of the Aligner's size (and joint of the Aligner's
width), updated once per emitted token, decoded greedily with the same LSTM step code as the
Aligner; the default RNN-T row is the model's stateless head (what an icefall user picks).

``--lm-order N`` adds n-gram LM shallow fusion (``astra.lm``, weight ``--lm-weight``, 0.3):
an order-N modified Kneser-Ney model of ``--lm-sentences`` random piece sequences (Zipf-
distributed pieces, 20-60 per sentence), written as ARPA to a temporary folder and read back
like ``astra lm train``'s output; a row "<search> + LM" follows each beam search, and the
column "x without LM" gives its time over the same search without the LM (issue 19's target:
at most 1.5 at B=8, T'=300, beam 4).

Usage: ``python tools/bench_decode.py [--preset NAME] [--batch-sizes 1,8] [--device cpu|cuda]
[--dtype fp32|bf16] [--repeats 5] [--vocab 1024] [--beam 4] [--threads N] [--same-predictor]
[--lm-order 6] [--lm-sentences 2000] [--lm-weight 0.3]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from astra.constants import BLANK_ID, EOS_ID, SOS_ID, UNK_ID
from astra.lm.arpa import read_arpa, write_arpa
from astra.lm.fusion import LmFusion
from astra.lm.kneser_ney import estimate
from astra.lm.ngram_scorer import NgramScorer
from astra.model import AstraModel, ctc_prefix_score, decoding, preset
from astra.model.aligner_decoder import AlignerDecoder
from astra.model.ctc_beam_search import ctc_beam_search

FRAMES_OUT, TOKENS = 300, 100
STATELESS = "RNN-T greedy (stateless head)"
SAME_PREDICTOR = "RNN-T greedy (LSTM predictor, Aligner's size)"
INPUT_FRAMES = 1203  # -> 300 encoder frames with 4x Conv2d subsampling
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _steer(joint_in: torch.nn.Linear, output: torch.nn.Linear, token: int, frame_dim: int) -> None:
    """Joint hidden unit 0 follows encoder dimension ``frame_dim``; it drives ``token``'s logit."""
    joint_in.weight[0].zero_()
    joint_in.weight[0, frame_dim] = 10.0
    joint_in.bias[0] = 0.0
    output.weight.mul_(10.0)  # a confident model: one token dominates each step
    output.weight[:, 0] = 0.0
    output.weight[token, 0] = 500.0


def _craft(model: AstraModel, lstm_rnnt: AlignerDecoder | None, encoder_out: torch.Tensor) -> torch.Tensor:
    """Steer the joints (see the module docstring); returns the frames."""
    frames = encoder_out.clone()
    t = torch.arange(frames.size(1), device=frames.device)
    with torch.no_grad():
        _steer(model.aligner.encoder_proj, model.aligner.output, EOS_ID, 0)
        frames[:, :, 0] = torch.where(t >= TOKENS, 1.0, -1.0)
        _steer(model.rnnt.encoder_proj, model.rnnt.output, BLANK_ID, 1)
        if lstm_rnnt is not None:
            _steer(lstm_rnnt.encoder_proj, lstm_rnnt.output, BLANK_ID, 1)
        frames[:, :, 1] = torch.where(t % 3 == 0, -1.0, 1.0)
    return frames


@torch.no_grad()
def rnnt_lstm_greedy(predictor: AlignerDecoder, encoder_out: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """RNN-T greedy search (one symbol per frame) with an LSTM prediction network + joint
    (an :class:`AlignerDecoder` whose vocabulary includes the blank): the LSTM steps once
    per emitted token, for the rows that emitted. ``encoder_out [B, T', D]``."""
    batch, frames = encoder_out.size(0), encoder_out.size(1)
    stepper = predictor.stepper(batch, encoder_out.device, masked_ids=(SOS_ID,))
    stepper.start(SOS_ID)
    enc = stepper.encoder_side(encoder_out)
    emitted = torch.full((batch, frames), BLANK_ID, dtype=torch.long, device=encoder_out.device)
    lengths = lengths.to(encoder_out.device)
    for t in range(frames):
        tokens = stepper.logits(enc[:, t]).argmax(dim=-1)
        emit = (lengths > t) & (tokens != BLANK_ID)
        emitted[:, t] = tokens.masked_fill(~emit, BLANK_ID)
        if bool(emit.all()):
            stepper.advance(tokens)
        elif bool(emit.any()):
            stepper.advance(tokens, only=emit)
    return [[tok for tok in row if tok != BLANK_ID] for row in emitted.tolist()]


def random_lm(vocab: int, order: int, sentences: int, weight: float) -> tuple[LmFusion, int]:
    """Fusion (``weight``) of an order-``order`` KN model of ``sentences`` random Zipf piece
    sequences over the pieces ``4..vocab-1``, through an ARPA file; returns it and its
    number of n-grams."""
    gen = torch.Generator().manual_seed(1)
    zipf = 1.0 / torch.arange(1, vocab - 4 + 1, dtype=torch.float64)
    texts = []
    for _ in range(sentences):
        n = int(torch.randint(20, 61, (1,), generator=gen))
        texts.append([f"p{i + 4}" for i in torch.multinomial(zipf, n, replacement=True, generator=gen).tolist()])
    words = [f"p{i}" for i in range(4, vocab)]
    with tempfile.TemporaryDirectory() as tmp:
        write_arpa(estimate(texts, order, words), Path(tmp) / "lm.arpa")
        arpa = read_arpa(Path(tmp) / "lm.arpa")
    scorer = NgramScorer({"xx": arpa}, {w: i for i, w in enumerate(words, 4)}, vocab, EOS_ID, UNK_ID)
    return LmFusion(scorer, weight, EOS_ID, neutral_ids=(BLANK_ID, SOS_ID)), sum(arpa.counts)


def per_candidate_scores(fn):
    """``fn`` run with :class:`CtcPrefixScorer`'s matrix-product path off: every step gathers
    the candidates' columns and takes a logsumexp over frames (the reference row)."""
    def run(*args, **kwargs):
        saved = ctc_prefix_score.MATMUL_MIN_SHARE
        ctc_prefix_score.MATMUL_MIN_SHARE = 0
        try:
            return fn(*args, **kwargs)
        finally:
            ctc_prefix_score.MATMUL_MIN_SHARE = saved
    return run


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn, repeats: int, device: str) -> tuple[float, object]:
    fn()  # warm-up
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), result


def _peak_mib(fn, device: str) -> float:
    """Peak memory ``fn()`` adds, MiB (see the module docstring for what is measured)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure and report, then leave without running any cleanup
        os.close(read)
        try:
            torch.set_num_threads(1)  # OpenMP's thread pool does not survive a fork
            with open("/proc/self/statm") as f:
                base = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with torch.no_grad():
                fn()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            os.write(write, str(peak - base).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return float(text) / 2**20 if text else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="aligner_librispeech")
    parser.add_argument("--batch-sizes", default="8", help="comma-separated batch sizes, e.g. 1,8")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                        help="bf16: model and encoder frames cast to bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--same-predictor", action="store_true",
                        help="add an RNN-T head with an LSTM prediction network of the Aligner's size")
    parser.add_argument("--lm-order", type=int, default=0, help="add '+ LM' rows with an n-gram LM of this order")
    parser.add_argument("--lm-sentences", type=int, default=2000, help="random sentences the LM is built from")
    parser.add_argument("--lm-weight", type=float, default=0.3)
    args = parser.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise SystemExit(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}") from None
    if not batch_sizes or min(batch_sizes) < 1:
        raise SystemExit(f"--batch-sizes must be >= 1, got {args.batch_sizes!r}")
    if args.lm_order < 0 or (args.lm_order and args.lm_sentences < 1):
        raise SystemExit("--lm-order must be >= 0 and --lm-sentences >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    model = AstraModel(preset(args.preset, dropout=0.0), args.vocab).eval()
    cfg = model.cfg
    lstm_rnnt = None
    if args.same_predictor:
        lstm_rnnt = AlignerDecoder(cfg.d_model, args.vocab, cfg.pred_dim, cfg.pred_layers, cfg.joint_dim, 0.0).eval()
        lstm_rnnt.to(device=device, dtype=dtype)
    model.to(device=device, dtype=dtype)
    counts = model.num_parameters()
    fusion = None
    if args.lm_order:
        fusion, ngrams = random_lm(args.vocab, args.lm_order, args.lm_sentences, args.lm_weight)
    print(f"Preset `{args.preset}` ({counts['total'] / 1e6:.1f}M parameters, vocab {args.vocab}; Aligner LSTM "
          f"{cfg.pred_dim} x{cfg.pred_layers} + joint {cfg.joint_dim}; RNN-T head stateless {cfg.rnnt_pred_dim} "
          f"+ joint {cfg.rnnt_joint_dim}), T'={FRAMES_OUT}, U={TOKENS}, {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats}")
    if fusion is not None:
        print(f"LM: {args.lm_order}-gram, {ngrams} n-grams of {args.lm_sentences} random sentences, weight "
              f"{args.lm_weight}, pre-beam {fusion.pre_beam(args.beam)} tokens per hypothesis")
    for batch in batch_sizes:
        _bench_batch(model, lstm_rnnt, batch, args, device, dtype, fusion)
    return 0


def _bench_batch(model, lstm_rnnt, batch: int, args, device, dtype, fusion: LmFusion | None) -> None:
    cfg = model.cfg
    features = torch.randn(batch, INPUT_FRAMES, cfg.num_features).to(device=device, dtype=dtype)
    lens = torch.full((batch,), INPUT_FRAMES, device=device)
    with torch.no_grad():
        encode_ms, (top, enc_lens, layers) = _median_ms(
            lambda: model.forward_encoder(features, lens, (cfg.rnnt_layer, cfg.inter_ctc_layer)),
            args.repeats, args.device,
        )
    if int(enc_lens[0]) != FRAMES_OUT:
        raise SystemExit(f"expected T'={FRAMES_OUT}, got {int(enc_lens[0])} (use a 4x-subsampling preset)")
    frames = _craft(model, lstm_rnnt, top)
    ctc_head = model.ctc if model.ctc is not None else model.inter_ctc
    ctc_in = top if model.ctc is not None else layers[cfg.inter_ctc_layer]
    with torch.no_grad():
        ctc_log_probs = ctc_head(ctc_in)
    beam = args.beam
    rows = {
        "Aligner greedy": lambda: decoding.aligner_greedy(model.aligner, frames, enc_lens, EOS_ID),
        STATELESS: lambda: decoding.rnnt_greedy(model.rnnt, frames, enc_lens, max_symbols=1),
    }
    if lstm_rnnt is not None:
        rows[SAME_PREDICTOR] = lambda: rnnt_lstm_greedy(lstm_rnnt, frames, enc_lens)
    rows["CTC greedy"] = lambda: ctc_head.greedy(ctc_in, enc_lens)
    searches = {
        f"Aligner beam {beam}": lambda lm=None: decoding.aligner_beam(
            model.aligner, frames, enc_lens, EOS_ID, beam, lm=lm),
        f"Aligner + CTC beam {beam} (ctc_weight 0.3)": lambda lm=None: decoding.aligner_beam(
            model.aligner, frames, enc_lens, EOS_ID, beam, ctc_log_probs=ctc_log_probs, ctc_weight=0.3, lm=lm),
        f"RNN-T beam {beam} (modified, stateless head)": lambda lm=None: decoding.rnnt_beam(
            model.rnnt, frames, enc_lens, beam, lm=lm),
        f"CTC prefix beam {beam} (ctc_beam)": lambda lm=None: ctc_beam_search(
            ctc_log_probs, enc_lens, BLANK_ID, beam, lm=lm)[0],
        f"CTC prefix beam {beam}, per-candidate prefix scores": per_candidate_scores(
            lambda lm=None: ctc_beam_search(ctc_log_probs, enc_lens, BLANK_ID, beam, lm=lm)[0]),
    }
    without_lm = {}  # "+ LM" row -> the row of the same search without it
    for name, search in searches.items():
        rows[name] = search
        if fusion is not None:
            rows[f"{name} + LM"] = lambda search=search: search(fusion.for_batch(["xx"] * batch, device))
            without_lm[f"{name} + LM"] = name
    results = {}
    for name, fn in rows.items():
        with torch.no_grad():
            ms, hyps = _median_ms(fn, args.repeats, args.device)
        results[name] = (ms, hyps, _peak_mib(fn, args.device))
    base = results["Aligner greedy"][0]
    print(f"\nB={batch} (encoding: {encode_ms:.0f} ms per batch)\n")
    lm_column = (" x without LM |", "---:|") if fusion is not None else ("", "")
    print("| decoder | ms per batch | x Aligner greedy | peak memory MiB | tokens / utt |" + lm_column[0])
    print("|---|---:|---:|---:|---:|" + lm_column[1])
    for name, (ms, hyps, peak) in results.items():
        tokens = f"{statistics.mean(len(h) for h in hyps):.0f}"
        ratio = f" {ms / results[without_lm[name]][0]:.2f} |" if name in without_lm else " |"
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} | {peak:.1f} | {tokens} |" + (ratio if fusion else ""))
    ratios = [f"stateless RNN-T / Aligner = {results[STATELESS][0] / base:.2f}"]
    if lstm_rnnt is not None:
        ratios.append(f"same-predictor RNN-T / Aligner = {results[SAME_PREDICTOR][0] / base:.2f}")
    print(f"\nGreedy decode time ratios at B={batch}: " + "; ".join(ratios))


if __name__ == "__main__":
    raise SystemExit(main())
