"""Model configuration: one typed dataclass, loaded from YAML by ``astra.config``.

Layer indices of the shared encoder are 1-based (``k`` = after shared block k). Where a place
is asked for (``rnnt_layer``, ``consistency_layer``), ``0`` means "the encoder output before the
shared encoder" (speech encoder output S for speech, text encoder output E for text); a head that
can be switched off (``OPTIONAL_LAYERS``) is off with ``None`` (YAML ``null``), and ``0`` there is
refused. Saved configs of older versions used ``0`` for off and named the consistency loss's
fields ``astra*`` (``ModelConfig.RENAMED_KEYS``): :func:`upgrade_model_config` reads them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, get_args

from astra.config import check_choices
from astra.errors import ConfigError
from astra.losses.consistency_choices import ConsistencyDistance, ConsistencyMode

# the choices of the string (and subsampling) fields, checked by the loader and by validate()
PositionEncoding = Literal["rope", "rel_pos"]
SubsamplingFactor = Literal[4, 6, 8]
ConvNorm = Literal["utterance", "layer"]
CtcCompressMode = Literal["none", "runs", "labels"]
CtcCompressAlign = Literal["greedy", "forced"]
ConsistencyAlignment = Literal["simple", "pruned"]
ConsistencyStopGradient = Literal["none", "speech", "text"]
POSITION_ENCODINGS: tuple[str, ...] = get_args(PositionEncoding)
CONV_NORMS: tuple[str, ...] = get_args(ConvNorm)
# layers of heads that are off with None (older saved configs: 0)
OPTIONAL_LAYERS = ("inter_ctc_layer", "inter_aligner_layer", "transduction_kl_layer")

log = logging.getLogger(__name__)


def upgrade_model_config(raw: dict[str, Any], source: str = "a saved config") -> dict[str, Any]:
    """The ``model`` section of a saved config in today's form: a field that older versions
    named otherwise (``ModelConfig.RENAMED_KEYS``, e.g. ``astra_layer``) takes its new name
    (``consistency_layer``), and an ``OPTIONAL_LAYERS`` value ``0`` (older versions' "off")
    becomes ``None``. Returns a new dict when it changed something; logs what it changed."""
    new_names = ModelConfig.RENAMED_KEYS
    renamed = sorted(name for name in new_names if name in raw)
    for name in renamed:
        if new_names[name] in raw:
            raise ConfigError(f"{source}: model.{name} and model.{new_names[name]} are both set "
                              f"(model.{name} is the old name of model.{new_names[name]}): keep one")
    if renamed:
        log.info("%s: model.%s read as model.%s (renamed)", source, ", model.".join(renamed),
                 ", model.".join(new_names[name] for name in renamed))
        raw = {new_names.get(name, name): value for name, value in raw.items()}
    old = sorted(name for name in OPTIONAL_LAYERS if raw.get(name) == 0)
    if not old:
        return raw
    log.info("%s: model.%s = 0 read as null (off)", source, ", model.".join(old))
    return {**raw, **{name: None for name in old}}


@dataclass
class ModelConfig:
    """Architecture and loss options of :class:`astra.model.AstraModel`.

    Loss *weights* are not here (they live in the training config); a head is built and its
    loss returned only when it is enabled here.
    """

    # fields of older versions, old name -> new name: a YAML file or --set with an old name gets
    # a one-line error naming the new one; saved configs are upgraded (upgrade_model_config)
    RENAMED_KEYS = {
        "astra": "consistency",
        "astra_layer": "consistency_layer",
        "astra_mode": "consistency_mode",
        "astra_distance": "consistency_distance",
        "astra_lam": "consistency_lam",
        "astra_alignment": "consistency_alignment",
        "astra_stop_gradient": "consistency_stop_gradient",
    }

    # --- front end -------------------------------------------------------------------
    num_features: int = 80  # F, log-mel bins from astra.features.fbank
    subsampling: SubsamplingFactor = 4  # 4 (40 ms frames), 6 or 8
    subsampling_channels: int = 0  # Conv2d channels; 0 = d_model
    freq_warp: float = 0.0  # training only: mel axis stretched by U(1-w, 1+w) per utterance (VTLP-like)
    spec_augment: bool = True  # training only
    freq_masks: int = 2
    freq_mask_width: int = 27  # max bins per frequency mask
    time_masks: int = 10
    time_mask_width: int = 40  # max 10 ms frames per time mask
    time_mask_ratio: float = 0.05  # a time mask covers at most this fraction of the utterance

    # --- Conformer blocks (all encoders) --------------------------------------------------
    d_model: int = 144  # D
    num_heads: int = 4  # H
    ff_mult: int = 4
    conv_kernel: int = 31
    # after the depthwise conv: "layer" (per-frame LayerNorm) or "utterance" (per-utterance channel norm)
    conv_norm: ConvNorm = "layer"
    dropout: float = 0.1
    position_encoding: PositionEncoding = "rope"  # "rope" (rotary) or "rel_pos" (Transformer-XL style)
    speech_layers: int = 4  # N blocks after subsampling
    text_layers: int = 2  # M blocks after the token embedding
    shared_layers: int = 8  # K blocks shared by speech and text
    # where the text path enters the shared encoder: E is the input of the blocks after shared
    # layer text_entry_layer (0: all K blocks, E at S's place). With ctc_compress="labels" and
    # text_entry_layer = inter_ctc_layer, E meets the speech frames where they are one frame per
    # token, and the layers up to the InterCTC head (which CTC decoding reads) see speech only
    text_entry_layer: int = 0

    # --- Aligner decoder (Aligner-Encoders, arXiv:2502.05232) ---------------------------------------------------
    pred_dim: int = 320  # LSTM prediction network width
    pred_layers: int = 1
    joint_dim: int = 320
    aligner_label_smoothing: float = 0.0
    # long-form priming in training: this fraction of examples has the prediction network
    # primed with the last aligner_prime_tokens tokens of another utterance of the batch
    aligner_prime_prob: float = 0.0
    aligner_prime_tokens: int = 10

    # --- auxiliary heads ---------------------------------------------------------------
    top_ctc: bool = False  # CTC on the last shared layer (competes with the Aligner)
    inter_ctc_layer: int | None = 4  # shared layer of InterCTC; None = off
    # CTC compression after the InterCTC layer (astra/model/ctc_compress.py): "none", "runs"
    # (one frame per greedy label run, blank runs kept) or "labels" (blank runs dropped, a
    # learned end frame appended: U + 1 frames for a perfect CTC, the text path's shape). The
    # upper shared layers, the Aligner and any InterAligner above it read the compressed frames;
    # in training an utterance whose compressed frames are fewer than its U + 1 targets keeps
    # its uncompressed frames (counted as compress_fallback)
    ctc_compress: CtcCompressMode = "none"
    # which labels group the frames in training: "greedy" (the InterCTC argmax, as at test time)
    # or "forced" (the CTC forced alignment of the reference, astra/model/ctc_forced_align.py:
    # exactly U + 1 frames in "labels" mode, no fallback); decoding always uses the greedy labels
    ctc_compress_align: CtcCompressAlign = "greedy"
    # in training, no gradient from the compressed frames into the layers up to the InterCTC
    # layer (those then learn from the CTC, RNN-T and consistency terms only; the upper layers
    # and the Aligner read them as fixed features); in eval mode (diagnostics such as the
    # gradient alignment) the gradient passes
    ctc_compress_stop_gradient: bool = False
    # shared layer of InterAligner ("Progressive Alignment Objectives for Aligner-Encoder based ASR",
    # arXiv:2606.24147); None = off
    inter_aligner_layer: int | None = None

    # --- RNN-T alignment head (pruned RNN-T through astra.lattice) ----------------------
    rnnt_head: bool = True
    rnnt_layer: int = 0  # 0 = speech-encoder output S (text: E); k = after shared layer k
    rnnt_context: int = 2  # stateless prediction network: last tokens it sees
    rnnt_pred_dim: int = 256
    rnnt_joint_dim: int = 256
    rnnt_prune_range: int = 5
    rnnt_lm_only_scale: float = 0.25  # smoothing of the simple loss (k2 / icefall)
    rnnt_am_only_scale: float = 0.0

    # --- ASTRA consistency (ASTRA, arXiv:2406.06664) --------------------------------------------------
    consistency: bool = True  # the consistency loss (losses.consistency); needs rnnt_head
    consistency_layer: int = 0  # 0 = S vs E (encoder outputs); k = after shared layer k
    consistency_mode: ConsistencyMode = "expected"
    consistency_distance: ConsistencyDistance = "mae"
    consistency_lam: float = 1.0  # lambda of the weighted-RNN-T form
    # the lattice whose alignment weights the consistency: "simple" (the head's lm + am
    # lattice, which icefall uses for the pruning bounds) or "pruned" (the head's full joiner
    # on the pruned ranges, computed whenever ASTRA is, even with a zero rnnt weight)
    consistency_alignment: ConsistencyAlignment = "simple"
    # which side the consistency trains: "none" (both), "speech" (gradient stopped on the
    # speech side S: only the text encoder moves) or "text" (stopped on E: only speech moves)
    consistency_stop_gradient: ConsistencyStopGradient = "none"

    # --- unpaired text ---------------------------------------------------------------
    # training only: spans of text_mask_span input tokens of unpaired-text batches are
    # replaced by a learned mask vector before the text encoder (about text_mask_prob of the
    # tokens; targets unchanged), so the shared encoder and the Aligner decoder must fill
    # them in from context: they learn the text's language, text-only words included
    # The text_aligner loss is scored on the masked positions only (weight 1) and on the
    # others with text_unmasked_weight (there the encoder reads its target: a copy task), so
    # text_mask_prob must be > 0 when unpaired text is trained on (TrainConfig checks it)
    text_mask_prob: float = 0.3
    text_mask_span: int = 1
    text_unmasked_weight: float = 0.0
    # the text_ctc loss (losses.text_ctc): each text frame repeated this many times (>= 2, so
    # that CTC can put a blank between two equal tokens)
    text_ctc_repeat: int = 2

    # --- lattice-guided self-transduction (an astra extension; off) -------
    transduction_kl_layer: int | None = None  # shared layer whose attention rows u follow the lattice; None = off

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        check_choices(self, "model.")
        self._validate_sizes()
        self._validate_layers()
        self._validate_heads()

    def _validate_sizes(self) -> None:
        """Dimensions, counts and probabilities of the encoders and augmentation."""
        if self.d_model % self.num_heads != 0:
            raise ValueError(f"model.d_model={self.d_model} is not divisible by model.num_heads={self.num_heads}")
        if self.position_encoding == "rope" and (self.d_model // self.num_heads) % 2 != 0:
            raise ValueError("model.position_encoding='rope' needs an even head dimension d_model/num_heads")
        if self.conv_kernel % 2 != 1:
            raise ValueError(f"model.conv_kernel={self.conv_kernel} must be odd")
        for name in ("num_features", "d_model", "num_heads", "ff_mult", "conv_kernel", "pred_dim", "joint_dim",
                     "pred_layers", "rnnt_pred_dim", "rnnt_joint_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}={getattr(self, name)} must be >= 1")
        for name in ("speech_layers", "text_layers", "shared_layers", "subsampling_channels", "freq_masks",
                     "freq_mask_width", "time_masks", "time_mask_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name}={getattr(self, name)} must be >= 0")
        if not 0.0 <= self.text_mask_prob < 1.0:
            raise ValueError(f"model.text_mask_prob={self.text_mask_prob} must be in [0, 1)")
        if not 0.0 <= self.text_unmasked_weight <= 1.0:
            raise ValueError(f"model.text_unmasked_weight={self.text_unmasked_weight} must be in [0, 1]")
        if self.text_ctc_repeat < 2:
            raise ValueError(f"model.text_ctc_repeat={self.text_ctc_repeat} must be >= 2 (room for CTC blanks)")
        if self.text_mask_span < 1:
            raise ValueError(f"model.text_mask_span={self.text_mask_span} must be >= 1")
        if not 0.0 <= self.freq_warp < 1.0:
            raise ValueError(f"model.freq_warp={self.freq_warp} must be in [0, 1)")
        if not 0.0 <= self.time_mask_ratio <= 1.0:
            raise ValueError(f"model.time_mask_ratio={self.time_mask_ratio} must be in [0, 1]")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout} must be in [0, 1)")

    def _validate_layers(self) -> None:
        """Layer indices of the heads and losses, and CTC compression's constraints on them."""
        for name in ("rnnt_layer", "consistency_layer"):
            value = getattr(self, name)
            if not 0 <= value <= self.shared_layers:
                raise ValueError(f"model.{name}={value} must be in [0, shared_layers={self.shared_layers}]")
        if not 0 <= self.text_entry_layer < max(self.shared_layers, 1):
            raise ValueError(f"model.text_entry_layer={self.text_entry_layer} must be in [0, shared_layers="
                             f"{self.shared_layers}) (the text path needs a shared block)")
        if self.consistency and self.consistency_layer < self.text_entry_layer:
            raise ValueError(f"model.consistency_layer={self.consistency_layer} is below model.text_entry_layer="
                             f"{self.text_entry_layer}: the text path has no frames there (the consistency "
                             f"compares S and E where both exist: set consistency_layer >= text_entry_layer)")
        for name in OPTIONAL_LAYERS:
            value = getattr(self, name)
            if value == 0:
                raise ValueError(f"model.{name}=0: use null for off (shared layers are numbered from 1)")
            if value is not None and not 1 <= value <= self.shared_layers:
                raise ValueError(
                    f"model.{name}={value} must be null (off) or in [1, shared_layers={self.shared_layers}]"
                )
        if self.ctc_compress_align == "forced" and self.ctc_compress != "labels":
            raise ValueError("model.ctc_compress_align='forced' needs model.ctc_compress='labels' (a forced "
                             "alignment fixes the token runs; blank runs are not part of it)")
        if self.ctc_compress_stop_gradient and self.ctc_compress == "none":
            raise ValueError("model.ctc_compress_stop_gradient=true needs model.ctc_compress (it detaches the "
                             "compressed frames)")
        if self.ctc_compress != "none":
            if self.inter_ctc_layer is None or not self.inter_ctc_layer < self.shared_layers:
                raise ValueError(
                    f"model.ctc_compress={self.ctc_compress!r} needs an InterCTC layer below the last shared "
                    f"layer: 0 < model.inter_ctc_layer={self.inter_ctc_layer} < shared_layers={self.shared_layers}"
                )
            for name in ("rnnt_layer", "consistency_layer"):
                if getattr(self, name) > self.inter_ctc_layer:
                    raise ValueError(
                        f"model.{name}={getattr(self, name)} is above the compressed InterCTC layer "
                        f"{self.inter_ctc_layer}: the alignment head and ASTRA read uncompressed frames"
                    )
            if self.top_ctc:
                raise ValueError("model.top_ctc does not work with model.ctc_compress (the top layer is compressed; "
                                 "the joint search uses the InterCTC head)")
            if self.transduction_kl_layer:
                raise ValueError("model.transduction_kl_layer does not work with model.ctc_compress (its lattice "
                                 "is over uncompressed frames)")
        if self.inter_aligner_layer is not None and self.inter_aligner_layer == self.shared_layers:
            raise ValueError("model.inter_aligner_layer equals the last shared layer: use a lower layer")

    def _validate_heads(self) -> None:
        """The RNN-T alignment head, ASTRA and the Aligner decoder."""
        if self.rnnt_head and self.rnnt_context < 1:
            raise ValueError(f"model.rnnt_context={self.rnnt_context} must be >= 1")
        if self.rnnt_head and self.rnnt_prune_range < 2:
            raise ValueError(f"model.rnnt_prune_range={self.rnnt_prune_range} must be >= 2")
        scales = (self.rnnt_lm_only_scale, self.rnnt_am_only_scale)
        if min(scales) < 0.0 or sum(scales) >= 1.0:
            raise ValueError(
                f"model.rnnt_lm_only_scale={scales[0]} and model.rnnt_am_only_scale={scales[1]} must be "
                ">= 0 with a sum < 1"
            )
        if self.consistency_mode == "weighted_rnnt" and not self.consistency_lam > 0.0:
            raise ValueError(
                f"model.consistency_lam={self.consistency_lam} must be > 0 for consistency_mode='weighted_rnnt'"
            )
        if self.transduction_kl_layer and not self.rnnt_head:
            raise ValueError("model.transduction_kl_layer needs model.rnnt_head=true (the lattice comes from it)")
        if self.consistency and not self.rnnt_head:
            raise ValueError("model.consistency=true needs model.rnnt_head=true (the lattice comes from it)")
        if not 0.0 <= self.aligner_label_smoothing < 1.0:
            raise ValueError(f"model.aligner_label_smoothing={self.aligner_label_smoothing} must be in [0, 1)")
        if not 0.0 <= self.aligner_prime_prob <= 1.0 or self.aligner_prime_tokens < 0:
            raise ValueError(
                f"model.aligner_prime_prob={self.aligner_prime_prob} must be in [0, 1] and "
                f"model.aligner_prime_tokens={self.aligner_prime_tokens} >= 0"
            )
