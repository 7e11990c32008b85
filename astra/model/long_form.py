"""Long-form helpers (Aligner-Encoders, arXiv:2502.05232): chunk boundaries for inference and utterance concatenation
for training.

Legend: B batch, T input frames (10 ms), F features, U tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor


def chunk_bounds(total_frames: int, chunk_frames: int, min_frames: int = 1) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges of consecutive chunks of ``chunk_frames``.

    A last piece shorter than a quarter chunk (or than ``min_frames``) is merged into the
    previous chunk, so no chunk is too short to encode.
    """
    if total_frames < 1 or chunk_frames < 1:
        raise ValueError(f"chunk_bounds: total_frames={total_frames} and chunk_frames={chunk_frames} must be >= 1")
    bounds = [(s, min(s + chunk_frames, total_frames)) for s in range(0, total_frames, chunk_frames)]
    if len(bounds) > 1:
        start, end = bounds[-1]
        if end - start < max(chunk_frames // 4, min_frames):
            bounds[-2:] = [(bounds[-2][0], end)]
    return bounds


def join_chunks(tokenizer, chunks: list[list[int]]) -> str:
    """Text of a long recording decoded chunk by chunk: ``chunks`` holds each chunk's token
    ids. Each chunk is detokenized on its own and the texts are joined with one space, so a
    word boundary always separates chunks (a chunk's first piece may lack SentencePiece's
    word-start mark, and detokenizing the concatenated ids would glue its first word to the
    previous chunk's last word). Empty chunks add nothing."""
    texts = (tokenizer.decode(ids).strip() for ids in chunks)
    return " ".join(text for text in texts if text)


def concatenate_utterances(batch: dict, fraction: float, generator: torch.Generator | None = None) -> dict:
    """Training-time concatenation (the long-form recipe of Aligner-Encoders, arXiv:2502.05232) on a speech batch.

    A random ``fraction`` of the utterances (rounded down to an even number) is paired up;
    each pair (a, b) becomes one utterance: features ``a[:Ta] ++ b[:Tb]``, tokens ``ya ++ yb``,
    text ``"ta tb"``, key ``"ka+kb"``, duration summed, language of ``a``. The other
    utterances are kept as they are, so the batch shrinks by the number of pairs.

    Args:
        batch: speech batch (``CONTRIBUTING.md``): ``features [B, T, F]``, ``feature_lens``,
            ``tokens [B, U]``, ``token_lens``, ``keys``, ``languages``, ``texts``,
            ``durations``; other keys are copied unchanged.
        fraction: in [0, 1]; 0 returns the batch unchanged.
        generator: RNG for the choice (reproducible under the trainer's seed).
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
    out["features"] = _pad([f for f in new_feats], feats)
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
