#!/usr/bin/env python
"""Data loader throughput vs the tiny model's training consumption, on CPU.

    python tools/bench_data.py [--utterances 120] [--seconds 2 8] [--max-batch-seconds 60]
        [--workers 0 1 2] [--train-steps 6] [--formats wav flac] [--rates 16000]

Writes a synthetic corpus (tones, several formats and sample rates) to a temporary folder,
trains a small tokenizer, then measures:
- loader: seconds of audio per wall-clock second for one epoch of ``build_train_stream``
  (decode, resample, fbank, pad) with each worker count, over the whole epoch (worker
  start-up included) and after the first batch (steady state); also with the on-disk
  feature cache filled (``--cache-workers``);
- training: seconds of audio per wall-clock second of the ``tiny`` AstraModel's
  forward_speech + backward + AdamW step on already-made batches.
Prints a markdown table with the ratio loader / training (target: >= 5).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--utterances", type=int, default=120, help="training utterances (split over 2 languages)")
    p.add_argument("--seconds", type=float, nargs=2, default=(2.0, 8.0), help="utterance length range")
    p.add_argument("--max-batch-seconds", type=float, default=60.0)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cache-workers", type=int, nargs="*", default=[0],
                   help="also time these worker counts reading a filled feature cache")
    p.add_argument("--train-steps", type=int, default=6, help="timed training steps (after one warm-up)")
    p.add_argument("--formats", nargs="+", default=["wav", "flac"], help="audio formats of the corpus")
    p.add_argument("--rates", type=int, nargs="+", default=[16000], help="sample rates of the corpus")
    p.add_argument("--preset", default="tiny", help="model preset")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from astra.data.config import DataConfig
    from astra.data.stream import build_train_stream
    from astra.data.synthetic import write_local_corpus
    from astra.data.tokenizer import TokenizerTrainConfig, train_tokenizer
    from astra.data.training_text import collect_training_text

    try:
        from astra.model import AstraModel
        from astra.model.presets import preset
    except ImportError as e:
        print(f"bench_data: astra.model is not available ({e}); cannot measure training consumption", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        per_lang = args.utterances // 2
        root = write_local_corpus(
            Path(tmp) / "corpus", splits={"train": per_lang, "validation": 1, "test": 1}, seconds=tuple(args.seconds),
            formats=tuple(args.formats), sample_rates=tuple(args.rates),
        )
        cfg = DataConfig(corpora=[str(root)], max_batch_seconds=args.max_batch_seconds, max_utterance_seconds=0)
        tok = train_tokenizer(collect_training_text(cfg)[0], Path(tmp) / "tok.model",
                              TokenizerTrainConfig(vocab_size=100, character_coverage=1.0))

        rows = []
        cfg.num_workers = 0
        next(iter(build_train_stream(cfg, tok, seed=0)))  # warm-up: imports, fbank kernels
        runs = [(f"loader, {w} worker(s)", w, False) for w in args.workers]
        runs += [(f"loader, {w} worker(s), feature cache filled", w, True) for w in args.cache_workers]
        for name, workers, cached in runs:
            cfg.num_workers = workers
            cfg.feature_cache = str(Path(tmp) / "features") if cached else None
            if cached:
                list(build_train_stream(cfg, tok, seed=0))  # fill the cache (not timed)
            stream = build_train_stream(cfg, tok, seed=0)
            start = time.perf_counter()
            audio, first = 0.0, None
            for b in stream:
                audio += float(b["durations"].sum())
                if first is None:
                    first = (time.perf_counter() - start, audio)
            wall = time.perf_counter() - start
            steady = (audio - first[1]) / max(wall - first[0], 1e-9)
            rows.append((name, audio, wall, steady))

        cfg.num_workers, cfg.feature_cache = 0, None
        batches = list(build_train_stream(cfg, tok, seed=1))
        model = AstraModel(preset(args.preset), tok.vocab_size)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(batch):
            out = model.forward_speech(batch)
            loss = sum(out.losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()

        step(batches[0])  # warm-up
        timed = [batches[(i + 1) % len(batches)] for i in range(args.train_steps)]
        start = time.perf_counter()
        for batch in timed:
            step(batch)
        train_wall = time.perf_counter() - start
        train_audio = sum(float(b["durations"].sum()) for b in timed)
        train_rate = train_audio / train_wall
        params = sum(p.numel() for p in model.parameters())

    print(f"corpus: {args.utterances} utterances of {args.seconds[0]:g}-{args.seconds[1]:g} s, formats "
          f"{'/'.join(args.formats)}, rates {'/'.join(map(str, args.rates))} Hz; "
          f"batches of <= {args.max_batch_seconds:g} s; "
          f"torch threads {torch.get_num_threads()}\n")
    print("| what | audio (s) | wall (s) | audio s / wall s | vs training | after 1st batch | vs training |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, audio, wall, steady in rows:
        rate = audio / wall
        print(f"| {name} | {audio:.1f} | {wall:.2f} | {rate:.1f} | {rate / train_rate:.1f}x | "
              f"{steady:.1f} | {steady / train_rate:.1f}x |")
    print(f"| training, `{args.preset}` model ({params / 1e6:.2f} M params), {args.train_steps} steps | "
          f"{train_audio:.1f} | {train_wall:.2f} | {train_rate:.1f} | 1.0x | | |")
    best = max(audio / wall for _, audio, wall, _ in rows)
    print(f"\nbest loader / training = {best / train_rate:.1f}x over the whole epoch (target >= 5x); "
          "'after 1st batch' leaves out worker start-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
