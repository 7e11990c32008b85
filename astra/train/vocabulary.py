"""Changing the vocabulary of a pretrained model (``finetune.tokenizer``).

Every tensor indexed by token id (embeddings ``[V, D]``, output layers ``[V, D]`` and biases
``[V]``) is re-indexed from the old tokenizer to the new one: the row of a piece present in
both vocabularies (matched by piece string, so ``<blank>``/``<unk>``/``<sos>``/``<eos>`` and
``<lang:xx>`` tags keep their trained rows wherever their ids are) is copied; a new piece
keeps the freshly initialised row of the model being fine-tuned. The same idea as NeMo's
``change_vocabulary`` and ESPnet's token-list change, with the shared rows kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class VocabularyTransfer:
    """What :func:`transfer_vocabulary` did: piece counts and the re-indexed tensors."""

    old_size: int
    new_size: int
    copied: int  # pieces of the new vocabulary whose rows come from the old model
    new: list[str] = field(default_factory=list)  # pieces initialised fresh
    dropped: int = 0  # old pieces absent from the new vocabulary
    tensors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        shown = " ".join(self.new[:10]) + (" ..." if len(self.new) > 10 else "")
        return (
            f"vocabulary {self.old_size} -> {self.new_size} pieces: {self.copied} loaded from the "
            f"pretrained rows, {len(self.new)} new (initialised{': ' + shown if shown else ''}), "
            f"{self.dropped} old pieces dropped; {len(self.tensors)} vocabulary tensors re-indexed"
        )


def vocabulary_keys(model: torch.nn.Module) -> list[str]:
    """State-dict keys whose first dimension is the vocabulary, found by building the same
    model with one more id on the meta device (nothing allocated) and comparing shapes."""
    cfg, size = getattr(model, "cfg", None), getattr(model, "vocab_size", None)
    if cfg is None or size is None:
        raise ValueError(f"{type(model).__name__} has no cfg / vocab_size: cannot change its vocabulary")
    with torch.device("meta"):
        bigger = type(model)(cfg, size + 1).state_dict()
    keys = []
    for k, v in model.state_dict().items():
        other = bigger[k].shape
        if tuple(other) != tuple(v.shape):
            if other[0] != v.shape[0] + 1 or tuple(other[1:]) != tuple(v.shape[1:]):
                raise ValueError(f"{k}: vocabulary is not its first dimension ({tuple(v.shape)})")
            keys.append(k)
    return keys


def transfer_vocabulary(
    state: dict[str, torch.Tensor], model: torch.nn.Module, old_pieces: list[str], new_pieces: list[str]
) -> tuple[dict[str, torch.Tensor], VocabularyTransfer]:
    """``state`` (a checkpoint of vocabulary ``old_pieces``) re-indexed for ``model`` whose
    vocabulary is ``new_pieces`` (id -> piece string); other tensors are returned unchanged.

    Raises:
        ValueError: the checkpoint's vocabulary tensors do not have ``len(old_pieces)`` rows,
            or the model's do not have ``len(new_pieces)``.
    """
    keys = vocabulary_keys(model)
    own = model.state_dict()
    old_index = {p: i for i, p in enumerate(old_pieces)}
    pairs = [(new_id, old_index[p]) for new_id, p in enumerate(new_pieces) if p in old_index]
    new_ids = torch.tensor([n for n, _ in pairs], dtype=torch.long)
    old_ids = torch.tensor([o for _, o in pairs], dtype=torch.long)
    out = dict(state)
    for k in keys:
        if k not in state:
            continue
        if state[k].shape[0] != len(old_pieces):
            raise ValueError(
                f"{k} has {state[k].shape[0]} rows, --init's tokenizer has {len(old_pieces)} pieces"
            )
        if own[k].shape[0] != len(new_pieces):
            raise ValueError(f"{k} has {own[k].shape[0]} rows, the new tokenizer {len(new_pieces)} pieces")
        rows = own[k].detach().to("cpu", copy=True).to(state[k].dtype)
        rows[new_ids] = state[k][old_ids]
        out[k] = rows
    new_set = set(new_pieces)
    report = VocabularyTransfer(
        old_size=len(old_pieces), new_size=len(new_pieces), copied=len(pairs),
        new=[p for p in new_pieces if p not in old_index],
        dropped=sum(1 for p in old_pieces if p not in new_set), tensors=[k for k in keys if k in state],
    )
    return out, report
