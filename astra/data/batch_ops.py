"""Operations on batch dicts (CONTRIBUTING.md, "Batches"): device moves, emptiness, and the
utterance concatenation of long-form training.

Legend: B batch, T input frames (10 ms), F features, U tokens.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor


def to_device(batch: dict, device: torch.device | str) -> dict:
    """The batch with its tensors on ``device`` (lists and strings unchanged)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
        for k, v in batch.items()
    }


def is_empty_batch(batch: dict) -> bool:
    """True for a batch with no utterance or sentence (B = 0), e.g. a speech batch whose
    every utterance failed to decode."""
    tokens = batch.get("tokens")
    return tokens is not None and tokens.shape[0] == 0


def concatenation_generator(seed: int, epoch: int, keys: list[str]) -> torch.Generator:
    """The RNG that picks the pairs of a training speech batch: a function of the run seed,
    the epoch and the batch's utterance keys, so a resumed run (or a DataLoader worker)
    picks the same pairs."""
    draw = random.Random(f"{seed}|{epoch}|concat|{'|'.join(keys)}").getrandbits(63)
    return torch.Generator().manual_seed(draw)


def concatenate_utterances(batch: dict, fraction: float, generator: torch.Generator | None = None) -> dict:
    """Training-time concatenation on a speech batch, the long-form training of
    "Aligner-Encoders: Self-Attention Transformers Can Be Self-Transducers" (arXiv:2502.05232).

    A random ``fraction`` of the utterances (rounded down to an even number) is paired up;
    each pair (a, b) becomes one utterance: features ``a[:Ta] ++ b[:Tb]``, tokens ``ya ++ yb``,
    text ``"ta tb"``, key ``"ka+kb"``, duration summed, language of ``a``. The other
    utterances are kept as they are, so the batch shrinks by the number of pairs.

    Args:
        batch: speech batch (``CONTRIBUTING.md``): ``features [B, T, F]``, ``feature_lens``,
            ``tokens [B, U]``, ``token_lens``, ``keys``, ``languages``, ``texts``,
            ``durations``; other keys are copied unchanged.
        fraction: in [0, 1]; 0 returns the batch unchanged.
        generator: RNG for the choice (:func:`concatenation_generator` in training).
    Returns:
        A new speech batch with the same schema (padded to the new longest utterance).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"concatenate_utterances: fraction={fraction} must be in [0, 1]")
    size = batch["features"].size(0)
    num_pairs = int(size * fraction) // 2
    if num_pairs == 0:
        return batch
    order = torch.randperm(size, generator=generator).tolist()
    pairs = [(order[2 * i], order[2 * i + 1]) for i in range(num_pairs)]
    used = {i for pair in pairs for i in pair}
    groups = [[i] for i in range(size) if i not in used] + [list(p) for p in pairs]

    feats, toks = batch["features"], batch["tokens"]
    flens, tlens = batch["feature_lens"].tolist(), batch["token_lens"].tolist()
    new_feats = [torch.cat([feats[i, : flens[i]] for i in g]) for g in groups]
    new_toks = [torch.cat([toks[i, : tlens[i]] for i in g]) for g in groups]
    out = dict(batch)
    out["features"] = _pad(new_feats, feats)
    out["feature_lens"] = torch.tensor([f.size(0) for f in new_feats], dtype=batch["feature_lens"].dtype)
    out["tokens"] = _pad(new_toks, toks)
    out["token_lens"] = torch.tensor([t.size(0) for t in new_toks], dtype=batch["token_lens"].dtype)
    if "keys" in batch:
        out["keys"] = ["+".join(batch["keys"][i] for i in g) for g in groups]
    if "texts" in batch:
        out["texts"] = [" ".join(batch["texts"][i] for i in g) for g in groups]
    if "languages" in batch:
        out["languages"] = [batch["languages"][g[0]] for g in groups]
    if "durations" in batch:
        durations = batch["durations"]
        out["durations"] = torch.stack([sum(durations[i] for i in g) for g in groups]).to(durations.dtype)
    return out


def _pad(rows: list[Tensor], like: Tensor) -> Tensor:
    """Zero-pad ``rows`` (each ``[L_i, ...]``) to ``[N, max L_i, ...]`` with ``like``'s dtype."""
    width = max(r.size(0) for r in rows)
    out = torch.zeros((len(rows), width) + tuple(like.shape[2:]), dtype=like.dtype, device=like.device)
    for i, row in enumerate(rows):
        out[i, : row.size(0)] = row
    return out
