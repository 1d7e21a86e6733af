"""Training order depends only on (seed, epoch); a resumed epoch skips what was trained; eval never pads."""

from __future__ import annotations

from data_modules.base import EvalShardSampler, ResumableShuffleSampler


def test_order_depends_only_on_seed_and_epoch():
    a, b = ResumableShuffleSampler(range(20), seed=7), ResumableShuffleSampler(range(20), seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) != list(range(20))
    b.set_epoch(4)
    assert list(a) != list(b)


def test_skip_applies_once_and_only_to_its_epoch():
    full = ResumableShuffleSampler(range(20), seed=1)
    full.set_epoch(2)
    expected = list(full)
    resumed = ResumableShuffleSampler(range(20), seed=1)
    resumed.skip_in_epoch(2, 8)
    resumed.set_epoch(2)
    assert list(resumed) == expected[8:]
    assert list(resumed) == expected  # the next pass is whole again
    other = ResumableShuffleSampler(range(20), seed=1)
    other.skip_in_epoch(1, 8)
    other.set_epoch(2)
    assert list(other) == expected


def test_ranks_partition_the_training_data():
    shards = [list(ResumableShuffleSampler(range(10), num_replicas=2, rank=r, seed=0)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))


def test_eval_shards_cover_every_example_exactly_once():
    shards = [list(EvalShardSampler(range(7), num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(7))
    assert [len(EvalShardSampler(range(7), 3, r)) for r in range(3)] == [3, 2, 2]
