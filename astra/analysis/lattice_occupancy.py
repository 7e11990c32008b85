"""Emit-arc occupancy of the model's RNN-T alignment head for one utterance (plots).

Legend: T input frames (10 ms), T' encoder frames, F features, U tokens.

``gamma[u, t]`` is the posterior probability that the head's lattice emits token u+1 at
encoder frame t (k2's ``px_grad``); every row sums to 1. The work is done by
:meth:`astra.model.AstraModel.alignment_occupancy`; this module adapts it to one
utterance's features and token ids.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def model_lattice_occupancy(model, features: torch.Tensor, tokens: list[int], which: str = "simple"):
    """Occupancy ``[U, T']`` of ``model``'s RNN-T alignment head for one utterance.

    Args:
        model: an ``AstraModel`` with ``rnnt_head`` enabled.
        features: ``[T, F]`` raw fbank features.
        tokens: the transcript's ids y_1..y_U (no ``<sos>``/``<eos>``).
        which: ``"simple"`` (the lm+am lattice whose occupancy weights ASTRA) or
            ``"full"`` (the head's full joiner).
    Returns:
        ``[U, T']`` float32 on CPU.
    Raises:
        ValueError: the model has no RNN-T head, ``which`` is unknown, ``tokens`` is empty,
            or the audio is too short for one encoder frame.
    """
    if not tokens:
        raise ValueError("the transcript is empty: no lattice occupancy to compute")
    if features.dim() != 2:
        raise ValueError(f"features must be [T, F], got shape {tuple(features.shape)}")
    device = features.device
    batch = {
        "features": features[None],
        "feature_lens": torch.tensor([features.size(0)], device=device),
        "tokens": torch.tensor([list(tokens)], dtype=torch.long, device=device),
        "token_lens": torch.tensor([len(tokens)], device=device),
    }
    occupancy, _, frame_lens = model.alignment_occupancy(batch, lattice=which)
    return occupancy[0, :, : int(frame_lens[0])].cpu()
