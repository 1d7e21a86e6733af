"""Samplers that make training resumable mid-epoch and evaluation count every example exactly once.

Training order is a function of ``(seed, epoch)`` only, so a resumed run sees the same batches as an
uninterrupted one; after a mid-epoch restart the sampler skips the batches the checkpoint already trained on
(see ``TokenizedDataModule.state_dict``). Both subclass ``DistributedSampler`` so that Lightning leaves them
in place under DDP instead of wrapping them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler


class ResumableShuffleSampler(DistributedSampler):
    """Shuffles per ``(seed, epoch)``, shards across ranks, and can skip the start of one epoch.

    Args:
        dataset: the training dataset.
        num_replicas: the world size.
        rank: this process's global rank.
        seed: the shuffling seed.
        shuffle: shuffle (training) or keep the dataset order.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self._skip: tuple[int, int] | None = None  # (epoch, samples to skip)

    def skip_in_epoch(self, epoch: int, num_samples: int) -> None:
        """On the next pass over ``epoch``, leave out its first ``num_samples`` samples (this rank's count)."""
        self._skip = (epoch, num_samples) if num_samples > 0 else None

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._skip is not None:
            epoch, count = self._skip
            self._skip = None
            if epoch == self.epoch:
                indices = indices[count:]
        return iter(indices)


class EvalShardSampler(DistributedSampler):
    """Evaluation order, sharded across ranks without the padding that would count examples twice.

    Ranks may get one example more or less than each other; evaluation needs no step-wise collectives, and
    metric states are reduced once at the end.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def generator_for(seed: int) -> torch.Generator:
    """A CPU generator seeded for reproducible sub-sampling."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
