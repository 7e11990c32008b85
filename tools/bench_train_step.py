#!/usr/bin/env python
"""Training-step cost: several settings side by side, or one step split by part.

Side by side (``--variant``, the default mode)::

    python tools/bench_train_step.py --config exp/tiny/pretrain/config.yaml \\
        --variant base= --variant workers1=data.num_workers=1 \\
        --variant cache="data.feature_cache=/tmp/astra_fcache" [--steps 40] [--rounds 3] \\
        [--all-losses]

Each variant is ``NAME=KEY=VALUE[,KEY=VALUE...]`` (``astra pretrain --set`` overrides; an
empty list is the config as it is). Every round builds a fresh trainer per variant (same seed,
so the same batches) and times ``--steps`` training steps after ``--warmup`` untimed ones. The
variants run in turn within each round, so a slower or busier machine affects all of them
alike; a feature cache is filled by the first round and read by the later ones. Prints a
markdown table: seconds per step per round, the median, and its ratio to the first variant.
``--all-losses`` adds, after each variant, the same variant with every enabled loss computed
(the trainer's ``needed`` switch off: what a loss of weight 0 cost before it was skipped).

Breakdown (``--breakdown``)::

    python tools/bench_train_step.py --breakdown --config recipes/tiny/pretrain.yaml \\
        --set data.corpora=[CORPUS] --set data.tokenizer=TOK --set data.unpaired_text=[...]
    python tools/bench_train_step.py --breakdown --preset small [--device cuda --dtype bf16]

times ``--steps`` steps after ``--warmup`` ones, then runs ``--steps`` more under
``torch.profiler`` and splits them by part: the ``record_function`` ranges ``astra:*`` of the
model and the trainer (speech / text / shared encoder, Aligner, CTC, RNN-T head with its
simple loss, pruned loss and detached lattice, ASTRA consistency, data, optimizer), each in
the speech and in the text batches, forward and backward. A part's forward time is its range
minus the ``astra:*`` ranges nested in it (an encoder run inside the ASTRA loss counts as that
encoder). **Backward attribution**: ranges do not cover the backward pass, which runs in the
autograd engine; but every autograd node carries the *sequence number* of the forward op
that created it, and the profiler records it on both (``FunctionEvent.sequence_nr``, with
``fwd_thread`` on the backward event). Each ``autograd::engine::evaluate_function: X``
event is charged to the part of the forward op with the same (thread, sequence number),
the op that created the node (the last one recorded with that number, since the number
advances when a node is created). Gradient accumulation into parameters (``AccumulateGrad``,
no forward op) and the engine's own time between nodes are rows of their own. On CPU the
times are the ops' CPU times on the calling thread (CPU ops run synchronously); on CUDA
they are the GPU kernel times launched by each op and its children, and the step's wall
time is printed beside them. ``other`` is the step's profiled time not in any part (loss
weighting, finiteness checks, Python). The profiler adds a few microseconds per op, so the
shares come from the profile and the seconds per step from the unprofiled steps.

Model and data: ``--config`` (a training config; its corpus and unpaired text are read
unless ``--synthetic``) and/or ``--preset NAME`` (the model preset's fields, default loss
weights, synthetic batches; no corpus needed). Synthetic batches: ``--utterances`` speech
utterances of ``--seconds`` x U(0.6, 1) seconds of random log-mel features with
``--tokens-per-second`` random tokens of a ``--vocab`` vocabulary, and ``--text-ratio`` text
batches per speech batch of ``--sentences`` sentences of ``--text-tokens`` x U(0.5, 1)
tokens. ``--device cuda`` and ``--dtype bf16`` set ``run.cpu`` / ``run.mixed_precision``.
Everything a trainer writes goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PART_PREFIX = "astra:"
# part range name -> table label, in table order
PARTS = {
    "speech_encoder": "speech encoder (front end + Conformer)",
    "text_encoder": "text encoder",
    "shared_encoder": "shared encoder",
    "aligner": "Aligner decoder + loss",
    "inter_aligner": "InterAligner decoder + loss",
    "ctc": "CTC",
    "inter_ctc": "InterCTC",
    "rnnt_head": "RNN-T head: prediction net, simple projections",
    "rnnt_simple": "RNN-T simple loss (+ pruning occupancies)",
    "rnnt_pruned": "RNN-T pruned loss (ranges, joiner, loss)",
    "rnnt_lattice": "RNN-T detached simple lattice (for ASTRA / KL)",
    "consistency": "ASTRA consistency (distance, lattice weights)",
    "aligned_consistency": "aligned consistency (top frame u vs text frame u)",
    "transduction_kl": "transduction KL",
    "speech_batch": "rest of the forward (checks, masks, loss sums)",
    "text_batch": "rest of the forward (checks, masks, loss sums)",
}
ENCODERS = ("speech_encoder", "text_encoder", "shared_encoder")
STEP_PARTS = {  # trainer ranges outside the batches
    "data": "data (next batch, to device)",
    "optimizer": "optimizer (clip + AdamW)",
    "backward": "backward engine (between nodes)",
    "accumulate_grad": "gradient accumulation into .grad",
    "other": "other (loss weighting, checks, Python)",
}
DTYPES = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name=k=v,k2=v2"`` -> ``("name", ["k=v", "k2=v2"])``; raises ``ValueError``."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--variant {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...] or NAME=")
    overrides = [kv for kv in rest.split(",") if kv]
    bad = [kv for kv in overrides if "=" not in kv]
    if bad:
        raise ValueError(f"--variant {text!r}: {bad} is not KEY=VALUE")
    return name, overrides


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="a training config YAML (e.g. a run's config.yaml or a recipe's)")
    p.add_argument("--preset", help="model preset (astra.model.presets): synthetic batches, default loss weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every variant (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                   help="a setting to time (repeatable; the first is the reference)")
    p.add_argument("--all-losses", action="store_true",
                   help="also time each variant with every enabled loss computed (weight 0 or not)")
    p.add_argument("--breakdown", action="store_true", help="split one step by part (torch.profiler)")
    p.add_argument("--steps", type=int, default=40, help="timed (and, with --breakdown, profiled) steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--start-step", type=int, default=0,
                   help="the trainer's step counter at the start (past warm-up / loss ramps)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="mixed precision (default: the config's run.mixed_precision)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: the config's run.num_threads)")
    p.add_argument("--synthetic", action="store_true", help="synthetic batches even with --config")
    g = p.add_argument_group("synthetic batches")
    g.add_argument("--vocab", type=int, default=1024)
    g.add_argument("--utterances", type=int, default=16, help="speech utterances per batch")
    g.add_argument("--seconds", type=float, default=10.0, help="longest utterance (others x U(0.6, 1))")
    g.add_argument("--tokens-per-second", type=float, default=3.0)
    g.add_argument("--sentences", type=int, default=32, help="sentences per text batch")
    g.add_argument("--text-tokens", type=int, default=40, help="longest sentence (others x U(0.5, 1))")
    g.add_argument("--text-ratio", type=float, default=0.5, help="text batches per speech batch")
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--steps and --rounds must be >= 1, --warmup >= 0")
    if not args.config and not args.preset:
        p.error("give --config or --preset (or both)")
    if args.config and not Path(args.config).is_file():
        p.error(f"config not found: {args.config}")
    if args.preset:
        from astra.model.presets import PRESETS

        if args.preset not in PRESETS:
            p.error(f"unknown preset {args.preset!r}: use one of {sorted(PRESETS)}")
    args.synthetic = args.synthetic or not args.config
    if args.synthetic and (args.utterances < 1 or args.sentences < 1 or args.seconds <= 0 or args.vocab < 6
                           or args.text_ratio < 0 or args.tokens_per_second <= 0 or args.text_tokens < 1):
        p.error("synthetic batches: sizes must be positive (--vocab >= 6)")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available to torch")
    try:
        args.variants = [parse_variant(v) for v in (args.variant or ["config="])]
    except ValueError as e:
        p.error(str(e))
    names = [n for n, _ in args.variants]
    if len(set(names)) != len(names):
        p.error(f"variant names must differ: {names}")
    return args


# ---------------------------------------------------------------------------- synthetic data
class SyntheticStream:
    """Endless speech batches (random log-mel ``features [B, T, 80]``, random tokens ``[B, U]``)
    with ``text_ratio`` text batches per speech batch in between, from a generator seeded by
    (seed, epoch). Has the train stream's ``set_epoch`` / ``state_dict`` / ``load_state_dict``."""

    def __init__(self, vocab: int, utterances: int, seconds: float, tokens_per_second: float,
                 sentences: int, text_tokens: int, text_ratio: float, seed: int = 0) -> None:
        self.vocab, self.utterances, self.seconds = vocab, utterances, seconds
        self.tokens_per_second, self.sentences, self.text_tokens = tokens_per_second, sentences, text_tokens
        self.text_ratio, self.seed, self.epoch = text_ratio, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]

    def _tokens(self, lens, g):
        import torch

        tokens = torch.randint(4, self.vocab, (len(lens), int(lens.max())), generator=g)
        return tokens.masked_fill(torch.arange(tokens.size(1))[None, :] >= lens[:, None], 0)

    def speech_batch(self, g) -> dict:
        import torch

        b = self.utterances
        seconds = self.seconds * (0.6 + 0.4 * torch.rand(b, generator=g))
        frames = (seconds * 100).long().clamp_min(100)
        token_lens = (seconds * self.tokens_per_second).round().long().clamp_min(1)
        features = torch.randn(b, int(frames.max()), 80, generator=g)
        features = features.masked_fill(torch.arange(features.size(1))[None, :, None] >= frames[:, None, None], 0.0)
        return dict(kind="speech", features=features, feature_lens=frames, tokens=self._tokens(token_lens, g),
                    token_lens=token_lens, keys=[f"s{i}" for i in range(b)], languages=["xx"] * b,
                    texts=[""] * b, durations=frames.float() / 100)

    def text_batch(self, g) -> dict:
        import torch

        n = self.sentences
        lens = (self.text_tokens * (0.5 + 0.5 * torch.rand(n, generator=g))).round().long().clamp_min(1)
        return dict(kind="text", tokens=self._tokens(lens, g), token_lens=lens, languages=["xx"] * n, texts=[""] * n)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed * 1009 + self.epoch)
        credit = 0.0
        while True:
            credit += self.text_ratio
            while credit >= 1.0:
                credit -= 1.0
                yield self.text_batch(g)
            yield self.speech_batch(g)


def synthetic_parts_builder(args):
    """``build_parts`` for the trainer: an AstraModel of the config and a :class:`SyntheticStream`."""

    def build(cfg, rank, world_size):
        from astra.model import AstraModel
        from astra.train.trainer import TrainingParts

        stream = SyntheticStream(args.vocab, args.utterances, args.seconds, args.tokens_per_second,
                                 args.sentences, args.text_tokens, args.text_ratio, seed=cfg.run.seed)
        return TrainingParts(model=AstraModel(cfg.model, args.vocab), train_stream=stream)

    return build


# ---------------------------------------------------------------------------- trainers
def make_trainer(args, overrides: list[str], out_dir: Path):
    """A set-up :class:`Trainer` for the config/preset, ``--set`` values and ``overrides``,
    its step counter at ``--start-step``."""
    import torch

    from astra.config import load_config
    from astra.train.build import build_parts
    from astra.train.config import TrainConfig
    from astra.train.trainer import Trainer

    sets = []
    if args.preset:
        from astra.model.presets import PRESETS

        sets += [f"model.{k}={v}" for k, v in PRESETS[args.preset].items()]
    sets += [f"run.out_dir={out_dir}", "run.validate_every=0", "run.plot_every=0", "run.alignment_every=0",
             f"run.cpu={'true' if args.device == 'cpu' else 'false'}"]
    if args.dtype:
        sets.append(f"run.mixed_precision={DTYPES[args.dtype]}")
    if args.threads:
        sets.append(f"run.num_threads={args.threads}")
    cfg = load_config(TrainConfig, args.config, sets + args.set + overrides)
    trainer = Trainer(cfg, synthetic_parts_builder(args) if args.synthetic else build_parts)
    trainer._setup()
    if args.device == "cuda" and trainer.accelerator.device.type != "cuda":
        raise RuntimeError(f"--device cuda: the trainer runs on {trainer.accelerator.device}")
    trainer.wrapped.train()
    trainer.state.step = args.start_step
    torch.manual_seed(0)
    return trainer


def _sync(args) -> None:
    if args.device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_steps(trainer, args, steps: int) -> float:
    """Seconds per training step over ``steps`` steps."""
    _sync(args)
    start = time.perf_counter()
    for _ in range(steps):
        trainer._train_step()
        trainer.state.step += 1
    _sync(args)
    return (time.perf_counter() - start) / steps


def time_steps(args, overrides: list[str], out_dir: Path, all_losses: bool = False) -> float:
    """Seconds per training step of a fresh trainer (``--warmup`` steps untimed)."""
    trainer = make_trainer(args, overrides, out_dir)
    if all_losses:
        trainer.objective.needed = None
    if args.warmup:
        run_steps(trainer, args, args.warmup)
    seconds = run_steps(trainer, args, args.steps)
    trainer._close()
    return seconds


def compare_variants(args) -> int:
    runs = []
    for name, overrides in args.variants:
        runs.append((name, overrides, False))
        if args.all_losses:
            runs.append((f"{name}+all_losses", overrides, True))
    per_round: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    with tempfile.TemporaryDirectory(prefix="astra_bench_train_") as tmp:
        for r in range(args.rounds):
            for name, overrides, all_losses in runs:
                s = time_steps(args, overrides, Path(tmp) / f"{name}_{r}", all_losses)
                per_round[name].append(s)
                print(f"round {r + 1}/{args.rounds} {name}: {s:.3f} s/step", file=sys.stderr, flush=True)
    ref_name = runs[0][0]
    ref = statistics.median(per_round[ref_name])
    rounds = " | ".join(f"round {r + 1}" for r in range(args.rounds))
    print(f"\n{args.steps} steps per round, {_source(args)}\n")
    print(f"| variant | overrides | {rounds} | median (s/step) | vs {ref_name} |")
    print("|---|---|" + "---:|" * (args.rounds + 2))
    for name, overrides, all_losses in runs:
        med = statistics.median(per_round[name])
        cells = " | ".join(f"{s:.3f}" for s in per_round[name])
        what = " ".join(overrides) or "(config)"
        what += " + every loss computed" if all_losses else ""
        print(f"| {name} | {what} | {cells} | {med:.3f} | {med / ref:.2f} |")
    return 0


def _source(args) -> str:
    parts = [f"config {args.config}"] if args.config else []
    parts += [f"preset {args.preset}"] if args.preset else []
    if args.synthetic:
        parts.append(f"synthetic batches ({args.utterances} x <= {args.seconds:g} s, {args.tokens_per_second:g} "
                     f"tokens/s, V={args.vocab}; text {args.text_ratio:g} per speech batch, {args.sentences} x "
                     f"<= {args.text_tokens} tokens)")
    parts.append(f"{args.device} {args.dtype or 'config precision'}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- breakdown
def _part_of(event):
    """The nearest enclosing ``astra:*`` range of ``event`` (itself excluded) or None."""
    parent = event.cpu_parent
    while parent is not None and not parent.name.startswith(PART_PREFIX):
        parent = parent.cpu_parent
    return parent


def _kind_of(event) -> str:
    """``speech`` / ``text`` from the enclosing batch range, else ``step``."""
    while event is not None:
        if event.name in (PART_PREFIX + "speech_batch", PART_PREFIX + "text_batch"):
            return event.name[len(PART_PREFIX):].split("_")[0]
        event = event.cpu_parent
    return "step"


def attribute(events, device: str) -> tuple[dict[tuple[str, str, str], float], float]:
    """Microseconds by ``(kind, part, "fwd"|"bwd")`` and the profiled total of the steps.

    ``events`` are a profile's ``FunctionEvent``s of whole ``astra:step`` ranges (see the
    module docstring for the attribution rules); ``device`` ``"cuda"`` counts GPU kernel time.
    """
    from torch.autograd import DeviceType

    def cost(e) -> float:
        return e.device_time_total if device == "cuda" else e.cpu_time_total

    cpu = [e for e in events if e.device_type == DeviceType.CPU]
    times: dict[tuple[str, str, str], float] = defaultdict(float)
    total = sum(cost(e) for e in cpu if e.name == PART_PREFIX + "step")
    backward_nodes = [e for e in cpu if e.name.startswith("autograd::engine::evaluate_function: ")]
    in_backward = set()
    for node in backward_nodes:
        stack = list(node.cpu_children)
        while stack:
            child = stack.pop()
            in_backward.add(id(child))
            stack.extend(child.cpu_children)
    # forward: every astra:* range minus the astra:* ranges directly nested in it
    for e in cpu:
        if not e.name.startswith(PART_PREFIX) or e.name == PART_PREFIX + "step" or id(e) in in_backward:
            continue
        name = e.name[len(PART_PREFIX):]
        kind = _kind_of(e)
        phase = "bwd" if name == "backward" else "fwd"
        times[(kind, name, phase)] += cost(e)
        outer = _part_of(e)
        if outer is not None and outer.name != PART_PREFIX + "step":
            outer_name = outer.name[len(PART_PREFIX):]
            times[(_kind_of(outer), outer_name, "bwd" if outer_name == "backward" else "fwd")] -= cost(e)
    # the op that created each autograd node: the last recorded forward op with its number
    creator: dict[tuple[int, int], object] = {}
    for e in sorted(cpu, key=lambda e: e.time_range.start):
        if e.sequence_nr >= 0 and id(e) not in in_backward and not e.name.startswith("autograd::"):
            creator[(e.thread, e.sequence_nr)] = e
    for node in backward_nodes:
        if id(node) in in_backward:  # a node evaluated inside another (re-entrant backward)
            continue
        spent = cost(node)
        outer = _part_of(node)  # CPU: the astra:backward range (CUDA: another thread, none)
        if outer is not None and outer.name != PART_PREFIX + "step":
            times[(_kind_of(outer), outer.name[len(PART_PREFIX):], "bwd")] -= spent
        forward = creator.get((node.fwd_thread, node.sequence_nr)) if node.sequence_nr >= 0 else None
        if forward is None:
            times[("step", "accumulate_grad", "bwd")] += spent
            continue
        part = _part_of(forward) if not forward.name.startswith(PART_PREFIX) else forward
        name = part.name[len(PART_PREFIX):] if part is not None else "other"
        times[(_kind_of(forward), name, "bwd")] += spent
    times[("step", "other", "fwd")] += total - sum(times.values())
    return dict(times), total


def profile_steps(trainer, args, steps: int):
    """``torch.profiler`` events of ``steps`` training steps, each in an ``astra:step`` range."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    _sync(args)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            with record_function(PART_PREFIX + "step"):
                trainer._train_step()
                if args.device == "cuda":
                    torch.cuda.synchronize()
            trainer.state.step += 1
    return prof.events()


def breakdown(args) -> int:
    overrides = args.variants[0][1]
    with tempfile.TemporaryDirectory(prefix="astra_bench_train_") as tmp:
        trainer = make_trainer(args, overrides, Path(tmp) / "run")
        counts = trainer.model.num_parameters() if hasattr(trainer.model, "num_parameters") else {}
        needed = trainer.objective.needed
        if args.warmup:
            run_steps(trainer, args, args.warmup)
        seconds = run_steps(trainer, args, args.steps)
        events = profile_steps(trainer, args, args.steps)
        trainer._close()
    times, total = attribute(events, args.device)
    print_breakdown(args, times, total, seconds, counts, needed)
    return 0


def print_breakdown(args, times, total, seconds, counts, needed) -> None:
    n = args.steps
    unit = "GPU kernel ms" if args.device == "cuda" else "CPU ms"
    params = f", {counts['total'] / 1e6:.2f}M parameters" if "total" in counts else ""
    print(f"\n{_source(args)}{params}; {n} profiled steps after {args.warmup + n} (from step {args.start_step})")
    if needed is not None:
        print("losses computed: speech " + ", ".join(sorted(needed["speech"])) + "; text "
              + ", ".join(sorted(needed["text"])))
    print(f"\nunprofiled: {seconds:.3f} s/step; profiled total: {total / n / 1000:.1f} {unit} per step\n")
    print(f"| batch | part | forward ({unit}/step) | backward ({unit}/step) | total | % of step |")
    print("|---|---|---:|---:|---:|---:|")
    rows = []
    for kind in ("speech", "text"):
        for name, label in PARTS.items():
            if name.endswith("_batch") and not name.startswith(kind):
                continue
            fwd, bwd = times.get((kind, name, "fwd"), 0.0), times.get((kind, name, "bwd"), 0.0)
            if fwd or bwd:
                rows.append((kind, name, label, fwd, bwd))
    for name, label in STEP_PARTS.items():
        fwd, bwd = times.get(("step", name, "fwd"), 0.0), times.get(("step", name, "bwd"), 0.0)
        stray = sum(v for (k, p, _), v in times.items() if k == "step" and p in PARTS)  # outside a batch
        fwd += stray if name == "other" else 0.0
        if fwd or bwd:
            rows.append(("step", name, label, fwd, bwd))
    for kind, _, label, fwd, bwd in rows:
        share = 100 * (fwd + bwd) / total if total else 0.0
        print(f"| {kind} | {label} | {fwd / n / 1000:.1f} | {bwd / n / 1000:.1f} | {(fwd + bwd) / n / 1000:.1f} "
              f"| {share:.1f} |")
    for kind in ("speech", "text"):
        part = sum(fwd + bwd for k, _, _, fwd, bwd in rows if k == kind)
        print(f"| {kind} | **all of the {kind} batches** | | | {part / n / 1000:.1f} | {100 * part / total:.1f} |")
    encoders = sum(fwd + bwd for k, name, _, fwd, bwd in rows if name in ENCODERS and k != "step")
    print(f"\nthe three encoders (speech, text, shared; forward + backward, both batch kinds): "
          f"{100 * encoders / total:.1f} % of the step; everything else {100 * (1 - encoders / total):.1f} %")


def main(argv=None) -> int:
    args = parse_args(argv)
    return breakdown(args) if args.breakdown else compare_variants(args)


if __name__ == "__main__":
    sys.exit(main())
