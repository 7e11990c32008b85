"""Forced first token (a known language's ``<lang:xx>`` tag) in Aligner decoding."""

from __future__ import annotations

import pytest
import torch

from astra.eval.evaluate import decode_batches, language_tag_ids
from astra.model import AstraModel
from astra.model.aligner_decoder import AlignerDecoder
from astra.model.decoding import aligner_beam, aligner_greedy
from astra.model.presets import preset

EOS = 3
V, D, B, T = 12, 16, 3, 9


def _decoder_and_frames(seed: int = 0) -> tuple[AlignerDecoder, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    decoder = AlignerDecoder(D, V, pred_dim=8, pred_layers=1, joint_dim=10, dropout=0.0).eval()
    with torch.no_grad():
        decoder.output.bias[EOS] -= 30.0  # no early <eos>: hypotheses end at the last frame, so beam 1 = greedy
    return decoder, torch.randn(B, T, D), torch.tensor([T, 6, 1])


def _teacher_forced_greedy(decoder: AlignerDecoder, frames: torch.Tensor, length: int, first: int) -> list[int]:
    """Brute force: re-run the teacher-forced decoder on the growing hypothesis."""
    hyp = [first]
    for i in range(1, length):
        logits = decoder(frames[None, : i + 1], torch.tensor([hyp + [0]]))[0, i]
        token = int(logits.argmax())
        if token == EOS:
            break
        hyp.append(token)
    return hyp


@torch.no_grad()
def test_greedy_with_a_forced_first_token_matches_teacher_forcing():
    decoder, frames, lens = _decoder_and_frames()
    first = torch.tensor([5, 7, 9])
    hyps = aligner_greedy(decoder, frames, lens, EOS, first_tokens=first)
    for b in range(B):
        assert hyps[b] == _teacher_forced_greedy(decoder, frames[b], int(lens[b]), int(first[b]))
    assert [h[0] for h in hyps] == first.tolist()


@torch.no_grad()
def test_forcing_the_token_greedy_would_pick_changes_nothing():
    decoder, frames, lens = _decoder_and_frames(seed=1)
    free = aligner_greedy(decoder, frames, lens, EOS)
    assert all(free), "every hypothesis needs a first token for this test"
    forced = aligner_greedy(decoder, frames, lens, EOS, first_tokens=torch.tensor([h[0] for h in free]))
    assert forced == free
    assert aligner_beam(decoder, frames, lens, EOS, beam=1, first_tokens=torch.tensor([h[0] for h in free])) == free


@torch.no_grad()
def test_beam_hypotheses_start_with_the_forced_token():
    decoder, frames, lens = _decoder_and_frames(seed=2)
    first = torch.tensor([4, 4, 6])
    assert aligner_beam(decoder, frames, lens, EOS, beam=1, first_tokens=first) == aligner_greedy(
        decoder, frames, lens, EOS, first_tokens=first
    )
    hyps = aligner_beam(decoder, frames, lens, EOS, beam=4, first_tokens=first)
    assert [h[0] for h in hyps] == first.tolist()


def _speech_batch(model: AstraModel, languages: list[str]) -> dict:
    frames = 4 * model.speech_encoder.subsampling.min_input_frames()
    return {
        "features": torch.randn(len(languages), frames, 80),
        "feature_lens": torch.full((len(languages),), frames),
        "keys": [f"u{i}" for i in range(len(languages))],
        "languages": languages,
        "texts": ["a"] * len(languages),
        "durations": torch.full((len(languages),), frames / 100),
        "kind": "speech",
    }


@torch.no_grad()
def test_model_decode_forces_the_first_token_and_checks_its_arguments():
    torch.manual_seed(0)
    model = AstraModel(preset("tiny"), vocab_size=V).eval()
    batch = _speech_batch(model, ["en_us", "de_de"])
    first = torch.tensor([4, 5])
    for method in ("aligner_greedy", "aligner_beam", "aligner_ctc_beam"):
        assert [h[0] for h in model.decode(batch, method, beam=3, first_tokens=first)] == [4, 5]
    with pytest.raises(ValueError, match="aligner"):
        model.decode(batch, "ctc_greedy", first_tokens=first)
    with pytest.raises(ValueError, match="one id per utterance"):
        model.decode(batch, "aligner_greedy", first_tokens=torch.tensor([4]))


class TagTokenizer:
    """The parts of ``astra.data.Tokenizer`` decoding uses, with two language tags."""

    def __init__(self, languages=("de_de", "en_us")):
        self.language_ids = {lang: 4 + i for i, lang in enumerate(languages)}
        self.languages = list(self.language_ids)

    def language_id(self, language: str) -> int:
        if language not in self.language_ids:
            raise ValueError(f"no tag for language {language!r}")
        return self.language_ids[language]

    def decode(self, ids: list[int]) -> str:
        return " ".join(f"w{i}" for i in ids if i >= 4 + len(self.language_ids))


class RecordingModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first_tokens = []

    def decode(self, batch, method="aligner_greedy", beam=4, first_tokens=None, ctc_weight=0.3):
        self.first_tokens.append(None if first_tokens is None else first_tokens.tolist())
        start = [] if first_tokens is None else [int(first_tokens[0])]
        return [start + [9] for _ in batch["keys"]]


def test_decode_batches_forces_each_utterances_own_language():
    model = RecordingModel()
    batch = {"features": torch.zeros(3, 5, 80), "feature_lens": torch.tensor([5, 5, 5]),
             "keys": ["a", "b", "c"], "languages": ["en_us", "de_de", "en_us"], "texts": ["x"] * 3}
    decode_batches(model, TagTokenizer(), [batch], progress=False, force_language=True)
    decode_batches(model, TagTokenizer(), [batch], progress=False)
    assert model.first_tokens == [[5, 4, 5], None]


def test_forcing_needs_language_tags():
    with pytest.raises(ValueError, match="language tags"):
        language_tag_ids(TagTokenizer(languages=()), ["en_us"])
    with pytest.raises(ValueError, match="fr_fr"):
        language_tag_ids(TagTokenizer(), ["en_us", "fr_fr"])
