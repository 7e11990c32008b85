"""Validation during training: weighted loss and per-language WER/CER of the speech batches."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch

from astra.train.sections import LossConfig


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    batches: Iterable[dict],
    losses_cfg: LossConfig,
    tokenizer=None,
    *,
    decode_method: str = "aligner_greedy",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Mean losses over ``batches`` and, with a tokenizer, error rates per language.

    Returns ``loss`` (sum of the configured, un-ramped weights x losses, so values are
    comparable across steps), ``loss/<name>`` per model loss, and ``wer/<language>``,
    ``wer_macro``, ``wer_pooled`` (CER for languages scored by characters, see
    ``astra.eval.metrics``). The model is left in eval mode.
    """
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    keys, languages, refs, hyps = [], [], [], []
    for batch in batches:
        with autocast():
            out = model.forward_speech(batch)
        total = 0.0
        for name, value in out.losses.items():
            v = float(value.float())
            sums[f"loss/{name}"] += v
            counts[f"loss/{name}"] += 1
            weight = losses_cfg.weight(name) if _has_weight(losses_cfg, name) else 0.0
            total += weight * v
        sums["loss"] += total
        counts["loss"] += 1
        if tokenizer is not None and hasattr(model, "decode"):
            with autocast():
                ids = model.decode(batch, method=decode_method)
            keys.extend(batch["keys"])
            languages.extend(batch["languages"])
            refs.extend(batch["texts"])
            hyps.extend(tokenizer.decode(list(h)) for h in ids)
    result = {k: v / counts[k] for k, v in sums.items()}
    if keys:
        from astra.eval.metrics import score_corpus

        _, summary = score_corpus(keys, languages, refs, hyps)
        for lang in summary.languages:
            result[f"wer/{lang.language}"] = lang.error_rate
        result["wer_macro"] = summary.macro_error_rate
        result["wer_pooled"] = summary.pooled_error_rate
    return result


def _has_weight(losses_cfg: LossConfig, name: str) -> bool:
    try:
        losses_cfg.weight(name)
    except (KeyError, AttributeError):
        return False
    return True
