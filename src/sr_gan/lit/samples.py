"""Validation samples: ``bicubic | SR | HR`` strips as PNG, for eyes rather than metrics.

The strips are of the validation set's first images, whichever rank validated them: a run on 8 GPUs
saves the images a run on one saves, so that `python -m sr_gan.compare` can set them side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from sr_gan.errors import UserError
from sr_gan.imageio import write_image
from sr_gan.metrics import quantize


def comparison_strip(bicubic: Tensor, sr: Tensor, hr: Tensor) -> Tensor:
    """The three ``(3, H, W)`` images side by side, clamped and rounded: ``(3, H, 3W)`` uint8 on the CPU."""
    return torch.cat([quantize(bicubic), quantize(sr), quantize(hr)], dim=-1).to(torch.uint8).cpu()


def save_strip(path: Path, strip: Tensor) -> Path:
    """Write a `comparison_strip` to ``path`` as PNG (atomically). A write that fails (a full disk,
    after days of a run) stops the run in one line; torchvision's writer ignored the failure and
    left a truncated PNG."""
    try:
        write_image(path, strip.permute(1, 2, 0).numpy(), fmt="png")  # (H, 3W, 3)
    except OSError as err:
        raise UserError(
            f"cannot write validation sample {path}: {err.strerror or err}; free space (or choose paths.log_dir "
            "on another disk) and resume with ckpt_path=last; module.num_samples=0 saves no samples"
        ) from None
    return path


class SampleStrips:
    """The strips of the validation images whose index in the set is below `count`, held from their
    batch (`keep`) until the epoch ends, then gathered on rank 0 in the set's order (`take`).

    Validation shards the set over the ranks (image ``i`` on rank ``i mod W``), so the first batches
    of rank 0 alone are images 0, W, 2W, ...: other images than a single process's.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._held: list[tuple[int, str, Tensor]] = []  # (index in the set, name, strip)
        self._seen = 0  # images of this epoch on this rank: the index of a batch that has none

    def keep(self, batch: dict[str, Any], bicubic: Tensor, sr: Tensor) -> None:
        """Hold the strips of `batch`'s sample images: by ``batch["index"]`` and ``batch["name"]``
        (`sr_gan.data.ValImageDataset`), else by their position in this rank's epoch. A rank's
        stand-in image (``"weight"``: `sr_gan.data.datamodule.StandIn`) is another rank's."""
        size, first = sr.shape[0], self._seen
        self._seen += size
        if "weight" in batch:
            return
        indices = batch["index"].tolist() if "index" in batch else range(first, first + size)
        for i, index in enumerate(indices):
            if index < self.count:
                name = batch["name"][i] if "name" in batch else str(index)
                self._held.append((index, name, comparison_strip(bicubic[i], sr[i], batch["hr"][i])))

    def take(self, world_size: int) -> list[tuple[str, Tensor]]:
        """Every rank's held strips, ``(name, strip)`` by index, on rank 0 (empty on the others), and
        none held any more. Every rank calls it (a collective when ``world_size > 1``)."""
        held, self._held, self._seen = self._held, [], 0
        if world_size > 1:
            parts: list[Any] | None = [None] * world_size if dist.get_rank() == 0 else None
            dist.gather_object(held, parts, dst=0)
            held = [sample for part in parts or [] for sample in part]
        return [(name, strip) for _, name, strip in sorted(held, key=lambda sample: sample[0])]
