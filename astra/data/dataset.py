"""From utterance records to batch dicts (CONTRIBUTING.md "Batches").

:func:`prepare_speech_items` filters records with what the metadata already tells (empty
transcript, characters the tokenizer cannot encode, more tokens than encoder frames, audio
too long, missing files) and tokenises them once. :class:`BatchDataset` turns a list of item
indices into a padded batch, decoding audio on the fly (DataLoader workers); an utterance
whose audio fails to decode is dropped from its batch and reported in the batch's
``"_skipped"`` list, which :class:`astra.data.stream.TrainStream` pops and counts.

Speech batch: ``features`` [B, T, F] float32 raw log-mel (zero-padded), ``feature_lens`` [B],
``tokens`` [B, U] int64 padded with 0, ``token_lens`` [B], ``keys``, ``languages``, ``texts``
(reference transcription, not normalised), ``durations`` [B] float32 seconds, ``kind``.
Text batch: ``tokens``, ``token_lens``, ``languages``, ``texts``, ``kind``.
(B batch, T 10 ms frames, U tokens, F = 80.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

from astra.constants import SAMPLE_RATE
from astra.data import skips
from astra.data.audio import AudioError, speed_perturb
from astra.data.config import DataConfig
from astra.data.manifest import Utterance
from astra.data.skips import SkipCounter
from astra.data.targets import encode_target, normalize_target
from astra.features import NUM_MEL_BINS, fbank, num_frames

log = logging.getLogger(__name__)


@dataclass
class SpeechItem:
    """An utterance that passed the metadata checks, with its token ids (U)."""

    utterance: Utterance
    tokens: list[int]
    duration: float


@dataclass
class TextItem:
    """One unpaired sentence: normalised text and its token ids (U)."""

    language: str
    text: str
    tokens: list[int]


# (kernel, stride) per Conv2d layer of the model's front end (astra.model.frontend.Conv2dSubsampling,
# no padding); tests/test_data_pipeline.py checks that both give the same T'.
SUBSAMPLING_LAYERS = {4: ((3, 2), (3, 2)), 6: ((3, 2), (5, 3)), 8: ((3, 2), (3, 2), (3, 2))}


def subsampled_frames(frames: int, subsampling_factor: int) -> int:
    """Encoder frames T' for ``frames`` fbank frames T (other factors: T // factor)."""
    if subsampling_factor not in SUBSAMPLING_LAYERS:
        return frames // subsampling_factor
    for kernel, stride in SUBSAMPLING_LAYERS[subsampling_factor]:
        frames = (frames - kernel) // stride + 1
    return max(frames, 0)


def encoder_frames(num_samples: int, subsampling_factor: int) -> int:
    """T' for a waveform of ``num_samples`` at 16 kHz (fbank frames, then the Conv2d front end)."""
    return subsampled_frames(num_frames(num_samples, SAMPLE_RATE), subsampling_factor)


def tokens_fit(num_tokens: int, num_samples: int, cfg: DataConfig) -> bool:
    """True if U tokens + the Aligner's ``<eos>`` fit in the encoder frames T'."""
    return num_tokens + 1 <= encoder_frames(num_samples, cfg.subsampling_factor)


def prepare_speech_items(
    utterances: list[Utterance],
    tokenizer,
    cfg: DataConfig,
    skip_counter: SkipCounter,
    training: bool = True,
) -> list[SpeechItem]:
    """Filter and tokenise utterances using metadata (and audio headers where needed).

    Always skipped: empty transcript, missing/unreadable audio header (when read), audio
    shorter than one feature window. Training also skips: audio longer than
    ``max_utterance_seconds``, unencodable characters (``<unk>``), U + 1 > T', more than
    ``max_tokens_per_second``. Evaluation keeps those (every utterance is scored).
    """
    out = []
    for utt in utterances:
        text = normalize_target(utt.transcription, cfg)
        if not text:
            skip_counter.add(skips.EMPTY_TRANSCRIPT, utt.key, utt.language)
            continue
        duration = utt.duration
        if utt.path is not None and utt.audio_bytes is None and utt.table is None and not os.path.exists(utt.path):
            skip_counter.add(skips.MISSING_AUDIO, utt.key, utt.language, utt.path)
            continue
        if duration is None or cfg.check_audio_headers:
            try:
                duration = utt.info().duration
            except AudioError as e:
                skip_counter.add(e.reason, utt.key, utt.language, str(e))
                continue
        num_samples = int(round(duration * SAMPLE_RATE))
        if num_frames(num_samples) == 0:
            skip_counter.add(skips.TOO_SHORT_AUDIO, utt.key, utt.language, f"{duration:.3f} s")
            continue
        tokens = encode_target(text, utt.language, tokenizer, cfg) if tokenizer is not None else []
        if training:
            if cfg.max_utterance_seconds and duration > cfg.max_utterance_seconds:
                skip_counter.add(skips.TOO_LONG_AUDIO, utt.key, utt.language, f"{duration:.1f} s")
                continue
            if tokenizer is not None:
                if tokenizer.unk_id in tokens:
                    bad = sorted({ch for ch in text if tokenizer.unk_id in tokenizer.encode(ch)})
                    skip_counter.add(skips.UNENCODABLE_TEXT, utt.key, utt.language, f"characters {''.join(bad)!r}")
                    continue
                if not tokens_fit(len(tokens), num_samples, cfg):
                    skip_counter.add(
                        skips.TRANSCRIPT_TOO_LONG, utt.key, utt.language,
                        f"{len(tokens)} tokens + <eos> > "
                        f"{encoder_frames(num_samples, cfg.subsampling_factor)} encoder frames",
                    )
                    continue
                if cfg.max_tokens_per_second and len(tokens) / duration > cfg.max_tokens_per_second:
                    skip_counter.add(skips.TOO_MANY_TOKENS_PER_SECOND, utt.key, utt.language,
                                     f"{len(tokens) / duration:.1f}/s")
                    continue
        out.append(SpeechItem(utt, tokens, float(duration)))
    return out


def prepare_text_items(sentences: dict[str, list[str]], tokenizer, cfg: DataConfig,
                       skip_counter: SkipCounter) -> list[TextItem]:
    """Tokenise normalised unpaired sentences; ``<unk>`` or empty results are skipped."""
    out = []
    for lang in sorted(sentences):
        for i, text in enumerate(sentences[lang]):
            tokens = encode_target(text, lang, tokenizer, cfg)
            if tokenizer.unk_id in tokens:
                skip_counter.add(skips.UNENCODABLE_TEXT, f"{lang}:{i}", lang, text[:60])
            elif len(tokens) == int(cfg.language_tags):
                skip_counter.add(skips.EMPTY_TRANSCRIPT, f"{lang}:{i}", lang)
            else:
                out.append(TextItem(lang, text, tokens))
    return out


def _pad_tokens(seqs: list[list[int]]):
    import torch

    lens = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    tokens = torch.zeros(len(seqs), int(lens.max()) if len(seqs) else 0, dtype=torch.int64)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
    return tokens, lens


def text_batch(items: list[TextItem]) -> dict:
    """Text batch dict of ``items`` (see module doc)."""
    tokens, token_lens = _pad_tokens([it.tokens for it in items])
    return {
        "kind": "text",
        "tokens": tokens,
        "token_lens": token_lens,
        "languages": [it.language for it in items],
        "texts": [it.text for it in items],
    }


class FeatureCache:
    """fbank features on disk, one ``.pt`` file per utterance (unperturbed audio only).

    The file name hashes the utterance key and its audio's identity — the resolved path, size
    and modification time of a file, or a digest of in-memory bytes — so a corpus rebuilt in
    place (same keys, new audio) never reads the old features.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, utt) -> Path:
        source = ""
        if utt.path:
            try:
                st = os.stat(utt.path)
                source = f"{Path(utt.path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
            except OSError:  # missing file: the decode reports it
                source = str(utt.path)
        elif utt.audio_bytes is not None:
            source = hashlib.sha1(utt.audio_bytes).hexdigest()
        h = hashlib.sha1(f"{utt.key}|{source}|fbank{NUM_MEL_BINS}".encode()).hexdigest()
        return self.root / h[:2] / f"{h}.pt"

    def get(self, utt):
        """The cached ``[T, F]`` features of ``utt`` (a :class:`Utterance`), or ``None``."""
        import torch

        path = self._path(utt)
        if path.exists():
            try:
                return torch.load(path, weights_only=True)
            except Exception as e:  # a torn or foreign file: recompute it
                log.warning("feature cache: cannot read %s (%s); recomputing", path, e)
        return None

    def put(self, utt, feats) -> None:
        import torch

        path = self._path(utt)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(feats.clone(), tmp)
        os.replace(tmp, path)


class BatchDataset:
    """Map-style dataset whose index is a plan entry ``(kind, item indices, epoch)``.

    Used with ``torch.utils.data.DataLoader(batch_size=None, sampler=plan)``; each
    ``__getitem__`` returns one batch dict. Speech items whose audio fails to decode are
    dropped from the batch and listed in ``batch["_skipped"]`` as (key, language, reason).
    In training, ``concat_fraction`` of each speech batch's utterances are concatenated
    pairwise into long utterances (:func:`astra.data.batch_ops.concatenate_utterances`),
    the pairs drawn from (seed, epoch, keys) so a resumed run draws the same.
    """

    def __init__(
        self,
        speech_items: list[SpeechItem],
        text_items: list[TextItem] | None,
        cfg: DataConfig,
        training: bool = True,
        seed: int = 0,
        concat_fraction: float = 0.0,
    ):
        if not 0.0 <= concat_fraction <= 1.0:
            raise ValueError(f"concat_fraction={concat_fraction} must be in [0, 1]")
        self.speech_items = speech_items
        self.text_items = text_items or []
        self.cfg = cfg
        self.training = training
        self.seed = seed
        self.concat_fraction = concat_fraction if training else 0.0
        self.cache = FeatureCache(cfg.feature_cache) if cfg.feature_cache else None

    def __len__(self) -> int:
        return len(self.speech_items)

    def _speed_factor(self, key: str, epoch: int) -> float:
        if not (self.training and self.cfg.speed_perturb and self.cfg.speed_factors):
            return 1.0
        rng = random.Random(f"{self.seed}|{epoch}|{key}")
        return float(rng.choice(self.cfg.speed_factors))

    def features(self, item: SpeechItem, epoch: int = 0):
        """``([T, F] log-mel, seconds of audio)`` of one item (raises ``AudioError`` with a skip reason)."""
        utt = item.utterance
        factor = self._speed_factor(utt.key, epoch)
        if factor == 1.0 and self.cache is not None:
            cached = self.cache.get(utt)
            if cached is not None:
                return cached, item.duration
        wav = utt.load_audio()
        if factor != 1.0:
            perturbed = speed_perturb(wav, factor)
            if not self.training or tokens_fit(len(item.tokens), perturbed.numel(), self.cfg):
                wav = perturbed
            else:
                factor = 1.0
        if num_frames(wav.numel()) == 0:
            raise AudioError(skips.TOO_SHORT_AUDIO, f"{utt.key}: {wav.numel()} samples")
        if self.training and not tokens_fit(len(item.tokens), wav.numel(), self.cfg):
            raise AudioError(skips.TRANSCRIPT_TOO_LONG,
                             f"{utt.key}: {len(item.tokens)} tokens in {wav.numel() / SAMPLE_RATE:.2f} s decoded")
        feats = fbank(wav)
        if factor == 1.0 and self.cache is not None:
            self.cache.put(utt, feats)
        return feats, wav.numel() / SAMPLE_RATE

    def speech_batch(self, indices: list[int], epoch: int = 0) -> dict:
        """Speech batch dict of ``indices`` (see module doc); may hold fewer than asked."""
        import torch

        # decoding, fbank and padding of short tensors gain nothing from intra-op threads and
        # lose a lot when cores are oversubscribed (docs/data.md, "Loader throughput"): run them on
        # one thread, then give the caller its setting back
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._concatenate(self._speech_batch(indices, epoch), epoch)
        finally:
            torch.set_num_threads(threads)

    def _concatenate(self, batch: dict, epoch: int) -> dict:
        if self.concat_fraction <= 0 or not batch["keys"]:
            return batch
        from astra.data.batch_ops import concatenate_utterances, concatenation_generator

        generator = concatenation_generator(self.seed, epoch, batch["keys"])
        return concatenate_utterances(batch, self.concat_fraction, generator)

    def _speech_batch(self, indices: list[int], epoch: int) -> dict:
        import torch

        feats, seconds, kept, skipped = [], [], [], []
        for i in indices:
            item = self.speech_items[i]
            try:
                f, sec = self.features(item, epoch)
                feats.append(f)
                seconds.append(sec)
                kept.append(item)
            except AudioError as e:
                skipped.append((item.utterance.key, item.utterance.language, e.reason, str(e)))
        lens = torch.tensor([f.size(0) for f in feats], dtype=torch.int64)
        padded = torch.zeros(len(feats), int(lens.max()) if feats else 0, NUM_MEL_BINS)
        for b, f in enumerate(feats):
            padded[b, : f.size(0)] = f
        tokens, token_lens = _pad_tokens([it.tokens for it in kept])
        return {
            "kind": "speech",
            "features": padded,
            "feature_lens": lens,
            "tokens": tokens,
            "token_lens": token_lens,
            "keys": [it.utterance.key for it in kept],
            "languages": [it.utterance.language for it in kept],
            "texts": [it.utterance.transcription for it in kept],
            "durations": torch.tensor(seconds, dtype=torch.float32),
            "_skipped": skipped,
        }

    def __getitem__(self, entry: tuple[str, list[int], int]) -> dict:
        kind, indices, epoch = entry
        if kind == "text":
            return text_batch([self.text_items[i] for i in indices])
        return self.speech_batch(indices, epoch)


def identity_collate(batch):
    """DataLoader collate for ``batch_size=None`` loaders that already return batch dicts."""
    return batch


def worker_init(_worker_id: int) -> None:
    """One intra-op thread per DataLoader worker (the machine's cores are shared)."""
    import torch

    torch.set_num_threads(1)
