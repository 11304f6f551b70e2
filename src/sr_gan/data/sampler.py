"""Samplers: an endless, seeded, resumable stream of training patches, and unpadded sharding.

Training reads patches from one endless stream of positions 0, 1, 2, ... Position ``p`` takes
image ``perm_e[p mod N]`` of a random permutation drawn anew for every pass ``e = p // N`` over
the N images, and a crop seed mixed from ``(seed, p)``: the crop corner and the flips of that
patch are drawn from it (`TrainPatchDataset`). Every patch is therefore a function of the seed
and its position alone, whatever the number of workers, their RNG, or where a run was resumed:
a run resumed at position ``p`` (what `SRDataModule.state_dict` saves) sees exactly the patches
that the uninterrupted run saw. Budgets count batches, so the stream has no epochs.

With ``world_size`` ranks (DDP), rank ``r`` takes positions ``r, r + W, r + 2W, ...``: together
the ranks read the single-process stream, each batch spread over them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([v % 2**63 for v in values]).generate_state(1, np.uint64)[0]) % 2**63


class PatchStream(Sampler[tuple[int, int]]):
    """Yields ``(image index, crop seed)`` forever, starting at stream position ``start``.

    Args:
        num_images: N, the images a pass over the data visits once each.
        seed: the stream's seed (``data.seed``).
        start: the first position of rank 0: the patches already consumed by all ranks.
        rank / world_size: this process's share of the stream (DDP).
    """

    def __init__(self, num_images: int, *, seed: int, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if num_images < 1:
            raise ValueError("PatchStream needs at least one image")
        self.num_images, self.seed, self.start = num_images, seed, start
        self.rank, self.world_size = rank, world_size

    def permutation(self, epoch: int) -> list[int]:
        """The image order of pass ``epoch`` over the data."""
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.num_images, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position, epoch, order = self.start + self.rank, -1, []
        while True:
            if position // self.num_images != epoch:
                epoch = position // self.num_images
                order = self.permutation(epoch)
            yield order[position % self.num_images], mix_seed(self.seed, epoch, position)
            position += self.world_size


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, ...`` of a data set: each item on exactly one rank, none padded.

    Lightning's DistributedSampler pads the last round with repeated items so that every rank has
    as many; for validation that counts padded images twice. Metrics reduced as sums and counts
    (torchmetrics' MeanMetric) need no equal shares.
    """

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
