"""Samplers: exactly-once sharding, budgets, equal batch counts, exact mid-epoch resume, mixing."""

import random

import pytest

from astra.data.samplers import BatchMixer, BucketBatchSampler


def _durations(n, seed=0):
    rng = random.Random(seed)
    return [round(rng.uniform(0.5, 12.0), 2) for _ in range(n)]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 7, 50, 101])
def test_every_item_exactly_once_across_ranks(world_size, n):
    costs = _durations(n, seed=n)
    for epoch in range(2):
        seen, counts = [], []
        padded = 0
        for rank in range(world_size):
            s = BucketBatchSampler(costs, 20.0, seed=3, rank=rank, world_size=world_size, num_buckets=4)
            s.set_epoch(epoch)
            batches = list(s)
            counts.append(len(batches))
            seen.extend(i for b in batches for i in b)
            padded = s.padded_batches
        assert len(set(counts)) == 1, counts  # equal batch counts on every rank
        if padded == 0:
            assert sorted(seen) == list(range(n))
        else:  # only when every batch already holds a single item: repeats are counted
            assert set(seen) == set(range(n)) and len(seen) == n + padded


def test_budget_respected_and_over_budget_reported():
    costs = _durations(80) + [25.0, 31.0]
    s = BucketBatchSampler(costs, 20.0, seed=1)
    assert s.over_budget == [80, 81]
    for b in s.epoch_batches(0):
        total = sum(costs[i] for i in b)
        assert total <= 20.0 or (len(b) == 1 and b[0] in s.over_budget)


def test_epochs_differ_and_are_reproducible():
    costs = _durations(60)
    a = BucketBatchSampler(costs, 15.0, seed=5)
    b = BucketBatchSampler(costs, 15.0, seed=5)
    assert a.epoch_batches(0) == b.epoch_batches(0)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    fixed = BucketBatchSampler(costs, 15.0, shuffle=False)
    assert fixed.epoch_batches(0) == fixed.epoch_batches(1)


@pytest.mark.parametrize("world_size", [1, 3])
def test_mid_epoch_state_resumes_exactly(world_size):
    costs = _durations(70)
    s = BucketBatchSampler(costs, 15.0, seed=2, rank=world_size - 1, world_size=world_size)
    s.set_epoch(1)
    full = s.epoch_batches()
    it = iter(s)
    taken = [next(it) for _ in range(3)]
    state = s.state_dict()
    fresh = BucketBatchSampler(costs, 15.0, seed=99, rank=world_size - 1, world_size=world_size)
    fresh.load_state_dict(state)
    fresh.set_epoch(1)  # the trainer's set_epoch for the resumed epoch keeps the position
    assert taken + list(fresh) == full
    with pytest.raises(ValueError, match="different data"):
        BucketBatchSampler(costs[:-1], 15.0).load_state_dict(state)


def test_mixer_ratio_and_resume():
    speech = BucketBatchSampler(_durations(40), 12.0, seed=0)
    text = BucketBatchSampler([random.Random(i).randint(3, 30) for i in range(15)], 40, seed=1)
    mixer = BatchMixer(speech, text, text_ratio=1.5)
    plan = mixer.plan()
    kinds = [k for k, _ in plan]
    n_speech = kinds.count("speech")
    assert n_speech == len(speech) and kinds.count("text") == int(n_speech * 1.5) == len(mixer) - n_speech
    assert kinds[:5] == ["speech", "text", "speech", "text", "text"]
    # text cycles through its own epochs when it runs out
    text_batches = [b for k, b in plan if k == "text"]
    assert len(text_batches) > len(text.epoch_batches(0))
    # consume a few, save, resume in a fresh mixer
    it = iter(mixer)
    head = [next(it) for _ in range(7)]
    state = mixer.state_dict()
    speech2 = BucketBatchSampler(_durations(40), 12.0, seed=0)
    text2 = BucketBatchSampler([random.Random(i).randint(3, 30) for i in range(15)], 40, seed=1)
    mixer2 = BatchMixer(speech2, text2, text_ratio=1.5)
    mixer2.load_state_dict(state)
    assert head + list(mixer2) == plan
    # next epoch starts with a fresh pattern
    mixer2.set_epoch(1)
    assert [k for k, _ in mixer2.plan()][:2] == ["speech", "text"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="budget"):
        BucketBatchSampler([1.0], 0)
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler([1.0], 5.0, rank=2, world_size=2)
