"""Training config sections that do not depend on the model or the data code.

:class:`LossConfig`, :class:`OptimConfig`, :class:`RunConfig` and :class:`FinetuneConfig`
are the ``losses``, ``optim``, ``run`` and ``finetune`` sections of
:class:`astra.train.config.TrainConfig`; every field is documented in ``docs/training.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from astra.config import check_choices
from astra.constants import DecodeMethod

LOSS_NAMES = (
    "aligner",
    "ctc",
    "inter_ctc",
    "inter_aligner",
    "rnnt",
    "rnnt_simple",
    "consistency",
    "aligned_consistency",
    "text_aligner",
    "text_rnnt",
    "text_ctc",
    "transduction_kl",
)
LR_DECAYS = ("cosine", "linear", "inverse_sqrt", "constant")
# (optim.decay keeps a hand-written check: its error names the value as "optim.decay='cos'")
MixedPrecision = Literal["no", "bf16", "fp16"]
TextBatches = Literal["share", "add"]
BestMetric = Literal["valid_loss", "wer"]


@dataclass
class RampConfig:
    """Schedule of a loss weight: 0 before ``start``, linear up to its value over ``steps``;
    with ``decay_steps`` > 0, linear down from ``decay_start`` to 0 over ``decay_steps``."""

    start: int = 0
    steps: int = 0
    decay_start: int = 0
    decay_steps: int = 0  # 0 = no decay

    def validate(self) -> None:
        for name in ("start", "steps", "decay_start", "decay_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"ramp {name}={getattr(self, name)} must be >= 0")
        if self.decay_steps and self.decay_start < self.start + self.steps:
            raise ValueError(
                f"ramp decay_start={self.decay_start} must be >= start + steps = {self.start + self.steps}"
            )


@dataclass
class LossConfig:
    """Weights of the model's unweighted losses (``ModelOutput.losses``) and their schedules.

    A loss whose weight is 0 is not computed (the trainer tells the model which losses it
    needs; a weight that ramps up from 0 is needed). ``ramps`` schedules a weight:
    e.g. ``consistency: {start: 2000, steps: 2000}`` keeps the ASTRA consistency off until the RNN-T alignment
    head has warmed up for 2000 steps, then ramps it in over the next 2000;
    ``transduction_kl: {decay_start: 2000, decay_steps: 1000}`` keeps the lattice-guided KL on
    for 2000 steps, then fades it out.
    """

    aligner: float = 1.0
    ctc: float = 0.0
    inter_ctc: float = 0.3
    inter_aligner: float = 0.0
    rnnt: float = 0.5
    rnnt_simple: float = 0.5
    consistency: float = 0.1  # the ASTRA consistency loss (arXiv:2406.06664; model.consistency)
    aligned_consistency: float = 0.0  # speech top frame u vs the text path's frame u (astra.losses.aligned_consistency)
    text_aligner: float = 1.0
    text_rnnt: float = 0.5
    text_ctc: float = 0.0  # CTC head on unpaired text (model.text_ctc_repeat)
    transduction_kl: float = 0.0  # lattice-guided attention KL (model.transduction_kl_layer)
    other: dict[str, float] = field(default_factory=dict)  # weights of further model losses
    ramps: dict[str, RampConfig] = field(
        default_factory=lambda: {"consistency": RampConfig(start=1000, steps=1000)}
    )
    # self-attention fixed to identity for N steps, against time reversal ("The Conformer
    # Encoder May Reverse the Time Dimension", arXiv:2410.00680)
    identity_attention_steps: int = 0

    RENAMED_KEYS = {"astra": "consistency"}  # old key -> new key (a one-line error names the new one)

    def weight(self, name: str) -> float:
        """The configured (un-ramped) weight of loss ``name``; KeyError if it has none."""
        if name in LOSS_NAMES:
            return float(getattr(self, name))
        return float(self.other[name])

    def validate(self) -> None:
        for name in LOSS_NAMES:
            if getattr(self, name) < 0:
                raise ValueError(f"losses.{name}={getattr(self, name)} must be >= 0")
        for name, value in self.other.items():
            if name in LOSS_NAMES:
                raise ValueError(f"losses.other.{name}: set it as losses.{name}")
            if value < 0:
                raise ValueError(f"losses.other.{name}={value} must be >= 0")
        known = set(LOSS_NAMES) | set(self.other)
        for name in self.ramps:
            if name in self.RENAMED_KEYS:
                raise ValueError(f"'losses.ramps.{name}' was renamed: use 'losses.ramps.{self.RENAMED_KEYS[name]}'")
            if name not in known:
                raise ValueError(f"losses.ramps.{name}: no loss of that name (known: {sorted(known)})")
        if self.identity_attention_steps < 0:
            raise ValueError("losses.identity_attention_steps must be >= 0")


@dataclass
class OptimConfig:
    """AdamW, a warm-up + decay learning-rate schedule, clipping and accumulation."""

    lr: float = 1e-3  # peak learning rate, reached after warmup_steps
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    weight_decay: float = 1e-3  # not applied to biases and norm scales (1-d parameters)
    warmup_steps: int = 1000  # linear warm-up from 0
    decay: str = "cosine"  # after warm-up: cosine | linear (to min_lr_ratio*lr at max_steps) | inverse_sqrt | constant
    min_lr_ratio: float = 0.05
    max_grad_norm: float = 5.0  # global-norm clipping; 0 = off (the norm is still logged)
    grad_accum_steps: int = 1  # micro-batches per optimizer step (per process)
    # "share": a text batch is one of a step's grad_accum_steps micro-batches (it takes a speech
    # batch's place); "add": a step always has grad_accum_steps speech batches and the text
    # batches the stream puts between them come on top (equal speech per step with and without
    # unpaired text: a fair paired-only comparison at equal steps)
    text_batches: TextBatches = "share"

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr={self.lr} must be > 0")
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas={self.betas} must have two values")
        if self.decay not in LR_DECAYS:
            raise ValueError(f"optim.decay={self.decay!r}: use one of {LR_DECAYS}")
        if self.warmup_steps < 0:
            raise ValueError("optim.warmup_steps must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.max_grad_norm < 0:
            raise ValueError("optim.max_grad_norm must be >= 0")
        if self.grad_accum_steps < 1:
            raise ValueError("optim.grad_accum_steps must be >= 1")
        check_choices(self, "optim.")


@dataclass
class RunConfig:
    """Where and how long to train, what to save, validate and plot."""

    out_dir: str = "exp/run"
    max_steps: int = 10000  # optimizer steps
    seed: int = 1234
    mixed_precision: MixedPrecision = "no"  # lattices and losses stay in fp32
    cpu: bool = False  # force CPU even when a GPU is visible
    log_every: int = 10  # TensorBoard scalars every N steps
    save_every: int = 1000  # checkpoint every N steps (and at the end)
    keep_last: int = 3  # checkpoints kept besides the best ones
    keep_best: int = 1  # checkpoints kept by best validation metric
    best_metric: BestMetric = "valid_loss"  # wer: macro-average over languages
    validate_every: int = 1000  # 0 = never
    valid_split: str = "validation"  # "dev" is an alias
    valid_languages: list[str] = field(default_factory=list)  # [] = the data config's languages
    valid_max_batches: int = 0  # 0 = all
    decode_method: DecodeMethod = "aligner_greedy"  # for validation WER
    plot_every: int = 0  # PNG of per-layer attention every N steps; 0 = never
    alignment_every: int = 0  # alignment statistics (astra.analysis) to TensorBoard every N steps; 0 = never
    max_nonfinite: int = 20  # stop after this many non-finite steps in a row
    concat_fraction: float = 0.0  # fraction of a speech batch concatenated into long utterances
    feature_stats_utterances: int = 2000  # utterances for the global CMVN stats
    num_threads: int = 0  # torch intra-op CPU threads per process (torch.set_num_threads); 0 = torch default

    def validate(self) -> None:
        check_choices(self, "run.")
        for name in ("max_steps", "log_every", "save_every", "max_nonfinite", "feature_stats_utterances"):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name}={getattr(self, name)} must be >= 1")
        for name in ("keep_last", "keep_best", "validate_every", "valid_max_batches", "plot_every",
                     "alignment_every", "num_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"run.{name}={getattr(self, name)} must be >= 0")
        if self.keep_last < 1:
            raise ValueError("run.keep_last must be >= 1 (resume needs the latest checkpoint)")
        if not 0.0 <= self.concat_fraction <= 1.0:
            raise ValueError(f"run.concat_fraction={self.concat_fraction} must be in [0, 1]")


@dataclass
class FinetuneConfig:
    """Used by ``astra finetune --init CKPT`` (ignored by ``astra pretrain``)."""

    freeze: list[str] = field(default_factory=list)  # module-name prefixes, e.g. [text_encoder]
    text_injection: bool = True  # keep unpaired-text batches in the mix
    strict: bool = False  # also fail on weights missing from / unexpected in the checkpoint
    reset_feature_stats: bool = False  # recompute CMVN on the fine-tuning data
    # a SentencePiece model other than --init's (e.g. `astra tokenizer extend`): the run
    # trains with it; vocabulary rows are copied by piece string, new pieces initialised
    tokenizer: str | None = None
