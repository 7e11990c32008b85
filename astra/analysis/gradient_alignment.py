"""Label-frame alignment from gradients.

Eq. 1 of "The Conformer Encoder May Reverse the Time Dimension" (arXiv:2410.00680).

For target labels ``y_1..y_U`` and an encoder input ``x [T, D]`` (fbank frames, or the
input of a chosen encoder block), ``G[s, t] = log || d log p(y_s | y_<s, x) / d x_t ||_2``.
High values mark the input frames that label ``s`` depends on; plotted like the
attention maps (:func:`astra.analysis.plots.plot_gradient_alignment`), a healthy model
shows a forward diagonal and a time-reversed one an anti-diagonal.
:func:`gradient_peak_frames` turns ``G`` into one frame per label.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EPS = 1e-20


def gradient_alignment(
    label_log_probs: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
) -> torch.Tensor:
    """``G [U, T]``: log L2 norm of each label log-prob's gradient w.r.t. each input frame.

    Args:
        label_log_probs: maps ``inputs [T, D]`` to the target labels' log-probabilities
            ``[U]`` (teacher forcing; one differentiable graph for all labels).
        inputs: ``[T, D]`` input frames (a leaf copy with ``requires_grad`` is made).
    Returns:
        ``[U, T]`` float32 on CPU; frames with a zero gradient get ``log(1e-20)``.
    """
    if inputs.dim() != 2:
        raise ValueError(f"inputs must be [T, D], got {tuple(inputs.shape)}")
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        log_probs = label_log_probs(x)
        if log_probs.dim() != 1 or log_probs.numel() == 0:
            raise ValueError(
                f"label_log_probs must return a non-empty [U] vector, got {tuple(log_probs.shape)}"
            )
        rows = []
        for s in range(log_probs.numel()):
            (grad,) = torch.autograd.grad(
                log_probs[s], x, retain_graph=s + 1 < log_probs.numel(), allow_unused=True
            )
            if grad is None:
                grad = torch.zeros_like(x)
            rows.append(grad.norm(dim=-1).clamp_min(EPS).log())
    return torch.stack(rows).detach().float().cpu()


def gradient_peak_frames(gradients: torch.Tensor) -> torch.Tensor:
    """``[U]`` frame of the largest gradient per label (a hard label-frame alignment)."""
    if gradients.dim() != 2:
        raise ValueError(f"gradients must be [U, T], got {tuple(gradients.shape)}")
    return gradients.argmax(dim=1)


GRADIENT_INPUTS = ("features", "shared")


def model_gradient_alignment(model, features: torch.Tensor, tokens: list[int], wrt: str = "features"):
    """Gradient alignment (arXiv:2410.00680) of an ``AstraModel``'s Aligner for one utterance.

    Teacher-forced Aligner log-probabilities of ``y_1..y_U, <eos>`` (U+1 labels, label i
    read from encoder frame i) are differentiated with respect to

    * ``wrt="features"``: the raw fbank frames ``[T, F]`` (10 ms), the encoder's input;
    * ``wrt="shared"``: the shared encoder's input S ``[T', D]`` (40 ms encoder frames).

    Runs in eval mode (the model's mode is restored). Returns ``G [U+1, T]`` (or
    ``[U+1, T']``); see :func:`gradient_alignment`.
    Raises:
        ValueError: unknown ``wrt``, empty ``tokens``, or more labels than encoder frames.
    """
    if wrt not in GRADIENT_INPUTS:
        raise ValueError(f"gradient input must be one of {GRADIENT_INPUTS}, got {wrt!r}")
    if not tokens:
        raise ValueError("the transcript is empty: no labels to differentiate")
    from astra.constants import EOS_ID

    device = features.device
    targets = torch.tensor([list(tokens) + [EOS_ID]], dtype=torch.long, device=device)
    labels = targets.size(1)
    frames = torch.tensor([features.size(0)], device=device)

    def read_labels(top: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        if int(lens[0]) < labels:
            raise ValueError(
                f"{labels} labels (U+1 with <eos>) but only {int(lens[0])} encoder frames: "
                "the transcript is too long for this audio"
            )
        logits = model.aligner(top[:, :labels], targets)  # [1, U+1, V]
        return logits.float().log_softmax(dim=-1)[0].gather(1, targets[0, :, None])[:, 0]

    def from_features(x: torch.Tensor) -> torch.Tensor:
        top, lens, _ = model.forward_encoder(x[None], frames)
        return read_labels(top, lens)

    was_training = model.training
    model.eval()  # no SpecAugment, no dropout
    try:
        if wrt == "features":
            return gradient_alignment(from_features, features)
        with torch.no_grad():
            _, lens, layers = model.forward_encoder(features[None], frames, (0,))

        def from_shared(s: torch.Tensor) -> torch.Tensor:
            top, top_lens, _ = model.forward_shared(s[None], lens)
            return read_labels(top, top_lens)

        return gradient_alignment(from_shared, layers[0][0])
    finally:
        model.train(was_training)
