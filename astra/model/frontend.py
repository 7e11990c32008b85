"""Front end: frequency warping, global CMVN, SpecAugment and Conv2d subsampling.

Input features are raw 80-dim log-mel frames from :func:`astra.features.fbank` (10 ms
frames). Legend: B batch, T input frames (10 ms), T' encoder frames, F features, D model dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def lengths_to_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``[B]`` lengths -> ``[B, max_len]`` bool mask, True on padding."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class GlobalCMVN(nn.Module):
    """Global mean/variance normalisation with statistics stored as buffers (saved with weights).

    ``forward(features [B, T, F], lengths [B]) -> [B, T, F]``; padded frames stay zero.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Store ``mean [F]`` and ``std [F]`` (std clamped at 1e-5)."""
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(
                f"feature stats must have shape {tuple(self.mean.shape)}, got mean "
                f"{tuple(mean.shape)} and std {tuple(std.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("feature stats contain NaN or inf")
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std).clamp_min(1e-5))

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        out = (features - self.mean) / self.std
        pad = lengths_to_padding_mask(lengths, features.size(1))
        return out.masked_fill(pad[:, :, None], 0.0)


class FrequencyWarp(nn.Module):
    """VTLP-style speaker augmentation: each utterance's mel axis is stretched by a factor
    drawn uniformly from ``[1 - max_warp, 1 + max_warp]`` (linear interpolation between bins,
    the top bin repeated past the edge), which imitates a longer or shorter vocal tract.

    Active only in training mode and when ``max_warp > 0``. ``forward(features [B, T, F],
    lengths [B]) -> [B, T, F]``; padded frames stay as they were. Factors come from torch's
    global RNG (seeded by the trainer).
    """

    def __init__(self, max_warp: float) -> None:
        super().__init__()
        if not 0.0 <= max_warp < 1.0:
            raise ValueError(f"max_warp={max_warp} must be in [0, 1)")
        self.max_warp = max_warp

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        if not self.training or self.max_warp == 0.0:
            return features
        batch, _, bins = features.shape
        factor = 1.0 + (torch.rand(batch, 1, device=features.device) * 2.0 - 1.0) * self.max_warp  # [B, 1]
        source = (torch.arange(bins, device=features.device, dtype=features.dtype)[None, :] / factor).clamp(
            max=bins - 1
        )  # output bin f reads input bin f / factor: [B, F]
        low = source.floor().long()
        high = (low + 1).clamp(max=bins - 1)
        frac = (source - low.to(source.dtype))[:, None, :]
        gather = lambda index: features.gather(2, index[:, None, :].expand_as(features))  # noqa: E731
        warped = gather(low) * (1.0 - frac) + gather(high) * frac
        pad = lengths_to_padding_mask(lengths, features.size(1))
        return torch.where(pad[:, :, None], features, warped)


class SpecAugment(nn.Module):
    """Time and frequency masking (torchaudio transforms) on each utterance's valid frames.

    Active only in training mode. ``forward(features [B, T, F], lengths [B]) -> [B, T, F]``.
    Masks are drawn from torch's global RNG (seeded by the trainer).
    """

    def __init__(
        self,
        freq_masks: int,
        freq_mask_width: int,
        time_masks: int,
        time_mask_width: int,
        time_mask_ratio: float,
    ) -> None:
        super().__init__()
        import torchaudio

        self.freq_masks = freq_masks
        self.time_masks = time_masks
        self.freq_masking = torchaudio.transforms.FrequencyMasking(freq_mask_width)
        self.time_masking = torchaudio.transforms.TimeMasking(time_mask_width, p=time_mask_ratio)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0):
            return features
        out = features.clone()
        for b, length in enumerate(lengths.tolist()):
            if length == 0:
                continue
            spec = out[b, :length].transpose(0, 1).unsqueeze(0)  # [1, F, T_b]
            for _ in range(self.freq_masks):
                spec = self.freq_masking(spec)
            for _ in range(self.time_masks):
                spec = self.time_masking(spec)
            out[b, :length] = spec.squeeze(0).transpose(0, 1)
        return out


# (kernel, stride) of the time axis per Conv2d layer for each subsampling factor
_SUBSAMPLING_LAYERS = {4: ((3, 2), (3, 2)), 6: ((3, 2), (5, 3)), 8: ((3, 2), (3, 2), (3, 2))}


class Conv2dSubsampling(nn.Module):
    """Conv2d stack (no padding, ReLU) that subsamples time by 4, 6 or 8, then a linear layer.

    ``forward(features [B, T, F], lengths [B]) -> (x [B, T', D], lengths' [B])``. Each valid
    output frame depends only on valid input frames, so extra padding never changes it.
    """

    def __init__(self, num_features: int, d_model: int, factor: int, channels: int) -> None:
        super().__init__()
        if factor not in _SUBSAMPLING_LAYERS:
            raise ValueError(f"subsampling factor {factor}: use one of {sorted(_SUBSAMPLING_LAYERS)}")
        self.layers_spec = _SUBSAMPLING_LAYERS[factor]
        self.factor = factor
        layers: list[nn.Module] = []
        in_ch, freq = 1, num_features
        for kernel, stride in self.layers_spec:
            layers += [nn.Conv2d(in_ch, channels, kernel, stride), nn.ReLU()]
            in_ch, freq = channels, (freq - kernel) // stride + 1
        if freq < 1:
            raise ValueError(f"{num_features} features are too few for {factor}x subsampling")
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(channels * freq, d_model)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder frames T' for ``lengths`` input frames (0 when too short)."""
        out = lengths
        for kernel, stride in self.layers_spec:
            out = torch.div(out - kernel, stride, rounding_mode="floor") + 1
        return out.clamp_min(0)

    def min_input_frames(self) -> int:
        """The fewest input frames giving one encoder frame."""
        need = 1
        for kernel, stride in reversed(self.layers_spec):
            need = (need - 1) * stride + kernel
        return need

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(features.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        x = self.out(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return x, self.output_lengths(lengths)
