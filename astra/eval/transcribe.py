"""Transcribe audio files with a trained model (``astra transcribe``).

Any format :func:`astra.data.audio.load_audio` reads (wav, flac, ogg, mp3 where supported),
any sample rate and channel count (downmixed, resampled to 16 kHz). Audio up to
``chunk_seconds`` long is decoded in one piece with the chosen method; longer audio goes
through the model's long-form chunking (``AstraModel.transcribe_long``: Aligner decoding
per chunk, prediction network primed with the last ``prime_tokens`` tokens); the chunks'
texts are joined with a word boundary (``astra.model.long_form.join_chunks``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Transcript:
    """One file's transcript; ``long_form`` says whether chunked decoding was used."""

    path: str
    text: str
    duration: float
    decode_seconds: float
    long_form: bool
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def single_batch(features, key: str = "utt", language: str = "", text: str = "") -> dict:
    """A one-utterance speech batch (CONTRIBUTING.md "Batches") from ``features [T, F]``
    (tensors on the features' device)."""
    import torch

    frames, device = features.size(0), features.device
    return {
        "kind": "speech",
        "features": features.unsqueeze(0),
        "feature_lens": torch.tensor([frames], dtype=torch.long, device=device),
        "tokens": torch.zeros(1, 0, dtype=torch.long, device=device),
        "token_lens": torch.zeros(1, dtype=torch.long, device=device),
        "keys": [key],
        "languages": [language],
        "texts": [text],
        "durations": torch.tensor([frames * 0.01], dtype=torch.float32),
    }


def transcribe_file(
    model,
    tokenizer,
    path: str | Path,
    method: str = "aligner_greedy",
    beam: int = 4,
    ctc_weight: float = 0.3,
    chunk_seconds: float = 14.0,
    prime_tokens: int = 10,
    device: str = "cpu",
    lm=None,
    language: str = "",
) -> Transcript:
    """Transcribe one audio file. ``lm``: an :class:`astra.lm.fusion.LmFusion` for the beam
    methods, with the LM of ``language``; long-form (chunked) audio is decoded without it.

    Raises:
        astra.data.audio.AudioError (a ValueError): missing, empty or undecodable audio.
    """
    import torch

    from astra.constants import SAMPLE_RATE
    from astra.data.audio import load_audio
    from astra.features import fbank
    from astra.model.long_form import join_chunks

    waveform = load_audio(str(path))
    duration = waveform.numel() / SAMPLE_RATE
    features = fbank(waveform, SAMPLE_RATE).to(device)
    long_form = duration > chunk_seconds
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        if long_form:
            chunks = model.transcribe_long_chunks(features, chunk_seconds=chunk_seconds, prime_tokens=prime_tokens)
            text = join_chunks(tokenizer, chunks)
            used = "aligner_greedy (long form)"
        else:
            batch = single_batch(features, key=str(path), language=language)
            extra = {} if lm is None else {"lm": lm}
            text = tokenizer.decode(model.decode(batch, method=method, beam=beam, ctc_weight=ctc_weight, **extra)[0])
            used = method if lm is None else f"{method} + LM {language} (weight {lm.weight:g})"
    elapsed = time.perf_counter() - start
    if long_form and method != "aligner_greedy":
        log.info("%s: %.1f s > %.1f s, long-form chunking uses Aligner greedy decoding",
                 path, duration, chunk_seconds)
    return Transcript(
        path=str(path), text=text, duration=duration,
        decode_seconds=elapsed, long_form=long_form, method=used,
    )
