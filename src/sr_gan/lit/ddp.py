"""Data-parallel training of a generator/discriminator pair: one DDP wrapper per player.

Lightning's ``DDPStrategy`` wraps the whole LightningModule in one ``DistributedDataParallel``. A
GAN batch runs two backward passes (G's with D frozen, D's on the detached SR), each leaving the
other player's parameters without gradients, so that wrapper needs ``find_unused_parameters=True``
and then, in every backward: walks the autograd graph, all-reduces every bucket, the other
player's too (G's and D's gradients both cross the wire twice a batch), and copies its map of used
parameters back to the host (a blocking copy: a host sync; ``finalize_bucket_dense`` in torch's
``reducer.cpp``). `PlayerDDPStrategy` instead wraps G and D in a DDP each, with
``find_unused_parameters=False``: G's gradients are averaged in G's backward and D's in D's, once.

The module's training step calls the wrappers through `SRGANModule.distribute`; they are not
registered as submodules, so state dicts and checkpoints keep the networks' own keys.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any

from lightning.pytorch.overrides.distributed import _sync_module_states  # what DDPStrategy itself uses
from lightning.pytorch.strategies import DDPStrategy
from torch.nn.parallel import DistributedDataParallel

from sr_gan.errors import UserError
from sr_gan.lit.module import SRGANModule

_DDP_OPTIONS = inspect.signature(DistributedDataParallel).parameters
# Lightning's own, and torch's for gloo: a rank stuck outside any collective (its data loader, a hung
# file system) holds every other rank that long before the run stops
DEFAULT_TIMEOUT_S = 1800.0
LONGEST_TIMEOUT_S = float(timedelta.max.days * 86400)  # a longer one (inf) failed in timedelta, a traceback


class PlayerDDPStrategy(DDPStrategy):
    """Lightning's DDP with one ``DistributedDataParallel`` per trained network of an `SRGANModule`
    (module docstring); every other DDP option (buckets, backend) is Lightning's.

    Defaults (``trainer=ddp`` states them too): no ``find_unused_parameters`` (each backward uses every
    parameter of its wrapper) and no ``broadcast_buffers`` (BatchNorm's buffers broadcast in D's
    forward passes broke the relativistic D step in place; every rank starts from rank 0's).
    ``timeout_s``: how long a rank waits in a collective for the others before the run stops (the
    process group's timeout; Lightning's ``timeout`` takes a timedelta, which a config cannot give)."""

    def __init__(
        self,
        *,
        find_unused_parameters: bool = False,
        broadcast_buffers: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        if not 0 < timeout_s <= LONGEST_TIMEOUT_S:
            raise UserError(
                f"trainer.strategy.timeout_s={timeout_s} must be > 0 and at most {LONGEST_TIMEOUT_S:g} (seconds a "
                "rank waits for the others: no wait is endless)"
            )
        super().__init__(
            find_unused_parameters=find_unused_parameters,
            broadcast_buffers=broadcast_buffers,
            timeout=timedelta(seconds=timeout_s),
            **kwargs,
        )
        self.timeout_s = timeout_s

    def configure_ddp(self) -> None:
        module = self.lightning_module
        if not isinstance(module, SRGANModule):
            raise UserError(
                f"trainer.strategy={type(self).__name__} trains an SRGANModule's networks; "
                f"{type(module).__name__} is not one: use lightning's DDPStrategy"
            )
        if self._ddp_comm_hook is not None:
            raise UserError("trainer.strategy.ddp_comm_hook is not supported by PlayerDDPStrategy: leave it unset")
        # Every parameter and buffer from rank 0, the EMA and the perceptual network's too (one wrapper
        # around the module synced its parameters; buffers too unless broadcast_buffers=false)
        _sync_module_states(module)
        if "broadcast_buffers" in self._ddp_kwargs and "forward_sync_buffers" in _DDP_OPTIONS:
            # Newer torch (2.14 here) deprecates the name, with a warning per wrapper. The new option
            # also syncs buffers when wrapping, which changes nothing after the sync above.
            self._ddp_kwargs["forward_sync_buffers"] = self._ddp_kwargs.pop("broadcast_buffers")
        module.distribute(self._setup_model)

    @contextmanager
    def block_backward_sync(self) -> Generator[None, None, None]:
        """Gradients stay local on every player (accumulation's first micro-batches)."""
        with ExitStack() as stack:
            for replica in self.lightning_module.replicas.values():
                stack.enter_context(replica.no_sync())
            yield

    def teardown(self) -> None:
        if isinstance(self.lightning_module, SRGANModule):
            self.lightning_module.distribute(None)
        super().teardown()
