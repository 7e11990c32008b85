"""Long-form inference helpers (Aligner-Encoders, arXiv:2502.05232): chunk boundaries and the join of
chunk transcripts. (The training-time concatenation is :func:`astra.data.batch_ops.concatenate_utterances`.)
"""

from __future__ import annotations


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
