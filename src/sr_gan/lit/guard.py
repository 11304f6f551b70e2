"""A guard against non-finite losses that costs no host sync per batch.

Every batch, the loss terms are checked for NaN/Inf on the device, and the streak of bad batches,
the first bad batch and its bad terms are kept in device tensors. Steps with a non-finite loss
are skipped on the device where the optimizer can do that (torch's fused Adam / AdamW / SGD read a
``found_inf`` flag, the mechanism of ``torch.amp.GradScaler``; ``optim.*.fused=true``), and by
the GradScaler itself under ``trainer.precision=16-mixed`` (its overflows are such batches). The
default for-each Adam cannot skip without a host sync: there the first bad batch already spoils
the weights. The streak is read on the host only at `check` (every logging interval and before
each validation), which stops the run with a message naming the batch and the loss terms when it
reaches ``patience`` batches, or at once when the steps could not be skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from sr_gan.errors import UserError

# the logged names (train/<term>) that are checked; a gradient norm is NaN/Inf iff a gradient is
TERMS = ("l_g_pix", "l_g_percep", "l_g_gan", "grad_norm_g", "l_d_real", "l_d_fake", "grad_norm_d")
_NEVER = 2**62  # above any batch index (`NonFiniteGuard.record`)


class NonFiniteLossError(UserError):
    """Training produced non-finite losses for too long: the run diverged."""


def can_skip_on_device(optimizer: Optimizer) -> bool:
    """True for torch optimizers that honour a ``found_inf`` flag (fused Adam, AdamW, SGD, ...)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False) and optimizer.defaults.get("fused"))


def flag_if_not_finite(optimizer: Optimizer, norm: Tensor) -> None:
    """Make the fused kernels of `optimizer` (one for which `can_skip_on_device`) skip its step on
    the device when ``norm`` (of its gradients) is not finite: torch's ``found_inf`` flag, which
    ``GradScaler`` sets the same way. Set inside the step, before its kernels run (Lightning's
    ``on_before_optimizer_step``); `clear_flag` once the step is over."""
    optimizer.found_inf = (~norm.isfinite()).float()


def clear_flag(optimizer: Optimizer) -> None:
    """Remove `flag_if_not_finite`'s flag (if set): the next step is judged on its own norm."""
    vars(optimizer).pop("found_inf", None)


class NonFiniteGuard(nn.Module):
    """Device-side record of non-finite loss terms; `check` stops a diverged run (module docstring).

    Args:
        patience: bad batches in a row tolerated while their steps are skipped.
    """

    def __init__(self, patience: int) -> None:
        super().__init__()
        if patience < 1:
            raise UserError(f"module.nonfinite_patience={patience} must be >= 1 (bad batches in a row)")
        self.patience = patience
        self.skipping = True  # whether every optimizer in use can skip a step on the device
        self.register_buffer("streak", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("first_batch", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("first_terms", torch.zeros(len(TERMS), dtype=torch.bool), persistent=False)

    def update(self, terms: dict[str, Tensor], batch: int) -> None:
        """Record this batch's terms (keys from `TERMS`; absent terms count as finite)."""
        zero = self.first_terms.new_zeros((), dtype=torch.float)
        values = torch.stack([terms[name].detach().float() if name in terms else zero for name in TERMS])
        bad = ~values.isfinite()  # (len(TERMS),)
        any_bad = bad.any()
        starts = any_bad & (self.streak == 0)
        self.first_batch.copy_(torch.where(starts, batch, self.first_batch))
        self.first_terms.copy_(torch.where(starts, bad, self.first_terms))
        self.streak.copy_(torch.where(any_bad, self.streak + 1, 0))

    def record(self) -> Tensor:
        """The record as one tensor whose maximum over DDP ranks is the ranks' worst record: the
        longest streak, then per term ``_NEVER - first batch`` where the term was bad in its streak's
        first batch (0 elsewhere), so that the maximum keeps the earliest first batch of any rank."""
        firsts = torch.where(self.first_terms & (self.streak > 0), _NEVER - self.first_batch, 0)
        return torch.cat([self.streak[None], firsts])  # (1 + len(TERMS),) int64

    def check(self, hint: str, over_ranks: Callable[[Tensor], Tensor] | None = None) -> None:
        """Host side (one sync): raise `NonFiniteLossError` if the run has diverged. ``hint`` ends the
        message (what to change). `over_ranks` (under DDP: an all-reduce with max) makes every rank
        judge the ranks' worst `record`: one rank's bad batch, a NaN loss of its own data, stops
        every rank at the same check (a rank that stopped alone left the others waiting for it in
        their next collective), and the message names the terms that went bad first on any rank
        (rank 0 named only the gradient norm that the all-reduce of the bad rank's gradients spoilt)."""
        record = self.record() if over_ranks is None else over_ranks(self.record())
        streak, *firsts = record.tolist()
        if streak == 0 or (self.skipping and streak < self.patience):
            return
        names = [f"train/{name}" for name, first in zip(TERMS, firsts, strict=True) if first == max(firsts)]
        skipped = f"skipped {streak} steps in a row (module.nonfinite_patience={self.patience})"
        raise NonFiniteLossError(
            f"training stopped: {', '.join(names)} became NaN/Inf at batch {_NEVER - max(firsts) + 1} and "
            f"{skipped if self.skipping else 'the weights are spoilt (for-each Adam cannot skip a step)'}; "
            f"no checkpoint holds non-finite weights. {hint}"
        )
