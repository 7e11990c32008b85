"""Validation during training: weighted loss and per-language WER/CER of speech batches.

Every process validates its own shard (:func:`validate_shard`); the main process merges the
shards (:func:`summarize_validation`). :class:`ValidationData` holds the batches a run
validates on (and the first one, which the attention plots and alignment statistics use).
The reported ``loss`` weights the losses with their configured, un-ramped weights
(:func:`astra.train.objective.loss_weights` without a step).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch

from astra.data.batch_ops import is_empty_batch
from astra.train.objective import loss_weights
from astra.train.sections import LossConfig

log = logging.getLogger(__name__)


@torch.no_grad()
def validate_shard(
    model: torch.nn.Module,
    batches: Iterable[dict],
    losses_cfg: LossConfig,
    tokenizer=None,
    *,
    decode_method: str = "aligner_greedy",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict:
    """Loss sums and hypotheses of one process's validation batches (model left in eval mode).

    ``loss`` per batch is the sum of the configured, un-ramped weights x losses
    (:func:`astra.train.objective.loss_weights` without a step), so values are comparable
    across steps; a loss the config has no weight for is a ``ValueError``, as in training.
    Hypotheses come from ``astra.eval.evaluate.decode_batch``, the decode step of ``astra
    evaluate``: utterances too short for the front end are not decoded (empty hypothesis, so
    their words count as deletions), listed in ``too_short`` and logged. Returns plain data:
    ``sums``/``counts`` per loss name and ``keys``/``languages``/``refs``/``hyps``/``too_short``
    lists (empty without a tokenizer).
    """
    from astra.eval.evaluate import decode_batch, min_input_frames

    model.eval()
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    shard = {"keys": [], "languages": [], "refs": [], "hyps": [], "too_short": []}
    min_frames = min_input_frames(model)
    for batch in batches:
        if len(batch["keys"]) == 0:
            continue
        with autocast():
            out = model.forward_speech(batch)
        weights = loss_weights(losses_cfg, list(out.losses))
        total = 0.0
        for name, value in out.losses.items():
            v = float(value.float())
            sums[f"loss/{name}"] += v
            counts[f"loss/{name}"] += 1
            total += weights[name] * v
        sums["loss"] += total
        counts["loss"] += 1
        if tokenizer is not None and hasattr(model, "decode"):
            with autocast():
                ids, short = decode_batch(model, batch, decode_method, min_frames=min_frames)
            shard["too_short"].extend(batch["keys"][i] for i in short)
            shard["keys"].extend(batch["keys"])
            shard["languages"].extend(batch["languages"])
            shard["refs"].extend(batch["texts"])
            shard["hyps"].extend(tokenizer.decode(list(h)) for h in ids)
    shard["sums"], shard["counts"] = dict(sums), dict(counts)
    if shard["too_short"]:
        log.warning(
            "validation: %d utterance(s) shorter than %d feature frames were not decoded "
            "(empty hypothesis; counted as skipped/too_short_audio): %s",
            len(shard["too_short"]), min_frames, ", ".join(shard["too_short"][:5]),
        )
    return shard


def summarize_validation(shards: list[dict]) -> dict[str, float]:
    """Merge shards: mean ``loss`` and ``loss/<name>`` over batches; ``wer/<language>``,
    ``wer_macro``, ``wer_pooled`` (CER for languages scored by characters,
    ``astra.eval.metrics``) and ``skipped/too_short_audio`` (utterances not decoded). Empty
    when there was no validation batch."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    keys, languages, refs, hyps, too_short = [], [], [], [], []
    for shard in shards:
        for k, v in shard["sums"].items():
            sums[k] += v
        for k, v in shard["counts"].items():
            counts[k] += v
        keys += shard["keys"]
        languages += shard["languages"]
        refs += shard["refs"]
        hyps += shard["hyps"]
        too_short += shard.get("too_short", [])
    result = {k: v / counts[k] for k, v in sums.items() if counts[k]}
    if keys:
        from astra.eval.metrics import score_corpus

        _, summary = score_corpus(keys, languages, refs, hyps)
        for lang in summary.languages:
            result[f"wer/{lang.language}"] = lang.error_rate
        result["wer_macro"] = summary.macro_error_rate
        result["wer_pooled"] = summary.pooled_error_rate
        result["skipped/too_short_audio"] = float(len(too_short))
    return result


def validate(model, batches, losses_cfg, tokenizer=None, **kwargs) -> dict[str, float]:
    """One-process validation: :func:`validate_shard` + :func:`summarize_validation`."""
    return summarize_validation([validate_shard(model, batches, losses_cfg, tokenizer, **kwargs)])


class ValidationData:
    """The validation batches of this process: the first ``max_batches`` kept in memory, or
    (0) the whole iterable, re-read at every validation. ``eval_batches`` (see
    :class:`astra.train.trainer.TrainingParts`) is called once, at the first use."""

    def __init__(self, eval_batches: Callable[[], Iterable[dict]] | None, max_batches: int,
                 num_processes: int = 1):
        self.eval_batches = eval_batches
        self.max_batches = max_batches
        self.num_processes = num_processes
        self._batches: Iterable[dict] | None = None  # built at the first use
        self._first: dict | None = None  # the first non-empty batch...
        self._first_looked_for = False  # ...once looked for (None then means: there is none)

    @property
    def available(self) -> bool:
        return self.eval_batches is not None

    def batches(self) -> Iterable[dict]:
        if self._batches is None:
            batches = self.eval_batches()
            limit = self.max_batches
            self._batches = list(itertools.islice(batches, limit)) if limit > 0 else batches
            if limit > 0 and hasattr(batches, "utterances") and self.num_processes == 1:
                self._warn_missing_languages(batches.utterances, self._batches)
        return self._batches

    def first_batch(self) -> dict | None:
        """The first non-empty validation batch (None if there is none or no data)."""
        if not self.available:
            return None
        if not self._first_looked_for:
            self._first = next((b for b in self.batches() if not is_empty_batch(b)), None)
            self._first_looked_for = True
        return self._first

    def _warn_missing_languages(self, utterances, kept_batches: list[dict]) -> None:
        everything = {u.language for u in utterances}
        kept = {lang for b in kept_batches for lang in b.get("languages", [])}
        if everything - kept:
            log.warning(
                "validation: run.valid_max_batches=%d covers %s only; not validated: %s "
                "(raise run.valid_max_batches to at least the number of languages)",
                self.max_batches, ", ".join(sorted(kept)) or "nothing",
                ", ".join(sorted(everything - kept)),
            )
