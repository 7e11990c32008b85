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

Usage: ``python tools/bench_decode.py [--preset NAME] [--batch-sizes 1,8] [--device cpu|cuda]
[--dtype fp32|bf16] [--repeats 5] [--vocab 1024] [--beam 4] [--threads N] [--same-predictor]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from astra.model import AstraModel, decoding, preset
from astra.model.aligner_decoder import AlignerDecoder
from astra.model.astra_model import BLANK_ID, EOS_ID, SOS_ID

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


def main() -> None:
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
    args = parser.parse_args()
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise SystemExit(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}") from None
    if not batch_sizes or min(batch_sizes) < 1:
        raise SystemExit(f"--batch-sizes must be >= 1, got {args.batch_sizes!r}")
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
    print(f"Preset `{args.preset}` ({counts['total'] / 1e6:.1f}M parameters, vocab {args.vocab}; Aligner LSTM "
          f"{cfg.pred_dim} x{cfg.pred_layers} + joint {cfg.joint_dim}; RNN-T head stateless {cfg.rnnt_pred_dim} "
          f"+ joint {cfg.rnnt_joint_dim}), T'={FRAMES_OUT}, U={TOKENS}, {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats}")
    for batch in batch_sizes:
        _bench_batch(model, lstm_rnnt, batch, args, device, dtype)


def _bench_batch(model, lstm_rnnt, batch: int, args, device, dtype) -> None:
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
    rows.update({
        "CTC greedy": lambda: ctc_head.greedy(ctc_in, enc_lens),
        f"Aligner beam {beam}": lambda: decoding.aligner_beam(model.aligner, frames, enc_lens, EOS_ID, beam),
        f"Aligner + CTC beam {beam} (ctc_weight 0.3)": lambda: decoding.aligner_beam(
            model.aligner, frames, enc_lens, EOS_ID, beam, ctc_log_probs=ctc_log_probs, ctc_weight=0.3,
        ),
        f"RNN-T beam {beam} (modified, stateless head)": lambda: decoding.rnnt_beam(model.rnnt, frames, enc_lens, beam),
    })
    results = {}
    for name, fn in rows.items():
        with torch.no_grad():
            ms, hyps = _median_ms(fn, args.repeats, args.device)
        results[name] = (ms, hyps, _peak_mib(fn, args.device))
    base = results["Aligner greedy"][0]
    print(f"\nB={batch} (encoding: {encode_ms:.0f} ms per batch)\n")
    print("| decoder | ms per batch | x Aligner greedy | peak memory MiB | tokens / utt |")
    print("|---|---:|---:|---:|---:|")
    for name, (ms, hyps, peak) in results.items():
        tokens = f"{statistics.mean(len(h) for h in hyps):.0f}"
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} | {peak:.1f} | {tokens} |")
    ratios = [f"stateless RNN-T / Aligner = {results[STATELESS][0] / base:.2f}"]
    if lstm_rnnt is not None:
        ratios.append(f"same-predictor RNN-T / Aligner = {results[SAME_PREDICTOR][0] / base:.2f}")
    print(f"\nGreedy decode time ratios at B={batch}: " + "; ".join(ratios))


if __name__ == "__main__":
    main()
