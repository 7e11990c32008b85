"""AstraModel: speech/text encoders, shared encoder, Aligner decoder and auxiliary heads.

Legend: B batch, T input frames (10 ms), T' encoder frames, U tokens (without ``<sos>`` /
``<eos>``), D model dim, F features, V vocabulary, H heads.

``model(batch)`` (``forward``: a speech or a text batch), ``forward_speech`` / ``forward_text``
return *unweighted* losses (the trainer weights them by name) and counts. Every loss is a mean
per target token of the batch:

============== ============================================================================
``aligner``    Aligner CE on the final shared output; per token incl. ``<eos>`` (U+1 each)
``inter_aligner`` the same at shared layer ``inter_aligner_layer`` (its own decoder)
``ctc``        top-layer CTC (``top_ctc``), per token (U)
``inter_ctc``  CTC at shared layer ``inter_ctc_layer``, per token (U)
``rnnt``       pruned RNN-T of the alignment head, per token (U)
``rnnt_simple`` smoothed simple RNN-T (lm + am joiner) of the head, per token (U)
``consistency`` ASTRA consistency between S and E, per token (U)
``aligned_consistency`` the speech path's top frame u against the text path's top frame u
               of the same transcript (a detached target), per position (U+1; weight:
               ``losses.aligned_consistency``, 0 by default)
``text_aligner`` Aligner CE on unpaired text (text encoder -> shared -> Aligner), on the
               masked input positions (``text_mask_prob``; the rest weighs
               ``text_unmasked_weight``), per weighted position
``text_rnnt``  pruned RNN-T of the head on unpaired text (T' = U+1 text frames)
``text_ctc``   CTC of the CTC head (the one CTC decoding reads) on unpaired text: its layer's
               first U text frames, each repeated ``text_ctc_repeat`` times, per token (U)
``transduction_kl`` optional (``transduction_kl_layer``): KL from the head's emit occupancy
               to the attention rows u of that shared layer, per token (weight:
               ``losses.transduction_kl``)
============== ============================================================================

The text encoder reads ``y_1..y_U, <eos>`` (U+1 frames) so that the Aligner, which needs
U+1 frames, can be trained on text; ASTRA compares S with the first U text frames.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from astra.constants import (
    BEAM_METHODS,
    BLANK_ID,
    DECODE_METHODS,
    EOS_ID,
    FRAMES_PER_SECOND,
    SOS_ID,
)
from astra.losses.aligner import aligner_loss
from astra.model import decoding
from astra.model.aligner_decoder import AlignerDecoder
from astra.model.attention import MultiHeadSelfAttention
from astra.model.config import ModelConfig
from astra.model.ctc_beam_search import CtcHypothesis, ctc_beam_nbest, ctc_beam_search
from astra.model.ctc_head import CtcHead
from astra.model.encoders import SharedEncoder, SpeechEncoder, TextEncoder
from astra.model.frontend import FrequencyWarp, GlobalCMVN, SpecAugment
from astra.model.rescoring import flatten_nbest, pick_rescored
from astra.model.rnnt_head import LATTICES, RnntHead, RnntLosses, emit_occupancy

logger = logging.getLogger(__name__)


@dataclass
class ModelOutput:
    """Unweighted scalar losses by name and float counts (``frames``, ``tokens``, ...)."""

    losses: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    # a batch with nothing to compute: a 0 that touches every trainable parameter, so that
    # back-propagating it joins the other processes' gradient all-reduce (DDP)
    idle_loss: Tensor | None = None


def idle_output(model: nn.Module) -> ModelOutput:
    """The :class:`ModelOutput` of a batch with nothing to compute: no losses, and an
    ``idle_loss`` of 0 in the graph of every trainable parameter of ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
    return ModelOutput(idle_loss=0.0 * torch.stack([p.float().sum() for p in params]).sum())


def text_position_weights(masked: Tensor | None, unmasked_weight: float) -> Tensor | None:
    """Weights ``[B, U+1]`` of the unpaired-text Aligner targets ``y_1..y_U, <eos>`` given the
    masked input tokens ``masked [B, U]``: 1 where the input token was masked, and
    ``unmasked_weight`` where the text encoder read the target itself (the other tokens and
    ``<eos>``: a copy task). ``None`` (every position weighs 1) when nothing is masked
    (``masked`` is ``None``: masking off, or evaluation)."""
    if masked is None:
        return None
    weights = torch.full((masked.size(0), masked.size(1) + 1), float(unmasked_weight), device=masked.device)
    weights[:, :-1] = weights[:, :-1].masked_fill(masked, 1.0)
    return weights


def _applied(lm):
    """``lm`` (an :class:`astra.lm.fusion.LmFusion`), or ``None`` when it changes no score
    (weight, length bonus and ILM weight all 0)."""
    if lm is not None and lm.weight == 0 and lm.length_bonus == 0 and lm.ilm_weight == 0:
        return None
    return lm


def append_eos(tokens: Tensor, lengths: Tensor, eos_id: int = EOS_ID) -> Tensor:
    """``tokens [B, U]`` -> ``[B, U+1]`` with ``<eos>`` at each utterance's position U_b."""
    out = torch.cat([tokens, torch.zeros_like(tokens[:, :1])], dim=1)
    out[torch.arange(tokens.size(0), device=tokens.device), lengths] = eos_id
    return out


class AstraModel(nn.Module):
    """The whole model; see the module docstring for losses and ``CONTRIBUTING.md`` for the API."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        cfg.validate()
        if vocab_size <= EOS_ID + 1:
            raise ValueError(f"vocab_size={vocab_size}: needs the 4 special ids plus at least one piece")
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.freq_warp = FrequencyWarp(cfg.freq_warp)
        self.cmvn = GlobalCMVN(cfg.num_features)
        self.spec_augment = SpecAugment(
            cfg.freq_masks if cfg.spec_augment else 0, cfg.freq_mask_width,
            cfg.time_masks if cfg.spec_augment else 0, cfg.time_mask_width, cfg.time_mask_ratio,
        )
        self.speech_encoder = SpeechEncoder(cfg)
        self.text_encoder = TextEncoder(cfg, vocab_size)
        self.shared_encoder = SharedEncoder(cfg)
        self.aligner = self._aligner_decoder()
        self.inter_aligner = self._aligner_decoder() if cfg.inter_aligner_layer else None
        self.ctc = CtcHead(cfg.d_model, vocab_size, BLANK_ID) if cfg.top_ctc else None
        self.inter_ctc = CtcHead(cfg.d_model, vocab_size, BLANK_ID) if cfg.inter_ctc_layer else None
        self.rnnt = RnntHead(cfg, vocab_size, BLANK_ID, SOS_ID) if cfg.rnnt_head else None
        # CTC compression (model.ctc_compress="labels"): the frame that ends the compressed
        # sequence, read by the Aligner where it emits <eos>
        self.compress_end = (nn.Parameter(0.02 * torch.randn(cfg.d_model)) if cfg.ctc_compress == "labels"
                             else None)
        self._warned: set[str] = set()

    def _aligner_decoder(self) -> AlignerDecoder:
        cfg = self.cfg
        return AlignerDecoder(
            cfg.d_model, self.vocab_size, cfg.pred_dim, cfg.pred_layers, cfg.joint_dim, cfg.dropout, SOS_ID
        )

    # --- settings ------------------------------------------------------------------------
    def set_feature_stats(self, mean: Tensor, std: Tensor) -> None:
        """Global CMVN statistics ``mean [F]``, ``std [F]`` (buffers, saved with the weights)."""
        self.cmvn.set_stats(mean, std)

    def set_identity_attention(self, enabled: bool) -> None:
        """Warm-up against time reversal ("The Conformer Encoder May Reverse the Time Dimension",
        arXiv:2410.00680): fix every self-attention matrix to the identity (or release it)."""
        for module in self.modules():
            if isinstance(module, MultiHeadSelfAttention):
                module.identity = bool(enabled)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts per top-level module, plus ``total``."""
        counts = {name: sum(p.numel() for p in child.parameters()) for name, child in self.named_children()}
        counts = {name: n for name, n in counts.items() if n > 0}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts

    # --- input checks --------------------------------------------------------------------
    def _warn_once(self, reason: str, message: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            logger.warning("%s (counted as dropped/%s; warned once)", message, reason)

    @staticmethod
    def _batch_tensors(batch: dict, *keys: str) -> list[Tensor]:
        """``batch[key]`` for each key; ``ValueError`` naming a missing key or a non-tensor."""
        if not isinstance(batch, dict):
            raise ValueError(f"a batch must be a dict, got {type(batch).__name__}")
        for key in keys:
            if key not in batch:
                raise ValueError(f"batch has no {key!r} (keys: {sorted(batch)})")
            if not isinstance(batch[key], Tensor):
                raise ValueError(f"batch[{key!r}] must be a torch.Tensor, got {type(batch[key]).__name__}")
        return [batch[key] for key in keys]

    @staticmethod
    def _check_integer(batch: dict, *keys: str) -> None:
        for key in keys:
            x = batch[key]
            if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise ValueError(f"batch[{key!r}] must be an integer tensor, got {x.dtype}")

    def _check_tokens(self, batch: dict) -> tuple[Tensor, Tensor]:
        """``(tokens [B, U] int64, token_lens [B] int64)`` of a batch, validated."""
        tokens, lens = self._batch_tensors(batch, "tokens", "token_lens")
        self._check_integer(batch, "tokens", "token_lens")
        if tokens.dim() != 2 or lens.dim() != 1 or lens.size(0) != tokens.size(0):
            raise ValueError(
                f"batch['tokens'] must be [B, U] and token_lens [B], got {tuple(tokens.shape)} and {tuple(lens.shape)}"
            )
        if (lens < 0).any() or (lens > tokens.size(1)).any():
            raise ValueError(f"batch['token_lens'] out of range [0, {tokens.size(1)}]: {lens.tolist()}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"batch['tokens'] has ids outside [0, {self.vocab_size}) (vocab_size of the model)")
        return tokens.long(), lens.long()

    def _check_features(self, batch: dict) -> tuple[Tensor, Tensor]:
        """``(features [B, T, F] float32, feature_lens [B] int64)`` of a batch, validated."""
        features, lens = self._batch_tensors(batch, "features", "feature_lens")
        self._check_integer(batch, "feature_lens")
        if features.dim() != 3:
            raise ValueError(f"batch['features'] must be [B, T, F], got shape {tuple(features.shape)}")
        if features.size(2) != self.cfg.num_features:
            raise ValueError(
                f"batch['features'] has feature dim {features.size(2)}, the model expects "
                f"model.num_features={self.cfg.num_features}"
            )
        if lens.dim() != 1 or lens.size(0) != features.size(0):
            raise ValueError(f"batch['feature_lens'] must be [B={features.size(0)}], got {tuple(lens.shape)}")
        if (lens < 0).any() or (lens > features.size(1)).any():
            raise ValueError(f"batch['feature_lens'] out of range [0, {features.size(1)}]: {lens.tolist()}")
        return features.float(), lens.long()

    def _drop(self, keep: Tensor, reason: str, message: str, counts: dict[str, float]) -> None:
        dropped = int((~keep).sum())
        counts[f"dropped/{reason}"] = counts.get(f"dropped/{reason}", 0.0) + dropped
        if dropped:
            self._warn_once(reason, f"{dropped} example(s): {message}")

    def _zero_loss(self) -> Tensor:
        return sum(p.sum() for p in self.aligner.parameters()) * 0.0

    def loss_names(self, kind: str) -> list[str]:
        """The losses ``forward_speech`` (``kind="speech"``) or ``forward_text`` (``"text"``)
        returns when all are needed: those whose heads are enabled."""
        cfg = self.cfg
        if kind not in ("speech", "text"):
            raise ValueError(f"kind must be 'speech' or 'text', got {kind!r}")
        if kind == "text":  # the text path has layers text_entry_layer and up
            entry = cfg.text_entry_layer
            names = ["text_aligner"] + (["text_rnnt"] if self.rnnt is not None and cfg.rnnt_layer >= entry else [])
            has_ctc = self.ctc is not None or self.inter_ctc is not None
            return names + (["text_ctc"] if has_ctc and self._ctc_layer() >= entry else [])
        names = ["aligner"]
        names += ["inter_aligner"] if self.inter_aligner is not None else []
        names += ["ctc"] if self.ctc is not None else []
        names += ["inter_ctc"] if self.inter_ctc is not None else []
        names += ["rnnt", "rnnt_simple"] if self.rnnt is not None else []
        names += ["consistency"] if cfg.consistency else []
        names += ["aligned_consistency"]
        names += ["transduction_kl"] if cfg.transduction_kl_layer else []
        return names

    def _needed_losses(self, kind: str, needed: Collection[str] | None) -> list[str]:
        """The enabled losses of ``kind`` that are in ``needed`` (all when ``None``); a needed
        name the model cannot compute is a ``ValueError``."""
        names = self.loss_names(kind)
        if needed is None:
            return names
        unknown = sorted(set(needed) - set(names))
        if unknown:
            raise ValueError(f"needed {kind} losses {unknown} are not enabled in this model (enabled: {names})")
        return [name for name in names if name in needed]

    # --- encoders ------------------------------------------------------------------------
    def forward_encoder(
        self, features: Tensor, feature_lens: Tensor, return_layers: tuple[int, ...] = (),
        references: tuple[Tensor, Tensor] | None = None, counts: dict[str, float] | None = None,
    ) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
        """Raw features ``[B, T, F]`` -> ``(H [B, L, D], L [B], {k: layer k output})``;
        layer 0 is the speech-encoder output S.

        Without CTC compression L = T' (encoder frames) for H and every layer. With
        ``model.ctc_compress`` the layers above ``inter_ctc_layer`` (and H) have L frames
        per utterance (:mod:`astra.model.ctc_compress`), those up to it T' frames
        (:meth:`frame_lengths`). ``references`` (training: tokens ``[B, U]``, ``U [B]``):
        with ``model.ctc_compress_align="forced"`` the frames are merged along the CTC forced
        alignment of the reference; an utterance compressed to fewer than U + 1 frames keeps
        its T' frames, and their number is added to ``counts["compress_fallback"]``."""
        speech, lens = self.forward_speech_encoder(features, feature_lens)
        return self.forward_shared(speech, lens, return_layers, references, counts)

    def forward_speech_encoder(self, features: Tensor, feature_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Raw features ``[B, T, F]`` -> ``(S [B, T', D], T' [B])``: front end (frequency warp
        and SpecAugment in training, CMVN), subsampling and the speech encoder's blocks."""
        with record_function("astra:speech_encoder"):
            x = self.cmvn(self.freq_warp(features, feature_lens), feature_lens)
            x = self.spec_augment(x, feature_lens)
            return self.speech_encoder(x, feature_lens)

    def forward_shared(
        self, speech: Tensor, lens: Tensor, return_layers: tuple[int, ...] = (),
        references: tuple[Tensor, Tensor] | None = None, counts: dict[str, float] | None = None,
    ) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
        """The speech path's shared encoder: S ``[B, T', D]`` (``lens [B]``) -> ``(H [B, L, D],
        L [B], {k: layer k output})``, CTC compression included (``references``, ``counts``:
        as in :meth:`forward_encoder`)."""
        with record_function("astra:shared_encoder"):
            if self.cfg.ctc_compress == "none":
                top, layers = self.shared_encoder(speech, lens, return_layers)
                return top, lens, layers
            k = self.cfg.inter_ctc_layer
            below, layers = self.shared_encoder(speech, lens, return_layers, num_blocks=k)
            layers[k] = below
            compressed, compressed_lens = self._compress(below, lens, references, counts)
            top, upper = self.shared_encoder(compressed, compressed_lens, return_layers, first_block=k)
            layers.update({i: h for i, h in upper.items() if i > k})
        if k not in return_layers:
            del layers[k]
        return top, compressed_lens, layers

    def _compress(self, frames: Tensor, lens: Tensor, references: tuple[Tensor, Tensor] | None,
                  counts: dict[str, float] | None, align: str | None = None) -> tuple[Tensor, Tensor]:
        """CTC compression of the InterCTC layer's frames ``[B, T', D]`` by its greedy labels,
        or along the forced alignment of ``references`` (``align``, default
        ``model.ctc_compress_align``, ``"forced"``); rows compressed below their U + 1
        targets keep ``frames``."""
        from astra.model.ctc_compress import ctc_compress

        with torch.no_grad():
            log_probs = self.inter_ctc(frames)  # [B, T', V]
            labels = log_probs.argmax(dim=-1)  # [B, T']
            if references is not None and (align or self.cfg.ctc_compress_align) == "forced":
                from astra.model.ctc_forced_align import ctc_forced_align

                forced, feasible = ctc_forced_align(log_probs, lens, *references, BLANK_ID)
                labels = torch.where(feasible[:, None], forced, labels)
        if self.cfg.ctc_compress_stop_gradient and self.training:  # (eval: diagnostics differentiate through)
            frames = frames.detach()
        out, out_lens = ctc_compress(frames, lens, labels, BLANK_ID, self.cfg.ctc_compress, self.compress_end)
        if references is None:
            return out, out_lens
        fallback = out_lens < references[1].to(out_lens.device) + 1
        if counts is not None:
            counts["compress_fallback"] = counts.get("compress_fallback", 0.0) + float(fallback.sum())
        if not bool(fallback.any()):
            return out, out_lens
        width = max(int(torch.where(fallback, lens, out_lens).max()), 1)
        out = F.pad(out, (0, 0, 0, max(width - out.size(1), 0)))[:, :width]
        kept = F.pad(frames, (0, 0, 0, max(width - frames.size(1), 0)))[:, :width]
        return torch.where(fallback[:, None, None], kept, out), torch.where(fallback, lens, out_lens)

    def frame_lengths(self, feature_lens: Tensor) -> Tensor:
        """Encoder frames T' ``[B]`` of feature lengths ``[B]`` (the speech encoder's output
        length: layers up to the InterCTC layer when CTC compression is on)."""
        return self.speech_encoder.subsampling.output_lengths(feature_lens)

    def forward_text_encoder(
        self, tokens: Tensor, token_lens: Tensor, return_layers: tuple[int, ...] = (), num_shared: int | None = None,
        masked: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
        """Tokens ``[B, U]`` -> ``(H [B, U+1, D], U+1 [B], {k: layer k})``; the text encoder
        reads ``y_1..y_U, <eos>``; its output E is layer ``model.text_entry_layer`` (0 by
        default; the text path has no layers below it). ``num_shared``: stop after that shared
        layer (``text_entry_layer``: H is E). ``masked [B, U]`` (bool): input tokens replaced
        by the mask vector (see :meth:`draw_text_mask`)."""
        inputs = append_eos(tokens, token_lens)
        if masked is not None:
            masked = torch.cat([masked, torch.zeros_like(masked[:, :1])], dim=1)
        with record_function("astra:text_encoder"):
            text, lens = self.text_encoder(inputs, token_lens + 1, masked)
        with record_function("astra:shared_encoder"):
            top, layers = self.shared_encoder(text, lens, return_layers, num_blocks=num_shared,
                                              first_block=self.cfg.text_entry_layer)
        return top, lens, layers

    # --- heads ---------------------------------------------------------------------------
    def forward_aligner(
        self, decoder: AlignerDecoder, encoder_out: Tensor, encoder_lens: Tensor, tokens: Tensor, token_lens: Tensor,
        position_weights: Tensor | None = None,
    ) -> tuple[Tensor, float, Tensor]:
        """Aligner CE of ``decoder`` on ``encoder_out [B, T', D]`` (``encoder_lens [B]``) for
        ``tokens [B, U]`` (``token_lens [B]``; ``<eos>`` is appended here). Returns the summed
        loss (scalar), the number of scored target tokens (incl. ``<eos>``; with
        ``position_weights [B, U+1]`` their summed weights) and the kept mask ``[B]``
        (examples with U+1 <= T')."""
        targets = append_eos(tokens, token_lens)
        target_lens = token_lens + 1
        kept = target_lens <= encoder_lens
        if not bool(kept.any()):
            return self._zero_loss(), 0, kept
        length = int(target_lens[kept].max())
        frames, targets_l = encoder_out[:, :length], targets[:, :length]
        primed = self._priming(tokens, token_lens)
        if primed is None:
            logits = decoder(frames, targets_l)
        else:
            rows, history = primed
            rest = torch.nonzero(~torch.isin(torch.arange(tokens.size(0), device=rows.device), rows)).flatten()
            primed_logits = decoder(frames[rows], targets_l[rows], history)
            logits = primed_logits.new_zeros(tokens.size(0), length, primed_logits.size(-1))
            logits = logits.index_copy(0, rows, primed_logits)
            if rest.numel():
                logits = logits.index_copy(0, rest, decoder(frames[rest], targets_l[rest]))
        loss, kept = aligner_loss(
            logits, targets[:, :length], target_lens, encoder_lens, self.cfg.aligner_label_smoothing, reduction="sum",
            position_weights=position_weights,
        )
        if position_weights is None:
            return loss, int(target_lens[kept].sum()), kept
        scored = torch.arange(position_weights.size(1), device=kept.device)[None, :] < target_lens[:, None]
        return loss, float((position_weights * (scored & kept[:, None])).sum()), kept

    def _priming(self, tokens: Tensor, token_lens: Tensor) -> tuple[Tensor, Tensor] | None:
        """Training-time long-form priming: a random ``aligner_prime_prob`` of the examples get
        a history, the last ``aligner_prime_tokens`` tokens of another (random) utterance of
        the batch (left-padded with ``<sos>`` as :meth:`AlignerDecoder.prime` does). Returns
        ``(rows [P], history [P, K])`` or ``None`` (off, not training, or nothing drawn)."""
        cfg = self.cfg
        if not self.training or cfg.aligner_prime_prob <= 0 or cfg.aligner_prime_tokens == 0 or tokens.size(0) < 2:
            return None
        size = tokens.size(0)
        shift = torch.randint(1, size, (size,), device=tokens.device)
        donor = (torch.arange(size, device=tokens.device) + shift) % size
        donors, donor_lens = tokens[donor], token_lens[donor]
        use = (torch.rand(tokens.size(0), device=tokens.device) < cfg.aligner_prime_prob) & (donor_lens > 0)
        rows = torch.nonzero(use).flatten()
        if rows.numel() == 0:
            return None
        counts = [min(cfg.aligner_prime_tokens, int(donor_lens[b])) for b in rows.tolist()]
        history = torch.full((rows.numel(), max(counts)), SOS_ID, dtype=torch.long, device=tokens.device)
        for i, (b, n) in enumerate(zip(rows.tolist(), counts, strict=True)):
            end = int(donor_lens[b])
            history[i, history.size(1) - n :] = donors[b, end - n : end]
        return rows, history

    def draw_text_mask(self, token_lens: Tensor, width: int) -> Tensor | None:
        """Spans of ``text_mask_span`` tokens to mask: ``[B, width]`` bool within each
        ``token_lens [B]`` (a span starts at a token with probability ``text_mask_prob /
        span``, so about ``text_mask_prob`` of the tokens are masked), or ``None`` when off
        or not training. Uses torch's global RNG (seeded by the trainer)."""
        cfg = self.cfg
        if not self.training or cfg.text_mask_prob <= 0 or width == 0:
            return None
        span = cfg.text_mask_span
        starts = torch.rand(token_lens.size(0), width, device=token_lens.device) < cfg.text_mask_prob / span
        masked = starts
        if span > 1:  # token u is masked if a span starts at u-span+1..u
            masked = F.max_pool1d(F.pad(starts.float()[:, None], (span - 1, 0)), span, stride=1)[:, 0] > 0
        valid = torch.arange(width, device=token_lens.device)[None, :] < token_lens[:, None]
        return masked & valid

    # --- training forward ----------------------------------------------------------------
    def forward(self, batch: dict, needed: Collection[str] | None = None) -> ModelOutput:
        """``model(batch)``: the losses of a speech or a text batch (``batch["kind"]``; speech
        when absent), from :meth:`forward_speech` or :meth:`forward_text`. ``needed`` as
        there; a batch with nothing to compute (no utterance or sentence, or ``needed``
        empty) gives :func:`idle_output`."""
        kind = batch.get("kind", "speech")
        if kind not in ("speech", "text"):
            raise ValueError(f"batch kind {kind!r} is neither 'speech' nor 'text'")
        if batch["tokens"].shape[0] == 0 or (needed is not None and not needed):
            return idle_output(self)
        if kind == "speech":
            return self.forward_speech(batch, needed)
        return self.forward_text(batch, needed)

    def forward_speech(self, batch: dict, needed: Collection[str] | None = None) -> ModelOutput:
        """Paired speech batch -> the enabled losses of :meth:`loss_names` ("speech") and counts.

        ``needed``: the loss names the training objective uses (:meth:`loss_names` with a
        weight that is > 0 at some step); the others are not computed (``None``: all)."""
        cfg = self.cfg
        names = self._needed_losses("speech", needed)
        counts: dict[str, float] = {}
        kept = self._trainable_speech(batch, counts)
        if kept is None:
            counts.update(utterances=0.0, frames=0.0, tokens=0.0)
            return ModelOutput({name: self._zero_loss() for name in names}, counts)
        features, feature_lens, tokens, token_lens = kept

        # ASTRA reads the simple lattice or the pruned loss's lattice (model.consistency_alignment);
        # the transduction KL reads the simple lattice
        pruned_alignment = "consistency" in names and cfg.consistency_alignment == "pruned"
        rnnt_parts = dict(
            simple="rnnt_simple" in names, pruned="rnnt" in names or pruned_alignment,
            with_lattice=("consistency" in names and not pruned_alignment) or "transduction_kl" in names,
            pruned_lattice=pruned_alignment,
        )
        wanted = {0}
        wanted |= {cfg.inter_ctc_layer} if "inter_ctc" in names else set()
        wanted |= {cfg.inter_aligner_layer} if "inter_aligner" in names else set()
        wanted |= {cfg.rnnt_layer} if any(rnnt_parts.values()) else set()
        wanted |= {cfg.consistency_layer} if "consistency" in names else set()
        kl_attn = None
        if "transduction_kl" in names:
            kl_attn = self.shared_encoder.blocks[cfg.transduction_kl_layer - 1].attn
            kl_attn.keep_attention_with_grad, kl_attn.attention_with_grad = True, None
        try:
            top, top_lens, layers = self.forward_encoder(
                features, feature_lens, tuple(sorted(wanted)), references=(tokens, token_lens), counts=counts
            )
        finally:
            attention = None
            if kl_attn is not None:
                attention = kl_attn.attention_with_grad
                kl_attn.keep_attention_with_grad, kl_attn.attention_with_grad = False, None
        # T' frames up to the InterCTC layer; above it, with CTC compression, top_lens
        lens = self.frame_lengths(feature_lens) if cfg.ctc_compress != "none" else top_lens
        num_tokens = float(token_lens.sum())
        counts.update(utterances=float(feature_lens.numel()), frames=float(lens.sum()), tokens=num_tokens,
                      input_frames=float(feature_lens.sum()))
        losses: dict[str, Tensor] = {}

        if "aligner" in names:
            with record_function("astra:aligner"):
                loss, aligner_tokens, kept = self.forward_aligner(self.aligner, top, top_lens, tokens, token_lens)
            self._drop(kept, "too_long", "transcript + <eos> longer than the encoder output (U+1 > T')", counts)
            if cfg.ctc_compress != "none":
                counts["compressed_frames"] = float(top_lens.sum())
            losses["aligner"] = loss / max(aligner_tokens, 1)
            counts["aligner_tokens"] = float(aligner_tokens)
        if "aligned_consistency" in names:
            with record_function("astra:aligned_consistency"):
                losses["aligned_consistency"] = self._aligned_consistency_loss(top, top_lens, tokens, token_lens)
        if "inter_aligner" in names:
            with record_function("astra:inter_aligner"):
                above_compression = cfg.inter_ctc_layer is None or cfg.inter_aligner_layer > cfg.inter_ctc_layer
                loss, n, _ = self.forward_aligner(
                    self.inter_aligner, layers[cfg.inter_aligner_layer], top_lens if above_compression else lens,
                    tokens, token_lens,
                )
            losses["inter_aligner"] = loss / max(n, 1)
        if "ctc" in names or "inter_ctc" in names:
            self._drop(lens >= token_lens, "ctc_too_short", "fewer encoder frames than tokens (CTC loss 0)", counts)
        if "ctc" in names:
            with record_function("astra:ctc"):
                losses["ctc"] = self.ctc.loss(top, top_lens, tokens, token_lens) / num_tokens
        if "inter_ctc" in names:
            with record_function("astra:inter_ctc"):
                inter = self.inter_ctc.loss(layers[cfg.inter_ctc_layer], lens, tokens, token_lens)
            losses["inter_ctc"] = inter / num_tokens
        if any(rnnt_parts.values()):
            losses.update(self._rnnt_head_losses(layers, lens, tokens, token_lens, names, rnnt_parts, attention,
                                                 counts))
        return ModelOutput(losses, counts)

    def _trainable_speech(self, batch: dict, counts: dict[str, float]):
        """``(features [B', T, F], feature_lens, tokens [B', U], token_lens)`` of the utterances
        of a speech batch that can be trained on (the others dropped and counted: empty or too
        short audio, empty transcript), trimmed to their longest; ``None`` if none is left."""
        features, feature_lens = self._check_features(batch)
        tokens, token_lens = self._check_tokens(batch)
        if tokens.size(0) != features.size(0):
            raise ValueError(f"batch has {features.size(0)} feature rows but {tokens.size(0)} token rows")
        keep = feature_lens > 0
        self._drop(keep, "empty_audio", "zero-length audio", counts)
        long_enough = feature_lens >= self.speech_encoder.subsampling.min_input_frames()
        self._drop(long_enough | ~keep, "too_short_audio",
                   f"audio shorter than {self.speech_encoder.subsampling.min_input_frames()} frames", counts)
        keep &= long_enough
        has_text = token_lens > 0
        self._drop(has_text | ~keep, "empty_transcript", "empty transcript", counts)
        keep &= has_text
        if not bool(keep.any()):
            return None
        index = torch.nonzero(keep).flatten()
        feature_lens, token_lens = feature_lens[index], token_lens[index]
        features = features[index][:, : int(feature_lens.max())]
        return features, feature_lens, tokens[index][:, : int(token_lens.max())], token_lens

    def _rnnt_head_losses(self, layers: dict[int, Tensor], lens: Tensor, tokens: Tensor, token_lens: Tensor,
                          names: Collection[str], rnnt_parts: dict[str, bool], attention: Tensor | None,
                          counts: dict[str, float]) -> dict[str, Tensor]:
        """The losses read from the RNN-T alignment head: ``rnnt``, ``rnnt_simple``, ``consistency``
        (weighted by the head's simple or pruned lattice) and ``transduction_kl``, those in
        ``names``; ``rnnt_parts``: what :meth:`RnntHead.loss` computes."""
        cfg, losses = self.cfg, {}
        num_tokens = float(token_lens.sum())
        with record_function("astra:rnnt_head"):
            rnnt = self.rnnt.loss(layers[cfg.rnnt_layer], lens, tokens, token_lens, **rnnt_parts)
        if "rnnt" in names:
            losses["rnnt"] = rnnt.pruned / num_tokens
        if rnnt.simple is not None:
            losses["rnnt_simple"] = rnnt.simple / num_tokens
        if "consistency" in names:
            with record_function("astra:consistency"):
                px, py = (rnnt.px_pruned, rnnt.py_pruned) if rnnt_parts["pruned_lattice"] else (rnnt.px, rnnt.py)
                losses["consistency"] = self._consistency_loss(
                    layers[cfg.consistency_layer], lens, tokens, token_lens, px, py, counts
                )
        if "transduction_kl" in names:
            with record_function("astra:transduction_kl"):
                losses["transduction_kl"] = self._transduction_kl(attention, rnnt)
        return losses

    def _transduction_kl(self, attention: Tensor | None, rnnt: RnntLosses) -> Tensor:
        """KL from the head's emit occupancy to the attention rows ``[B, H, T', T']`` of the
        transducing layer (0 while the identity-attention warm-up is on: no weights to guide)."""
        from astra.losses.transduction_kl import lattice_attention_kl

        if attention is None:
            return self._zero_loss()
        occupancy = emit_occupancy(rnnt.px, rnnt.py, rnnt.boundary)  # [B, U, T']
        return lattice_attention_kl(attention, occupancy, rnnt.boundary[:, 2], rnnt.boundary[:, 3])

    def _consistency_loss(self, speech: Tensor, speech_lens: Tensor, tokens: Tensor, token_lens: Tensor,
                          px: Tensor, py: Tensor, counts: dict[str, float] | None = None) -> Tensor:
        """ASTRA consistency between ``speech [B, T', D]`` (S or shared layer k) and the text
        of ``tokens [B, U]`` at the same place, weighted by the head's lattice ``px [B, U,
        T'+1]``, ``py [B, U+1, T']``; mean per token. ``model.consistency_stop_gradient`` detaches
        one side. Writes the mean L2 norms of the compared speech and text frames into
        ``counts`` as ``mean/consistency_speech_norm`` and ``mean/consistency_text_norm`` (averaged, not
        summed, by the trainer): MAE between two LayerNorm outputs can also shrink both."""
        from astra.losses.astra_consistency import astra_consistency

        cfg = self.cfg
        layer = cfg.consistency_layer
        _, _, layers = self.forward_text_encoder(tokens, token_lens, (layer,), num_shared=layer)
        text = layers[layer][:, : tokens.size(1)]  # first U frames (drop the <eos> frame)
        if cfg.consistency_stop_gradient == "speech":
            speech = speech.detach()
        elif cfg.consistency_stop_gradient == "text":
            text = text.detach()
        if counts is not None:
            with torch.no_grad():
                frame_valid = torch.arange(speech.size(1), device=speech.device)[None] < speech_lens[:, None]
                token_valid = torch.arange(text.size(1), device=text.device)[None] < token_lens[:, None]
                counts["mean/consistency_speech_norm"] = float(speech.float().norm(dim=-1)[frame_valid].mean())
                counts["mean/consistency_text_norm"] = float(text.float().norm(dim=-1)[token_valid].mean())
        with torch.autocast(device_type=speech.device.type, enabled=False):
            loss = astra_consistency(
                speech.float(), speech_lens, text.float(), token_lens, px.float(), py.float(),
                mode=cfg.consistency_mode, distance=cfg.consistency_distance, lam=cfg.consistency_lam,
                reduction="sum",
            )
        return loss / float(token_lens.sum())

    def _aligned_consistency_loss(self, top: Tensor, top_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> Tensor:
        """:func:`~astra.losses.aligned_consistency.aligned_consistency` between the speech
        path's top frames ``top [B, L, D]`` and the text path's top frames of ``tokens [B, U]``
        (unmasked), mean per compared position (``model.consistency_distance``). The text side
        is a target, computed without gradient: the text path learns from the unpaired text,
        and a speech path that cannot yet transduce would otherwise pull it towards its own
        frames."""
        from astra.losses.aligned_consistency import aligned_consistency

        with torch.no_grad():
            text, text_lens, _ = self.forward_text_encoder(tokens, token_lens)
        with torch.autocast(device_type=top.device.type, enabled=False):
            loss, count = aligned_consistency(top.float(), top_lens, text.float(), text_lens,
                                              self.cfg.consistency_distance)
        return loss / count.clamp_min(1)

    def forward_text(self, batch: dict, needed: Collection[str] | None = None) -> ModelOutput:
        """Unpaired text batch -> losses ``text_aligner`` (and ``text_rnnt``) and counts;
        ``needed`` as in :meth:`forward_speech`."""
        cfg = self.cfg
        tokens, token_lens = self._check_tokens(batch)
        names = self._needed_losses("text", needed)
        counts: dict[str, float] = {}
        keep = token_lens > 0
        self._drop(keep, "empty_transcript", "empty text", counts)
        if not bool(keep.any()) or not names:
            counts.update(utterances=0.0, tokens=0.0)
            return ModelOutput({name: self._zero_loss() for name in names}, counts)
        index = torch.nonzero(keep).flatten()
        tokens, token_lens = tokens[index][:, : int(token_lens[index].max())], token_lens[index]
        masked = self.draw_text_mask(token_lens, tokens.size(1))
        wanted = {cfg.rnnt_layer} | ({self._ctc_layer()} if "text_ctc" in names else set())
        top, lens, layers = self.forward_text_encoder(tokens, token_lens, tuple(sorted(wanted)), masked=masked)
        losses: dict[str, Tensor] = {}
        if "text_aligner" in names:
            with record_function("astra:aligner"):
                weights = text_position_weights(masked, cfg.text_unmasked_weight)
                loss, n, _ = self.forward_aligner(self.aligner, top, lens, tokens, token_lens, weights)
            losses["text_aligner"] = loss / max(n, 1.0)
            counts["aligner_tokens"] = float(n)
        if "text_rnnt" in names:
            with record_function("astra:rnnt_head"):
                text_rnnt = self.rnnt.text_loss(layers[cfg.rnnt_layer], lens, tokens, token_lens)
            losses["text_rnnt"] = text_rnnt / float(token_lens.sum())
        if "text_ctc" in names:
            with record_function("astra:ctc"):
                losses["text_ctc"] = self._text_ctc_loss(layers[self._ctc_layer()], tokens, token_lens)
        counts.update(utterances=float(len(index)), tokens=float(token_lens.sum()))
        if masked is not None:
            counts["masked_tokens"] = float(masked.sum())
        return ModelOutput(losses, counts)

    def _ctc_layer(self) -> int:
        """The shared layer CTC decoding reads: the top (``top_ctc``) or ``inter_ctc_layer``."""
        return self.cfg.shared_layers if self.ctc is not None else self.cfg.inter_ctc_layer

    def _text_ctc_loss(self, frames: Tensor, tokens: Tensor, token_lens: Tensor) -> Tensor:
        """CTC of the decoding CTC head on the text path, per token: ``frames [B, U+1, D]``
        (its layer; the ``<eos>`` frame is dropped), each of the first U frames repeated
        ``model.text_ctc_repeat`` (R) times, so that ``[B, R·U, D]`` has room for the blanks
        between repeated tokens (as JOIST, arXiv:2210.07353, repeats text frames for its
        transducer loss on text). With masking the masked tokens must come from context."""
        repeat = self.cfg.text_ctc_repeat
        head = self.ctc if self.ctc is not None else self.inter_ctc
        text = frames[:, : tokens.size(1)].repeat_interleave(repeat, dim=1)
        return head.loss(text, token_lens * repeat, tokens, token_lens) / float(token_lens.sum())

    # --- inference -----------------------------------------------------------------------
    def _inference_inputs(self, batch: dict) -> tuple[Tensor, Tensor]:
        features, lens = self._check_features(batch)
        short = lens < self.speech_encoder.subsampling.min_input_frames()
        if bool(short.any()):
            raise ValueError(
                f"cannot decode: utterance(s) {torch.nonzero(short).flatten().tolist()} have fewer than "
                f"{self.speech_encoder.subsampling.min_input_frames()} feature frames"
            )
        return features, lens

    @torch.no_grad()
    def decode(
        self, batch: dict, method: str = "aligner_greedy", beam: int = 4, first_tokens: Tensor | None = None,
        ctc_weight: float = 0.3, lm=None,
    ) -> list[list[int]]:
        """Token ids per utterance of a speech batch (methods: ``DECODE_METHODS``).

        ``first_tokens [B]``: ids forced as every hypothesis' first token (the ``<lang:xx>``
        tag of a known language); Aligner methods only. ``ctc_weight``: weight of the CTC
        prefix score in ``aligner_ctc_beam`` (Aligner beam search joint with the CTC head).
        ``lm``: an :class:`astra.lm.fusion.LmFusion` fused into the ``*_beam`` methods, each
        utterance scored with the LM of ``batch["languages"][b]`` (weight, bonus and ILM
        weight all 0: not applied)."""
        if method not in DECODE_METHODS:
            raise ValueError(f"decode method {method!r}: use one of {DECODE_METHODS}")
        if first_tokens is not None:
            if not method.startswith("aligner"):
                raise ValueError(f"a forced first token (language) needs an aligner_* method, not {method!r}")
            if first_tokens.shape != (batch["feature_lens"].size(0),):
                raise ValueError(
                    f"first_tokens has shape {tuple(first_tokens.shape)}, expected "
                    f"[{batch['feature_lens'].size(0)}] (one id per utterance)"
                )
        lm = _applied(lm)
        if lm is not None and method not in BEAM_METHODS:
            raise ValueError(f"LM fusion needs a beam search ({', '.join(BEAM_METHODS)}), not {method!r}")
        if lm is not None and lm.ilm_weight > 0 and not method.startswith("aligner"):
            raise ValueError(f"internal-LM subtraction (ilm_weight) is for the Aligner, not {method!r}")
        if method == "ctc_beam_rescore":
            nbest, scores = self.ctc_rescore_candidates(batch, beam, lm)
            return pick_rescored(nbest, scores.tolist(), ctc_weight)
        features, lens = self._inference_inputs(batch)
        batch_lm = None if lm is None else lm.for_batch(batch["languages"], features.device)
        cfg = self.cfg
        if method.startswith("rnnt") and self.rnnt is None:
            raise ValueError(f"decode method {method!r} needs model.rnnt_head=true")
        uses_ctc = method in ("ctc_greedy", "ctc_beam", "aligner_ctc_beam")
        if uses_ctc and self.ctc is None and self.inter_ctc is None:
            raise ValueError(f"decode method {method!r} needs model.top_ctc or model.inter_ctc_layer")
        layer = {"rnnt_greedy": cfg.rnnt_layer, "rnnt_beam": cfg.rnnt_layer}.get(method)
        if uses_ctc:
            layer = cfg.shared_layers if self.ctc is not None else cfg.inter_ctc_layer
        wanted = () if layer is None else (layer,)
        top, enc_lens, layers = self.forward_encoder(features, lens, wanted)
        # the CTC and RNN-T heads read T' frames (enc_lens: the Aligner's, compressed or not)
        frame_lens = self.frame_lengths(lens) if cfg.ctc_compress != "none" else enc_lens
        if method == "aligner_greedy":
            return decoding.aligner_greedy(self.aligner, top, enc_lens, EOS_ID, first_tokens=first_tokens)
        if method == "aligner_beam":
            return decoding.aligner_beam(self.aligner, top, enc_lens, EOS_ID, beam, first_tokens=first_tokens,
                                         lm=batch_lm)
        head = self.ctc if self.ctc is not None else self.inter_ctc
        if method == "aligner_ctc_beam":
            return decoding.aligner_beam(
                self.aligner, top, enc_lens, EOS_ID, beam, first_tokens=first_tokens,
                ctc_log_probs=head(layers.get(layer, top)), ctc_weight=ctc_weight, blank_id=BLANK_ID, lm=batch_lm,
                ctc_lengths=frame_lens,
            )
        if method == "rnnt_greedy":
            return decoding.rnnt_greedy(self.rnnt, layers[layer], frame_lens)
        if method == "rnnt_beam":
            return decoding.rnnt_beam(self.rnnt, layers[layer], frame_lens, beam, lm=batch_lm)
        if method == "ctc_beam":
            return ctc_beam_search(head(layers.get(layer, top)), frame_lens, BLANK_ID, beam, lm=batch_lm)[0]
        return head.greedy(layers.get(layer, top), frame_lens)

    @torch.no_grad()
    def ctc_rescore_candidates(self, batch: dict, beam: int = 16, lm=None) -> tuple[list[list[CtcHypothesis]], Tensor]:
        """The two CTC-weight-independent parts of ``ctc_beam_rescore`` (``astra.model.rescoring``):
        ``(nbest, scores [N])``, per utterance of the speech batch the ``beam`` best hypotheses
        of the CTC beam search (with ``lm`` fused as in :meth:`decode`) and, flattened in that
        order, each one's teacher-forced ``log P_aligner`` (:meth:`aligner_log_likelihoods`).
        ``pick_rescored(nbest, scores.tolist(), w)`` then gives the decode for any CTC weight
        ``w``, so a sweep over ``w`` searches once."""
        if self.ctc is None and self.inter_ctc is None:
            raise ValueError("decode method 'ctc_beam_rescore' needs model.top_ctc or model.inter_ctc_layer")
        lm = _applied(lm)
        features, lens = self._inference_inputs(batch)
        batch_lm = None if lm is None else lm.for_batch(batch["languages"], features.device)
        cfg = self.cfg
        if cfg.ctc_compress == "labels":  # the upper layers run per hypothesis (aligner_log_likelihoods) only
            speech, frame_lens = self.forward_speech_encoder(features, lens)
            below, _ = self.shared_encoder(speech, frame_lens, num_blocks=cfg.inter_ctc_layer)
            nbest = ctc_beam_nbest(self.inter_ctc(below), frame_lens, BLANK_ID, beam, beam, lm=batch_lm)
            return nbest, self.aligner_log_likelihoods(below, frame_lens, below, frame_lens, nbest)
        layer = cfg.shared_layers if self.ctc is not None else cfg.inter_ctc_layer
        top, enc_lens, layers = self.forward_encoder(features, lens, (layer,))
        frame_lens = self.frame_lengths(lens) if cfg.ctc_compress != "none" else enc_lens
        head = self.ctc if self.ctc is not None else self.inter_ctc
        nbest = ctc_beam_nbest(head(layers.get(layer, top)), frame_lens, BLANK_ID, beam, beam, lm=batch_lm)
        return nbest, self.aligner_log_likelihoods(top, enc_lens, None, frame_lens, nbest)

    @torch.no_grad()
    def aligner_log_likelihoods(self, top: Tensor, top_lens: Tensor, below: Tensor | None, frame_lens: Tensor,
                                nbest: list[list[CtcHypothesis]]) -> Tensor:
        """``[N]`` teacher-forced ``log P_aligner(h, <eos> | x)`` of every hypothesis h of
        ``nbest`` (per utterance of the batch; flattened in that order), ``-inf`` where h
        needs more than the frames there are (U + 1 > L).

        Args:
            top: ``[B, L, D]`` the final shared output the decode read (``top_lens [B]``;
                not read with ``model.ctc_compress="labels"``).
            below: ``[B, T', D]`` the InterCTC layer's output (``frame_lens [B]``): with
                ``model.ctc_compress="labels"`` each hypothesis gets the upper layers run on
                these frames merged along its own CTC forced alignment (U + 1 frames, as a
                reference in training); otherwise (``None`` allowed) every hypothesis reads
                ``top``.
        """
        rows, tokens, token_lens = flatten_nbest(nbest, top.device)
        if rows.numel() == 0:
            return top.new_zeros(0)
        if self.cfg.ctc_compress == "labels":
            k = self.cfg.inter_ctc_layer
            frames, lens = self._compress(below[rows], frame_lens[rows], (tokens, token_lens), None, align="forced")
            frames, _ = self.shared_encoder(frames, lens, (), first_block=k)
        else:
            frames, lens = top[rows], top_lens[rows]
        targets = append_eos(tokens, token_lens)
        width = min(targets.size(1), frames.size(1))
        log_probs = torch.log_softmax(self.aligner(frames[:, :width], targets[:, :width]).float(), dim=-1)
        picked = log_probs.gather(2, targets[:, :width, None])[:, :, 0]  # [N, width]
        scored = torch.arange(width, device=picked.device)[None, :] < (token_lens + 1)[:, None]
        total = picked.masked_fill(~scored, 0.0).sum(dim=1)
        return total.masked_fill(token_lens + 1 > lens.to(total.device), float("-inf"))

    @torch.no_grad()
    def alignment_occupancy(self, batch: dict, lattice: str = "simple") -> tuple[Tensor, Tensor, Tensor]:
        """Emit-arc occupancy of the RNN-T alignment head's lattice for a speech batch with
        transcripts (``features``, ``feature_lens``, ``tokens``, ``token_lens``).

        ``lattice="simple"`` or ``"pruned"``: the lattices ASTRA can be weighted by
        (``model.consistency_alignment``); ``"full"`` the head's full
        joiner. Runs in eval mode (no SpecAugment, no dropout), without gradients.

        Returns:
            ``(occupancy [B, U, T'], token_lens [B], frame_lens [B])``: ``occupancy[b, u, t]``
            is the posterior that token u+1 is emitted at encoder frame t; each row
            ``u < U_b`` sums to 1 over ``t < T'_b`` and everything else is 0.
        Raises:
            ValueError: no RNN-T head, unknown ``lattice``, bad batch, or audio too short.
        """
        if self.rnnt is None:
            raise ValueError("alignment_occupancy needs the RNN-T alignment head (model.rnnt_head=true)")
        if lattice not in LATTICES:
            raise ValueError(f"lattice must be one of {LATTICES}, got {lattice!r}")
        features, feature_lens = self._inference_inputs(batch)
        tokens, token_lens = self._check_tokens(batch)
        if tokens.size(0) != features.size(0):
            raise ValueError(f"batch has {features.size(0)} feature rows but {tokens.size(0)} token rows")
        layer = self.cfg.rnnt_layer
        was_training = self.training
        self.eval()
        try:
            _, _, layers = self.forward_encoder(features, feature_lens, (layer,))
            frame_lens = self.frame_lengths(feature_lens)
            px, py, boundary = self.rnnt.lattice(layers[layer], frame_lens, tokens, token_lens, lattice)
        finally:
            self.train(was_training)
        return emit_occupancy(px, py, boundary), token_lens, frame_lens

    @torch.no_grad()
    def transcribe_long(self, features: Tensor, chunk_seconds: float = 14.0, prime_tokens: int = 10) -> list[int]:
        """Long-form Aligner decoding of one recording ``features [T, F]``: the token ids of
        :meth:`transcribe_long_chunks`, concatenated."""
        return [t for chunk in self.transcribe_long_chunks(features, chunk_seconds, prime_tokens) for t in chunk]

    @torch.no_grad()
    def transcribe_long_chunks(
        self, features: Tensor, chunk_seconds: float = 14.0, prime_tokens: int = 10,
    ) -> list[list[int]]:
        """Long-form Aligner decoding of one recording ``features [T, F]`` (Aligner-Encoders, arXiv:2502.05232): token
        ids per chunk (``astra.model.long_form.join_chunks`` makes the text).

        The features are cut into chunks of ``chunk_seconds`` (a last piece shorter than a
        quarter chunk joins the previous chunk); each chunk is encoded alone and decoded with
        a reset prediction network primed with the last ``prime_tokens`` emitted tokens.
        """
        if features.dim() != 2 or features.size(1) != self.cfg.num_features:
            raise ValueError(
                f"transcribe_long expects features [T, {self.cfg.num_features}], got {tuple(features.shape)}"
            )
        if chunk_seconds <= 0 or prime_tokens < 0:
            raise ValueError(f"chunk_seconds={chunk_seconds} must be > 0 and prime_tokens={prime_tokens} >= 0")
        from astra.model.long_form import chunk_bounds

        minimum = self.speech_encoder.subsampling.min_input_frames()
        if features.size(0) < minimum:
            raise ValueError(
                f"transcribe_long: {features.size(0)} feature frames, fewer than the {minimum} one encoder frame needs"
            )
        chunk = max(int(round(chunk_seconds * FRAMES_PER_SECOND)), minimum)
        emitted: list[int] = []
        chunks: list[list[int]] = []
        for start, end in chunk_bounds(features.size(0), chunk, minimum):
            piece = features[start:end].unsqueeze(0)
            top, lens, _ = self.forward_encoder(piece, torch.tensor([end - start], device=features.device))
            history = emitted[-prime_tokens:] if prime_tokens else []
            primed = self.aligner.prime([history], features.device)
            chunks.append(decoding.aligner_greedy(self.aligner, top, lens, EOS_ID, start=primed)[0])
            emitted += chunks[-1]
        return chunks

    @torch.no_grad()
    def attention_maps(self, batch: dict) -> dict[str, Tensor]:
        """Self-attention weights per layer: ``{"speech.i"|"text.i"|"shared.i": [B, H, T', T']}``
        (i 0-based). Speech batches go through the speech encoder, text batches through the
        text encoder; both through the shared encoder."""
        named = {
            f"{prefix}.{i}": block.attn
            for prefix, encoder in (("speech", self.speech_encoder), ("text", self.text_encoder),
                                    ("shared", self.shared_encoder))
            for i, block in enumerate(encoder.blocks)
        }
        for attn in named.values():
            attn.store_weights, attn.last_weights = True, None
        try:
            if batch.get("kind", "speech") == "text" or "features" not in batch:
                tokens, lens = self._check_tokens(batch)
                self.forward_text_encoder(tokens, lens)
            else:
                features, lens = self._inference_inputs(batch)
                self.forward_encoder(features, lens)
            return {name: attn.last_weights for name, attn in named.items() if attn.last_weights is not None}
        finally:
            for attn in named.values():
                attn.store_weights, attn.last_weights = False, None

