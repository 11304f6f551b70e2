"""The training step makes no host sync: nothing reads a device value back to Python per batch.

On a GPU a read (``.item()``, ``float(t)``, ``bool(t)``, ``if t:``) blocks the host until the device
has caught up, so the next batch cannot be queued meanwhile. Every such read goes through
``aten._local_scalar_dense``; a dispatch mode counts them in a CPU run of the whole step (G, D,
losses, clipping, the non-finite guard, EMA, schedules, logging). Adam's step counters are CPU
tensors on every device, read on purpose by torch, and are allowed.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sr_gan.lit import SRGANModule
from tests.test_train import _fit


class CountHostReads(TorchDispatchMode):
    def __init__(self, allowed: set[int]) -> None:
        super().__init__()
        self.allowed, self.reads = allowed, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func is torch.ops.aten._local_scalar_dense.default and id(args[0]) not in self.allowed:
            self.reads.append(tuple(args[0].shape))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("overrides", [["loss=l1"], ["loss=ragan", "optim.clip_grad_norm.generator=1.0"]])
def test_the_training_step_reads_nothing_back(make_cfg, overrides: list[str]) -> None:
    reads: list[list[tuple[int, ...]]] = []

    class Checked(SRGANModule):
        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            if self.batches_done == 0:  # the first step creates the optimizers' states
                return super().training_step(batch, batch_idx)
            counters = {id(s["step"]) for o in self.trainer.optimizers for s in o.state.values() if "step" in s}
            with CountHostReads(counters) as mode:
                result = super().training_step(batch, batch_idx)
            reads.append(mode.reads)
            return result

    cfg = make_cfg(*overrides, "trainer.max_steps=3", "trainer.log_every_n_steps=1000")
    _fit(cfg, Checked)
    assert reads == [[], []]


def test_the_count_sees_a_read() -> None:
    with CountHostReads(set()) as mode:
        float(torch.ones(2).sum())
    assert mode.reads == [()]
