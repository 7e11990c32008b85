"""The training batches of one process: an endless iterator over the epochs of the stream.

The stream shards itself by rank (it is *not* passed through ``accelerator.prepare``) and
already mixes speech with text and concatenates utterances (:mod:`astra.data.stream`);
this part only rolls epochs over, moves batches to the device, and saves / restores its
position for an exact resume.
"""

from __future__ import annotations

import torch

from astra.data.batch_ops import is_empty_batch, to_device
from astra.errors import TrainingError


class TrainBatches:
    """``next(batches)`` -> the next training batch on ``device``, epoch after epoch.

    ``stream`` has ``set_epoch``, ``state_dict``, ``load_state_dict`` and is iterated once
    per epoch. ``last_speech_batch`` is the last non-empty speech batch drawn (kept only
    with ``keep_last_speech``: the alignment statistics of a run without validation data).
    """

    def __init__(self, stream, device: torch.device | str, process_index: int = 0,
                 keep_last_speech: bool = False):
        self.stream = stream
        self.device = device
        self.process_index = process_index
        self.keep_last_speech = keep_last_speech
        self.epoch = 0
        self.batches_in_epoch = 0
        self.last_speech_batch: dict | None = None
        self._iter = None  # the current epoch's iterator, made at the first draw
        self.stream.set_epoch(0)

    def state_dict(self) -> dict:
        return {
            "stream": self.stream.state_dict(),
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.batches_in_epoch = state["batches_in_epoch"]
        self.stream.set_epoch(self.epoch)
        self.stream.load_state_dict(state["stream"])
        self._iter = None

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._iter is None:
            self._iter = iter(self.stream)
        while True:
            try:
                # the data pipeline must not draw from the model's RNG (a DataLoader takes a
                # seed from it when an epoch starts, which a resumed run would do again)
                with torch.random.fork_rng(devices=[]):
                    batch = next(self._iter)
            except StopIteration:
                self._next_epoch()
                continue
            self.batches_in_epoch += 1
            batch = to_device(batch, self.device)
            if self.keep_last_speech and batch.get("kind", "speech") == "speech" and not is_empty_batch(batch):
                self.last_speech_batch = batch
            return batch

    def _next_epoch(self) -> None:
        if self.batches_in_epoch == 0:
            raise TrainingError(
                f"the training data gave no batch in epoch {self.epoch} on process "
                f"{self.process_index}: check the data config"
            ) from None
        self.epoch += 1
        self.batches_in_epoch = 0
        self.stream.set_epoch(self.epoch)
        self._iter = iter(self.stream)
