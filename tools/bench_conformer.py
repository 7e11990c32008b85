#!/usr/bin/env python
"""astra's Conformer stack against ``torchaudio.models.Conformer`` at equal size, forward +
backward, measured side by side; prints a markdown table.

    python tools/bench_conformer.py [--preset small] [--batch 8] [--frames 250] [--repeats 5]
        [--device cpu|cuda] [--dtype fp32|bf16] [--threads N]

Both stacks get the preset's D, heads, FF multiplier, depthwise kernel and layer count (the
preset's speech + shared layers), dropout 0, the same input ``x [B, T', D]`` with lengths
U(0.6, 1) x T' (padded), and a sum of the outputs on valid frames back-propagated. One
repeat times every stack once (alternating, so a busy machine slows all alike), starting
with a different stack each repeat (the first of a round runs slower);
the table gives the median ms per forward + backward and astra / torchaudio. What differs
by design: astra adds rotary position encoding to q/k and zeroes padded frames before each
frame-mixing op; torchaudio's block has no position encoding and uses BatchNorm in the
convolution module (astra: ``conv_norm`` LayerNorm or per-utterance norm, both timed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--layers", type=int, default=0, help="layers (0: the preset's speech + shared layers)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=250, help="T' (encoder frames) of the longest input")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if min(args.batch, args.frames, args.repeats) < 1:
        p.error("--batch, --frames and --repeats must be >= 1")
    return args


class AstraStack:
    """astra's blocks as one module: ``(x [B, T', D], lengths [B]) -> [B, T', D]``."""

    def __init__(self, cfg):
        import torch

        from astra.model.encoders import _blocks, _run_blocks

        self.blocks = _blocks(cfg, cfg.speech_layers + cfg.shared_layers)
        self.run = _run_blocks
        self.module = torch.nn.Sequential(*self.blocks)

    def __call__(self, x, lengths):
        return self.run(self.blocks, x, lengths)


def build(args):
    import torch
    import torchaudio

    from astra.model.presets import preset

    cfg = preset(args.preset, dropout=0.0)
    if args.layers:
        cfg.speech_layers, cfg.shared_layers = args.layers, 0
    layers = cfg.speech_layers + cfg.shared_layers
    stacks = {}
    for norm in ("layer", "utterance"):
        cfg.conv_norm = norm
        stack = AstraStack(cfg)
        stack.module.to(args.device)
        stacks[f"astra (conv_norm={norm})"] = (stack, stack.module)
    ta = torchaudio.models.Conformer(
        input_dim=cfg.d_model, num_heads=cfg.num_heads, ffn_dim=cfg.ff_mult * cfg.d_model, num_layers=layers,
        depthwise_conv_kernel_size=cfg.conv_kernel, dropout=0.0,
    ).to(args.device)
    stacks["torchaudio.models.Conformer"] = (lambda x, lens: ta(x, lens)[0], ta)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.frames, cfg.d_model, generator=g).to(args.device)
    lens = (args.frames * (0.6 + 0.4 * torch.rand(args.batch, generator=g))).long().clamp(1, args.frames)
    lens[0] = args.frames
    return cfg, layers, stacks, x, lens.to(args.device)


def time_once(fn, module, x, lens, args) -> float:
    import torch

    valid = (torch.arange(x.size(1), device=x.device)[None, :] < lens[:, None])[:, :, None]
    module.zero_grad(set_to_none=True)
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
        out = fn(x, lens)
    (out.float() * valid).sum().backward()
    if args.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_conformer: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, layers, stacks, x, lens = build(args)
    times: dict[str, list[float]] = {name: [] for name in stacks}
    names = list(stacks)
    for r in range(args.warmup + args.repeats):
        # the order rotates each repeat: the stack timed first in a round runs measurably slower
        # (cold caches), so a fixed order would favour the last stack
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, module = stacks[name]
            s = time_once(fn, module, x, lens, args)
            if r >= args.warmup:
                times[name].append(s)
    ref = statistics.median(times["torchaudio.models.Conformer"])
    params = {name: sum(p.numel() for p in module.parameters()) / 1e6 for name, (_, module) in stacks.items()}
    print(f"\nConformer stacks, preset {args.preset}: {layers} layers, D={cfg.d_model}, H={cfg.num_heads}, "
          f"FF={cfg.ff_mult * cfg.d_model}, kernel {cfg.conv_kernel}; B={args.batch}, T'<={args.frames}, "
          f"{args.device} {args.dtype}, threads {torch.get_num_threads()}, median of {args.repeats}\n")
    print("| stack | parameters (M) | forward + backward (ms) | vs torchaudio |")
    print("|---|---:|---:|---:|")
    for name in stacks:
        med = statistics.median(times[name])
        print(f"| {name} | {params[name]:.2f} | {1000 * med:.1f} | {med / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
