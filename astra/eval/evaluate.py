"""Decode evaluation batches with a trained model and score them per language.

:func:`decode_batches` runs :func:`decode_batch` (``model.decode``, skipping utterances too
short to decode) over speech batches (with a progress bar) and times it; :func:`evaluate_batches`
adds scoring (:mod:`astra.eval.metrics`); :func:`decode_batches_rescored` decodes
``ctc_beam_rescore`` for several CTC weights in one pass. The real-time factor is decode seconds / audio
seconds (lower is faster; < 1 is faster than real time), measured around ``model.decode`` only (data loading excluded).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from astra.constants import DECODE_METHODS, FRAMES_PER_SECOND
from astra.eval.metrics import DEFAULT_CER_LANGUAGES, ScoreSummary, UtteranceScore, score_corpus

log = logging.getLogger(__name__)

FRAME_SECONDS = 1.0 / FRAMES_PER_SECOND  # used when a batch has no "durations"


@dataclass
class DecodeResult:
    """Hypotheses of every decoded utterance, in batch order, and timing."""

    keys: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0
    too_short: list[str] = field(default_factory=list)  # keys scored with an empty hypothesis

    @property
    def rtf(self) -> float:
        """Real-time factor: decode seconds per audio second (0 with no audio)."""
        return self.decode_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0


@dataclass
class EvaluationResult:
    """Decoded hypotheses, their utterance scores and the per-language summary."""

    decoded: DecodeResult
    scores: list[UtteranceScore]
    summary: ScoreSummary


def _audio_seconds(batch: dict) -> float:
    if "durations" in batch:
        return float(batch["durations"].sum())
    return float(batch["feature_lens"].sum()) * FRAME_SECONDS


def _select(batch: dict, index: list[int]) -> dict:
    """The utterances ``index`` of a speech batch (tensors and lists indexed on dim 0)."""
    import torch

    size = len(batch["keys"])
    rows = torch.tensor(index, dtype=torch.long)
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == size:
            out[key] = value[rows]
        elif isinstance(value, list) and len(value) == size:
            out[key] = [value[i] for i in index]
        else:
            out[key] = value
    return out


def language_tag_ids(tokenizer, languages: Sequence[str]):
    """``[B]`` ids of the ``<lang:xx>`` tags of ``languages`` (for a forced-language decode).

    Raises ``ValueError`` naming the problem when the tokenizer has no language tags (the
    model was trained without ``data.language_tags``) or none for one of the languages."""
    import torch

    if not getattr(tokenizer, "languages", None):
        raise ValueError(
            "forcing the language needs a model trained with language tags "
            "(data.language_tags=true and a tokenizer trained with --language-tags)"
        )
    return torch.tensor([tokenizer.language_id(lang) for lang in languages], dtype=torch.long)


def min_input_frames(model) -> int:
    """Fewest feature frames ``model.decode`` accepts (its front end's minimum; 1 without
    a speech encoder)."""
    subsampling = getattr(getattr(model, "speech_encoder", None), "subsampling", None)
    return subsampling.min_input_frames() if hasattr(subsampling, "min_input_frames") else 1


def decode_batch(
    model,
    batch: dict,
    method: str = "aligner_greedy",
    beam: int = 4,
    *,
    min_frames: int | None = None,
    tokenizer=None,
    force_language: bool = False,
    ctc_weight: float = 0.3,
    lm=None,
) -> tuple[list[list[int]], list[int]]:
    """Token ids of one speech batch, skipping utterances too short to decode.

    The one decode step of ``astra evaluate`` (:func:`decode_batches`) and of validation
    during training (``astra.train.validation``). Utterances with fewer than ``min_frames``
    feature frames (default :func:`min_input_frames`) are not passed to ``model.decode``
    (which refuses them): they get ``[]``. Returns ``(hypotheses, short)``: one id list per
    utterance of the batch and the indices of the skipped ones.
    """
    if min_frames is None:
        min_frames = min_input_frames(model)
    extra = {} if lm is None else {"lm": lm}

    def decode(part: dict) -> list[list[int]]:
        if not force_language:
            return model.decode(part, method=method, beam=beam, ctc_weight=ctc_weight, **extra)
        first = language_tag_ids(tokenizer, part["languages"]).to(part["feature_lens"].device)
        return model.decode(part, method=method, beam=beam, first_tokens=first, ctc_weight=ctc_weight, **extra)

    return _decode_long_enough(batch, min_frames, decode, list)


def _decode_long_enough(batch: dict, min_frames: int, decode, empty) -> tuple[list, list[int]]:
    """``(outputs, short)``: per utterance of the batch ``decode(part)``'s output for the
    utterances with at least ``min_frames`` feature frames (decoded together) and ``empty()``
    for the others, whose indices are ``short``."""
    lens = batch["feature_lens"].tolist()
    ok = [i for i, n in enumerate(lens) if n >= min_frames]
    short = [i for i, n in enumerate(lens) if n < min_frames]
    if not short:
        return decode(batch), []
    outputs = [empty() for _ in lens]
    if ok:
        for i, out in zip(ok, decode(_select(batch, ok)), strict=True):
            outputs[i] = out
    return outputs, short


def _add_decoded_batch(result: DecodeResult, batch: dict, ids: list[list[int]], short: list[int], tokenizer) -> None:
    """Append one decoded speech batch (hypothesis ids ``ids``, indices ``short`` too short to
    decode) to ``result``; ``ValueError`` when the hypotheses do not match the batch size."""
    result.too_short += [batch["keys"][i] for i in short]
    if len(ids) != len(batch["keys"]):
        raise ValueError(f"model.decode returned {len(ids)} hypotheses for {len(batch['keys'])} utterances")
    result.keys += list(batch["keys"])
    result.languages += list(batch["languages"])
    result.references += list(batch["texts"])
    result.hypotheses += [tokenizer.decode(h) for h in ids]
    result.audio_seconds += _audio_seconds(batch)


def decode_batches(
    model,
    tokenizer,
    batches: Iterable[dict],
    method: str = "aligner_greedy",
    beam: int = 4,
    progress: bool = True,
    total: int | None = None,
    force_language: bool = False,
    ctc_weight: float = 0.3,
    lm=None,
) -> DecodeResult:
    """Decode speech batches (CONTRIBUTING.md "Batches") into text.

    Args:
        model: an ``AstraModel`` (put in eval mode here).
        tokenizer: ``astra.data.tokenizer.Tokenizer`` (``decode(ids) -> str``).
        batches: speech batch dicts with ``features [B, T, F]``, ``feature_lens [B]``,
            ``keys``, ``languages``, ``texts`` and ``durations [B]`` seconds.
        method: one of :data:`DECODE_METHODS`.
        beam: beam size of the beam-search methods.
        ctc_weight: weight of the CTC prefix score in ``aligner_ctc_beam`` and of
            ``log P_ctc`` in ``ctc_beam_rescore``.
        progress: show a tqdm progress bar (utterances) on stderr.
        total: number of utterances for the progress bar (``None``: unknown).
        force_language: decode each utterance in its known language (``batch["languages"]``):
            its ``<lang:xx>`` tag is forced as the first output (models trained with
            ``data.language_tags``; Aligner methods). Off: the model emits a tag itself.
        lm: an :class:`astra.lm.fusion.LmFusion` fused into the beam search (each utterance
            scored with its language's LM), or ``None``.

    Utterances too short for the model's subsampling (fewer feature frames than
    ``model.speech_encoder.subsampling.min_input_frames()``) are not decoded: they get an
    empty hypothesis (so their reference words count as deletions), and their keys are
    listed in ``DecodeResult.too_short`` and logged.
    Raises:
        ValueError: unknown ``method``, a batch whose hypotheses do not match its size, or
            ``force_language`` with a tokenizer without language tags or a non-Aligner method.
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose one of {DECODE_METHODS}")

    def decode(batch: dict, min_frames: int) -> tuple[list[list[list[int]]], list[int]]:
        ids, short = decode_batch(
            model, batch, method, beam, min_frames=min_frames, tokenizer=tokenizer,
            force_language=force_language, ctc_weight=ctc_weight, lm=lm,
        )
        return [ids], short

    return _decode_all(model, tokenizer, batches, decode, 1, f"decode {method}", progress, total)[0]


def decode_batches_rescored(
    model,
    tokenizer,
    batches: Iterable[dict],
    ctc_weights: Sequence[float],
    beam: int = 16,
    progress: bool = True,
    total: int | None = None,
    lm=None,
) -> list[DecodeResult]:
    """:func:`decode_batches` with ``method="ctc_beam_rescore"`` for every CTC weight of
    ``ctc_weights`` in one pass: each batch's n-best search and Aligner scores
    (``model.ctc_rescore_candidates``) do not depend on the weight, so they are computed once
    and only the pick (``astra.model.rescoring.pick_rescored``) runs per weight.

    Returns one :class:`DecodeResult` per weight, in order; each one's ``decode_seconds`` is
    the shared pass's (the search once and every weight's pick)."""
    from astra.model.rescoring import pick_rescored

    weights = list(ctc_weights)
    if not weights:
        raise ValueError("ctc_weights is empty")

    def rescored(part: dict) -> list[list[list[int]]]:  # per utterance, per weight
        nbest, scores = model.ctc_rescore_candidates(part, beam, lm)
        scores = scores.tolist()
        picks = [pick_rescored(nbest, scores, w) for w in weights]
        return [[pick[b] for pick in picks] for b in range(len(nbest))]

    def decode(batch: dict, min_frames: int) -> tuple[list[list[list[int]]], list[int]]:
        per_utterance, short = _decode_long_enough(batch, min_frames, rescored, lambda: [[] for _ in weights])
        return [[ids[k] for ids in per_utterance] for k in range(len(weights))], short

    return _decode_all(model, tokenizer, batches, decode, len(weights), "decode ctc_beam_rescore", progress, total)


def _decode_all(model, tokenizer, batches: Iterable[dict], decode, outputs: int, desc: str,
                progress: bool, total: int | None) -> list[DecodeResult]:
    """The loop of :func:`decode_batches`: ``decode(batch, min_frames) -> (ids per output,
    short)`` on every speech batch (moved to the model's device), timed, ``outputs``
    results filled side by side."""
    import torch

    from astra.data.batch_ops import to_device
    from astra.progress import progress_bar

    model.eval()
    min_frames = min_input_frames(model)
    device = next(iter(model.parameters()), torch.empty(0)).device if hasattr(model, "parameters") else None
    results = [DecodeResult() for _ in range(outputs)]
    bar = progress_bar(total=total, unit="utt", desc=desc, disable=not progress)
    with torch.inference_mode():
        for batch in batches:
            if batch.get("kind", "speech") != "speech":
                raise ValueError(f"evaluation needs speech batches, got kind={batch.get('kind')!r}")
            if device is not None:
                batch = to_device(batch, device)
            start = time.perf_counter()
            variants, short = decode(batch, min_frames)
            elapsed = time.perf_counter() - start
            for result, ids in zip(results, variants, strict=True):
                result.decode_seconds += elapsed
                _add_decoded_batch(result, batch, ids, short, tokenizer)
            bar.update(len(batch["keys"]))
            bar.set_postfix(rtf=f"{results[0].rtf:.3f}", refresh=False)
    bar.close()
    too_short = results[0].too_short
    if too_short:
        log.warning(
            "%d utterance(s) shorter than %d feature frames were not decoded (empty hypothesis): %s",
            len(too_short), min_frames, ", ".join(too_short[:5]),
        )
    return results


def evaluate_batches(
    model,
    tokenizer,
    batches: Iterable[dict],
    *,
    normalize: bool = True,
    cer_languages: Sequence[str] = DEFAULT_CER_LANGUAGES,
    **decode_options,
) -> EvaluationResult:
    """Decode (:func:`decode_batches`; ``decode_options``: its ``method``, ``beam``, ``ctc_weight``,
    ``progress``, ``total``, ``force_language``, ``lm``) and score (:func:`astra.eval.metrics.score_corpus` with
    ``normalize`` and ``cer_languages``)."""
    decoded = decode_batches(model, tokenizer, batches, **decode_options)
    return score_decoded(decoded, normalize=normalize, cer_languages=cer_languages)


def score_decoded(decoded: DecodeResult, *, normalize: bool = True,
                  cer_languages: Sequence[str] = DEFAULT_CER_LANGUAGES) -> EvaluationResult:
    """Score decoded hypotheses (:func:`astra.eval.metrics.score_corpus`); ``ValueError``
    when nothing was decoded."""
    if not decoded.keys:
        raise ValueError("no utterances were decoded (the evaluation data is empty)")
    scores, summary = score_corpus(
        decoded.keys, decoded.languages, decoded.references, decoded.hypotheses,
        normalize=normalize, cer_languages=cer_languages,
    )
    log.info(
        "decoded %d utterances (%.1f s audio) in %.1f s: RTF %.4f",
        len(decoded.keys), decoded.audio_seconds, decoded.decode_seconds, decoded.rtf,
    )
    return EvaluationResult(decoded=decoded, scores=scores, summary=summary)


def evaluation_data_config(data_cfg, corpora: Sequence[str], fleurs: Sequence[str],
                           fleurs_dir: str | None = None, num_workers: int = 0):
    """The checkpoint's ``DataConfig`` with its sources replaced by the evaluated data.

    Feature and tokenizer settings (language tags, transcript normalisation, batching) stay
    the checkpoint's; ``corpora``/``fleurs`` replace its sources (``fleurs_dir`` its FLEURS
    copy when given), every language is kept and ``num_workers`` processes read audio.
    """
    return replace(
        data_cfg, corpora=[str(d) for d in corpora], fleurs=list(fleurs),
        fleurs_dir=data_cfg.fleurs_dir if fleurs_dir is None else fleurs_dir,
        languages=[], num_workers=num_workers,
    )


def evaluate_lm_sweep(model, tokenizer, batches, lm=None, points: Sequence[tuple[float, float]] = (),
                      ctc_weights: Sequence[float] = (0.3,), **options):
    """:func:`evaluate_batches` once per ``(lm_weight, length_bonus)`` of ``points``
    (``lm.weight`` and ``lm.length_bonus`` set in turn; one pass without ``lm``) and CTC
    weight of ``ctc_weights`` (the ``ctc_weight`` of :func:`decode_batches`).

    Returns:
        ``(runs, skipped)``: ``runs`` a list of ``((weight, bonus, ctc_weight), EvaluationResult)``
        (weight and bonus ``None`` without ``lm``);
        ``skipped`` the ``EvalBatches.skip_summary()`` after the first pass (later passes
        would count the same skips again).
    """
    runs, skipped = [], None
    for point in points if lm is not None else [(None, None)]:
        if lm is not None:
            lm.weight, lm.length_bonus = point
        # ctc_beam_rescore: one pass serves every CTC weight; other methods: one pass per weight
        one_pass = options.get("method") == "ctc_beam_rescore" and len(ctc_weights) > 1
        for weights in [list(ctc_weights)] if one_pass else [[w] for w in ctc_weights]:
            for ctc_weight, result in zip(weights, _evaluate_pass(model, tokenizer, batches, lm, weights, options),
                                          strict=True):
                runs.append(((*point, ctc_weight), result))
            if skipped is None:
                skipped = batches.skip_summary()
    return runs, skipped


def _evaluate_pass(model, tokenizer, batches, lm, ctc_weights: Sequence[float], options: dict) -> list:
    """One decoding pass at ``lm``'s current point: one :class:`EvaluationResult` per CTC
    weight (several only for ``ctc_beam_rescore``, :func:`decode_batches_rescored`)."""
    if len(ctc_weights) == 1:
        return [evaluate_batches(model, tokenizer, batches, lm=lm, ctc_weight=ctc_weights[0], **options)]
    score = {k: options[k] for k in ("normalize", "cer_languages") if k in options}
    if options.get("force_language"):
        raise ValueError("a forced first token (language) needs an aligner_* method, not 'ctc_beam_rescore'")
    decode = {k: options[k] for k in ("beam", "progress", "total") if k in options}
    decoded = decode_batches_rescored(model, tokenizer, batches, ctc_weights, lm=lm, **decode)
    return [score_decoded(d, **score) for d in decoded]
