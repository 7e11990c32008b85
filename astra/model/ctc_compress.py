"""CTC compression: one frame per CTC label run, so the upper layers see about one frame per token.

Legend: B batch, T' encoder frames, L compressed frames, D model dim.

The frames of an intermediate layer are grouped by the greedy labels of the CTC head at that
layer (argmax per frame, no gradient): consecutive frames with the same label form a run, and
each run becomes the mean of its frames (the "avg" merge of "CTC-based Compression for Direct
Speech Translation", arXiv:2102.01578). Two modes:

* ``"runs"``: every run is kept, blank runs too (L between the number of tokens and about
  twice that);
* ``"labels"``: blank runs are dropped and an end frame is appended, so a perfect CTC
  output gives exactly the U + 1 frames the Aligner reads (tokens, then ``<eos>``), the same
  shape as the text path (the text encoder reads ``y_1..y_U, <eos>``).

The merge is a mean, so the gradient reaches every merged frame; only the grouping is
discrete.
"""

from __future__ import annotations

import torch
from torch import Tensor


def ctc_compress(
    frames: Tensor, lengths: Tensor, labels: Tensor, blank_id: int, mode: str,
    end_frame: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Merge the frames of each label run.

    Args:
        frames: ``[B, T', D]`` encoder frames (padding ignored).
        lengths: ``[B]`` valid frames per utterance.
        labels: ``[B, T']`` greedy CTC label of every frame (int).
        blank_id: the CTC blank.
        mode: ``"runs"`` or ``"labels"`` (module doc).
        end_frame: ``[D]``, appended after the last run in ``"labels"`` mode (required there).

    Returns:
        ``(compressed [B, L, D], compressed_lengths [B])``; padding is 0. An utterance with no
        frames stays empty (``"labels"``: only the end frame).
    """
    if mode not in ("runs", "labels"):
        raise ValueError(f"ctc_compress mode {mode!r}: use 'runs' or 'labels'")
    if mode == "labels" and end_frame is None:
        raise ValueError("ctc_compress mode 'labels' needs an end_frame")
    batch, width, dim = frames.shape
    positions = torch.arange(width, device=frames.device)
    valid = positions[None, :] < lengths[:, None]  # [B, T']
    starts = torch.ones_like(valid)
    starts[:, 1:] = labels[:, 1:] != labels[:, :-1]  # a run starts where the label changes
    kept = valid if mode == "runs" else valid & (labels != blank_id)
    run_index = torch.cumsum(starts & kept, dim=1) - 1  # [B, T']: the frame's compressed slot
    counts = (starts & kept).sum(dim=1)  # [B] runs kept
    out_lengths = counts + (1 if mode == "labels" else 0)
    out_width = max(int(out_lengths.max()) if batch else 0, 1)
    rows = torch.arange(batch, device=frames.device)[:, None].expand(batch, width)
    slot = (rows * out_width + run_index.clamp(min=0))[kept]  # [N] flat target slots
    sums = frames.new_zeros(batch * out_width, dim).index_add_(0, slot, frames[kept])
    sizes = frames.new_zeros(batch * out_width).index_add_(0, slot, frames.new_ones(slot.numel()))
    compressed = (sums / sizes.clamp(min=1)[:, None]).view(batch, out_width, dim)
    if mode == "labels":
        at_end = torch.arange(out_width, device=frames.device)[None, :] == counts[:, None]  # [B, L]
        compressed = torch.where(at_end[:, :, None], end_frame.to(compressed.dtype), compressed)
    return compressed, out_lengths
