"""Overfit a tiny model on 8 fixed random-feature utterances, then decode it every way.

One module-scoped training run (CPU, ~20-40 s) is shared by all tests here.
"""

from __future__ import annotations

import pytest
import torch

from astra.data.batch_ops import concatenate_utterances
from astra.model import AstraModel, preset

VOCAB = 24
NUM_UTTS = 8
FRAMES = 120  # 1.2 s of 10 ms frames -> 29 encoder frames
WEIGHTS = dict(aligner=1.0, inter_ctc=0.3, rnnt=1.0, rnnt_simple=0.5, consistency=0.1, text_aligner=1.0, text_rnnt=0.3)
GREEDY = ("aligner_greedy", "rnnt_greedy", "ctc_greedy")

pytestmark = pytest.mark.slow


def _batches() -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(1)
    token_lens = torch.randint(3, 7, (NUM_UTTS,), generator=g)
    tokens = torch.randint(4, VOCAB, (NUM_UTTS, 6), generator=g)
    for i in range(NUM_UTTS):
        tokens[i, token_lens[i]:] = 0
    speech = dict(
        kind="speech",
        features=torch.randn(NUM_UTTS, FRAMES, 80, generator=g),
        feature_lens=torch.full((NUM_UTTS,), FRAMES),
        tokens=tokens,
        token_lens=token_lens,
        keys=[f"utt{i}" for i in range(NUM_UTTS)],
        languages=["xx"] * NUM_UTTS,
        texts=[f"text {i}" for i in range(NUM_UTTS)],
        durations=torch.full((NUM_UTTS,), FRAMES / 100.0),
    )
    text = dict(kind="text", tokens=tokens.clone(), token_lens=token_lens.clone(), languages=["xx"] * NUM_UTTS,
                texts=speech["texts"])
    return speech, text


def _references(batch: dict) -> list[list[int]]:
    return [batch["tokens"][i, : batch["token_lens"][i]].tolist() for i in range(batch["tokens"].size(0))]


def _errors(model: AstraModel, batch: dict, method: str) -> int:
    return sum(h != r for h, r in zip(model.decode(batch, method), _references(batch), strict=True))


@pytest.fixture(scope="module")
def overfit():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster on a shared 2-core machine
    try:
        return _train_overfit()
    finally:
        torch.set_num_threads(threads)


def _train_overfit() -> dict:
    torch.manual_seed(0)
    # half of the examples are trained with a primed prediction network (long form)
    model = AstraModel(preset("tiny", dropout=0.0, spec_augment=False, aligner_prime_prob=0.5), VOCAB)
    speech, text = _batches()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    text_losses = []
    errors = {}
    needed = [set(model.loss_names(kind)) & set(WEIGHTS) for kind in ("speech", "text")]
    for step in range(800):
        model.train()
        losses = {**model.forward_speech(speech, needed[0]).losses, **model.forward_text(text, needed[1]).losses}
        text_losses.append(float(losses["text_aligner"].detach()))
        loss = sum(WEIGHTS[name] * value for name, value in losses.items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24:
            model.eval()
            errors = {method: _errors(model, speech, method) for method in GREEDY}
            if not any(errors.values()):
                break
    model.eval()
    return dict(model=model, speech=speech, text=text, text_losses=text_losses, errors=errors)


def test_overfit_reaches_zero_token_errors_with_every_greedy_head(overfit):
    # wall clock is not asserted (a shared CI machine would make the test flaky): the step
    # budget (800) bounds the work
    model, speech = overfit["model"], overfit["speech"]
    for method in GREEDY:
        assert _errors(model, speech, method) == 0, method


def test_text_only_batches_drive_the_text_aligner_loss_down(overfit):
    losses = overfit["text_losses"]
    assert losses[-1] < 0.05 * losses[0]


def test_greedy_decoding_returns_the_training_transcripts(overfit):
    model, speech = overfit["model"], overfit["speech"]
    refs = _references(speech)
    assert model.decode(speech, "aligner_greedy") == refs
    assert model.decode(speech, "rnnt_greedy") == refs


def test_beam_searches_return_the_training_transcripts(overfit):
    model, speech = overfit["model"], overfit["speech"]
    refs = _references(speech)
    assert model.decode(speech, "aligner_beam", beam=4) == refs
    assert model.decode(speech, "aligner_ctc_beam", beam=4, ctc_weight=0.3) == refs
    assert model.decode(speech, "rnnt_beam", beam=4) == refs
    assert model.decode(speech, "ctc_beam_rescore", beam=4, ctc_weight=0.3) == refs
    # weight 1: the CTC beam's own choice
    assert model.decode(speech, "ctc_beam_rescore", beam=4, ctc_weight=1.0) == model.decode(speech, "ctc_beam", beam=4)


def test_decoding_a_subset_is_independent_of_batch_padding(overfit):
    model, speech = overfit["model"], overfit["speech"]
    single = {k: (v[2:3] if torch.is_tensor(v) else v[2:3]) for k, v in speech.items() if k != "kind"}
    assert model.decode(single, "aligner_greedy") == [_references(speech)[2]]


@pytest.mark.parametrize("prime_tokens", [0, 10])
def test_long_form_chunking_of_two_concatenated_utterances(overfit, prime_tokens):
    model, speech = overfit["model"], overfit["speech"]
    refs = _references(speech)
    joined = torch.cat([speech["features"][3], speech["features"][5]])  # [2 * FRAMES, 80]
    hyp = model.transcribe_long(joined, chunk_seconds=FRAMES / 100.0, prime_tokens=prime_tokens)
    assert hyp == refs[3] + refs[5]
    chunks = model.transcribe_long_chunks(joined, chunk_seconds=FRAMES / 100.0, prime_tokens=prime_tokens)
    assert chunks == [refs[3], refs[5]]  # one id list per chunk: the text join keeps a word boundary
    # a short tail (< a quarter chunk) joins the previous chunk instead of being decoded alone
    tail = torch.cat([joined, speech["features"][0, :20]])
    hyp = model.transcribe_long(tail, chunk_seconds=FRAMES / 100.0, prime_tokens=prime_tokens)
    assert hyp[: len(refs[3])] == refs[3]


def test_priming_continues_the_prediction_network_like_teacher_forcing(overfit):
    decoder = overfit["model"].aligner
    history = [5, 9, 7]
    g_primed, (h, c) = decoder.prime([history], torch.device("cpu"))
    g_forced, (h2, c2) = decoder.predict(torch.tensor([[decoder.sos_id] + history]))
    torch.testing.assert_close(g_primed, g_forced[:, -1])
    torch.testing.assert_close(h, h2)
    torch.testing.assert_close(c, c2)
    # an empty history is the plain <sos> start
    g_empty, _ = decoder.prime([[]], torch.device("cpu"))
    torch.testing.assert_close(g_empty, decoder.predict(torch.tensor([[decoder.sos_id]]))[0][:, -1])


def test_concatenate_utterances_pairs_a_fraction_of_the_batch(overfit):
    speech = overfit["speech"]
    out = concatenate_utterances(speech, 0.5, torch.Generator().manual_seed(0))
    assert out["features"].size(0) == NUM_UTTS - 2  # 4 utterances -> 2 pairs
    assert out["feature_lens"].tolist().count(2 * FRAMES) == 2
    assert int(out["token_lens"].sum()) == int(speech["token_lens"].sum())
    joined = [k for k in out["keys"] if "+" in k]
    assert len(joined) == 2
    a, b = (int(k[3:]) for k in joined[0].split("+"))
    row = out["keys"].index(joined[0])
    refs = _references(speech)
    assert out["tokens"][row, : out["token_lens"][row]].tolist() == refs[a] + refs[b]
    assert torch.equal(out["features"][row, :FRAMES], speech["features"][a])
    assert out["texts"][row] == f"text {a} text {b}"
    assert concatenate_utterances(speech, 0.0) is speech
    with pytest.raises(ValueError, match="fraction"):
        concatenate_utterances(speech, 1.5)
