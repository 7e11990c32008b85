"""Batch samplers: bucketed budget packing, rank sharding, exact mid-epoch resume, mixing.

:class:`BucketBatchSampler` packs item indices into batches whose summed cost (seconds of
audio for speech, tokens for text) stays within a budget. Each epoch's global batch list is
a pure function of (costs, budget, seed, epoch, world size), so every rank computes the same
list and takes batches ``rank, rank + world_size, ...``; the position within the epoch is
the whole state.

Equal batch counts across ranks (a rank with one batch fewer would hang in a collective):
while the global count is not a multiple of ``world_size``, the batch with the most items is
split in two (no item lost or repeated, both halves within budget). Only when every batch
holds a single item does the sampler repeat a randomly chosen batch; such repeats are
counted in ``padded_batches`` (and logged).

An item whose cost alone exceeds the budget gets a batch of its own and is reported in
``over_budget`` (the caller can drop such items up front with a max-duration guard).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Iterator

log = logging.getLogger(__name__)


def _fingerprint(costs: list[float]) -> str:
    h = hashlib.sha1()
    h.update(str(len(costs)).encode())
    h.update(",".join(f"{c:.3f}" for c in costs).encode())
    return h.hexdigest()[:16]


class BucketBatchSampler:
    """Budgeted, bucketed, sharded batch sampler with exact mid-epoch resume.

    Args:
        costs: cost of each item (seconds for speech, tokens for text), index = item id.
        budget: maximum summed cost of a batch.
        num_buckets: items are sorted by cost and cut into this many buckets; batches are
            packed inside a bucket (little padding) and then shuffled across buckets.
        shuffle: False gives a fixed order (sorted by cost, no shuffling) for evaluation.
        seed: with the epoch, fixes the order.
        rank, world_size: this process's shard.
        max_batch_items: optional cap on items per batch (0: none).
        name: used in log lines.
    """

    def __init__(
        self,
        costs: list[float],
        budget: float,
        *,
        num_buckets: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_batch_items: int = 0,
        name: str = "batches",
    ):
        if budget <= 0:
            raise ValueError(f"{name}: batch budget must be positive, got {budget}")
        if not 0 <= rank < world_size:
            raise ValueError(f"{name}: rank {rank} outside world size {world_size}")
        self.costs = [float(c) for c in costs]
        self.budget = float(budget)
        self.num_buckets = max(1, int(num_buckets))
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.max_batch_items = int(max_batch_items)
        self.name = name
        self.fingerprint = _fingerprint(self.costs)
        self.over_budget = [i for i, c in enumerate(self.costs) if c > self.budget]
        if self.over_budget:
            log.warning(
                "%s: %d item(s) exceed the batch budget %.1f alone and get batches of their own",
                name, len(self.over_budget), self.budget,
            )
        self.epoch = 0
        self.position = 0
        self.padded_batches = 0
        self._cache: dict[int, list[list[int]]] = {}

    # ---- the epoch's batches -------------------------------------------------
    def _pack(self, order: list[int]) -> list[list[int]]:
        batches, current, total = [], [], 0.0
        for i in order:
            c = self.costs[i]
            full = self.max_batch_items and len(current) >= self.max_batch_items
            if current and (total + c > self.budget or full):
                batches.append(current)
                current, total = [], 0.0
            current.append(i)
            total += c
        if current:
            batches.append(current)
        return batches

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of ``epoch`` before sharding (count divisible by world size)."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        n = len(self.costs)
        if self.shuffle:
            tiebreak = [rng.random() for _ in range(n)]
            order = sorted(range(n), key=lambda i: (self.costs[i], tiebreak[i]))
            size = math.ceil(n / self.num_buckets) if n else 1
            batches = []
            for start in range(0, n, size):
                bucket = order[start : start + size]
                rng.shuffle(bucket)
                batches.extend(self._pack(bucket))
            rng.shuffle(batches)
        else:
            batches = self._pack(sorted(range(n), key=lambda i: (self.costs[i], i)))
        return self._equalise(batches, rng)

    def _equalise(self, batches: list[list[int]], rng: random.Random) -> list[list[int]]:
        self.padded_batches = 0
        if not batches:
            return batches
        while len(batches) % self.world_size:
            j = max(range(len(batches)), key=lambda k: len(batches[k]))
            if len(batches[j]) < 2:
                break
            half = len(batches[j]) // 2
            batches[j : j + 1] = [batches[j][:half], batches[j][half:]]
        while len(batches) % self.world_size:
            batches.append(list(batches[rng.randrange(len(batches))]))
            self.padded_batches += 1
        if self.padded_batches:
            log.warning(
                "%s: repeated %d single-item batch(es) so that %d ranks get equal batch counts",
                self.name, self.padded_batches, self.world_size,
            )
        return batches

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._cache:
            if len(self._cache) >= 2:  # keep the current epoch and one look-ahead
                self._cache.pop(min(self._cache, key=lambda e: (e == self.epoch, e)))
            self._cache[epoch] = self.global_batches(epoch)[self.rank :: self.world_size]
        return self._cache[epoch]

    # ---- iteration and state ---------------------------------------------------
    def __len__(self) -> int:
        """Batches of this rank in the current epoch."""
        return len(self.epoch_batches())

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (a no-op if already in that epoch, so a resumed
        position survives the trainer's ``set_epoch`` call)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def remaining(self) -> list[list[int]]:
        """Batches of the current epoch not yet consumed."""
        return self.epoch_batches()[self.position :]

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` batches as consumed."""
        self.position += n

    def __iter__(self) -> Iterator[list[int]]:
        """Remaining batches of the current epoch; each one counts as consumed when yielded."""
        while self.position < len(self.epoch_batches()):
            batch = self.epoch_batches()[self.position]
            self.position += 1
            yield batch

    def upcoming(self) -> Iterator[list[int]]:
        """Endless batches from the current position on, crossing epochs (does not advance)."""
        epoch, position = self.epoch, self.position
        while True:
            batches = self.epoch_batches(epoch)
            if not batches:
                return
            yield from batches[position:]
            epoch, position = epoch + 1, 0

    def advance_cycling(self, n: int = 1) -> None:
        """Consume ``n`` batches, rolling over into the next epoch(s) like :meth:`upcoming`."""
        for _ in range(n):
            if self.position >= len(self.epoch_batches()):
                self.epoch, self.position = self.epoch + 1, 0
            self.position += 1

    def state_dict(self) -> dict:
        """Position state; identical on every rank (ranks move in lockstep)."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "world_size": self.world_size,
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume exactly where :meth:`state_dict` was taken.

        Raises:
            ValueError: the data (costs) differ from those the state was taken on.
        """
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"{self.name}: sampler state was taken on different data "
                f"(fingerprint {state['fingerprint']} != {self.fingerprint}); cannot resume"
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._cache = {}
        position = int(state["position"])
        if int(state["world_size"]) != self.world_size:
            consumed = position * int(state["world_size"])
            position = math.ceil(consumed / self.world_size)
            log.warning(
                "%s: resuming on %d ranks from a state taken on %d: resuming near global batch %d (not exact)",
                self.name, self.world_size, state["world_size"], consumed,
            )
        self.position = position


class BatchMixer:
    """Interleaves speech and text batches: ``text_ratio`` text batches per speech batch.

    An epoch is one pass over the speech sampler. After speech batch ``i`` (0-based) come text
    batches until ``floor((i + 1) * text_ratio)`` have been given this epoch; the text sampler
    cycles through its own epochs. Yields ``("speech", indices)`` / ``("text", indices)``.
    The state (speech and text sampler states + text batches given this epoch) resumes exactly.
    """

    def __init__(self, speech: BucketBatchSampler, text: BucketBatchSampler | None = None, text_ratio: float = 0.0):
        if text_ratio < 0:
            raise ValueError(f"text_ratio must be >= 0, got {text_ratio}")
        self.speech = speech
        self.text = text if (text is not None and len(text.costs) and text_ratio > 0) else None
        self.text_ratio = float(text_ratio) if self.text is not None else 0.0
        self.text_given = 0  # text batches given in the current (speech) epoch

    @property
    def epoch(self) -> int:
        return self.speech.epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.speech.epoch:
            self.text_given = 0
        self.speech.set_epoch(epoch)

    def _text_due(self, speech_done: int) -> int:
        return math.floor(speech_done * self.text_ratio + 1e-9)

    def __len__(self) -> int:
        """Batches (speech + text) of this rank in the current epoch."""
        n = len(self.speech)
        return n + self._text_due(n)

    def plan(self) -> list[tuple[str, list[int]]]:
        """The remaining ``(kind, indices)`` of the current epoch, without consuming them."""
        out: list[tuple[str, list[int]]] = []
        text_iter = self.text.upcoming() if self.text is not None else iter(())
        given = self.text_given
        done = self.speech.position
        for _ in range(self._text_due(done) - given):
            out.append(("text", next(text_iter)))
        given = self._text_due(done)
        for batch in self.speech.remaining():
            out.append(("speech", batch))
            done += 1
            for _ in range(self._text_due(done) - given):
                out.append(("text", next(text_iter)))
            given = self._text_due(done)
        return out

    def advance(self, kind: str) -> None:
        """Mark one batch of ``kind`` (in :meth:`plan` order) as consumed."""
        if kind == "speech":
            self.speech.advance()
        else:
            self.text.advance_cycling()
            self.text_given += 1

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        for kind, batch in self.plan():
            self.advance(kind)
            yield kind, batch

    def state_dict(self) -> dict:
        return {
            "speech": self.speech.state_dict(),
            "text": self.text.state_dict() if self.text is not None else None,
            "text_given": self.text_given,
        }

    def load_state_dict(self, state: dict) -> None:
        self.speech.load_state_dict(state["speech"])
        if self.text is not None and state.get("text") is not None:
            self.text.load_state_dict(state["text"])
        self.text_given = int(state.get("text_given", 0))
