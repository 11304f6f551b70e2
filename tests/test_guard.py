"""A bad run stops loudly: NaN/Inf losses are caught without a host sync per batch."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch

from sr_gan.lit import SRGANModule
from sr_gan.lit.guard import (
    NonFiniteGuard,
    NonFiniteLossError,
    can_skip_on_device,
    clear_flag,
    flag_if_not_finite,
)
from sr_gan.train import build_module, train


class NaNOnCalls(torch.nn.L1Loss):
    """L1, except NaN on the given (0-based) calls: a transient bad batch."""

    def __init__(self, bad_calls: list[int]) -> None:
        super().__init__()
        self.bad_calls, self.calls = set(bad_calls), 0

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        loss = super().forward(sr, hr)
        self.calls += 1
        return loss * float("nan") if self.calls - 1 in self.bad_calls else loss


def test_a_diverging_run_stops_naming_the_batch_and_term_and_saves_no_nan(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "optim.generator.lr=1e8", "trainer.max_steps=40", "trainer.log_every_n_steps=5", "trainer.val_check_interval=10"
    )
    with pytest.raises(NonFiniteLossError, match=r"train/l_g_pix.* at batch \d+ .*optim\.generator\.lr=1e\+08") as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_fused_adam_skips_bad_steps_on_the_device_and_training_goes_on(make_cfg) -> None:
    from tests.test_train import _fit

    cfg = make_cfg("+optim.generator.fused=true", "trainer.max_steps=6", "trainer.log_every_n_steps=2")
    before = {}

    class Spy(SRGANModule):
        def generator_step(self, sr, hr, opt_g, **kwargs):  # noqa: ANN001, ANN202
            before[self.batches_done] = [p.detach().clone() for p in self.generator.parameters()]
            return super().generator_step(sr, hr, opt_g, **kwargs)

    bad_batches = NaNOnCalls([2, 3])  # batches 3 and 4
    module, _ = _fit(cfg, Spy, prepare=lambda m: setattr(m, "pixel_loss", bad_batches))
    weights = [p.detach() for p in module.generator.parameters()]
    assert all(w.isfinite().all() for w in weights)
    assert all(torch.equal(a, b) for a, b in zip(before[2], before[3]))  # batch 3 skipped: unchanged
    assert all(torch.equal(a, b) for a, b in zip(before[3], before[4]))  # batch 4 too
    assert any(not torch.equal(a, b) for a, b in zip(before[4], before[5]))  # then training resumes
    assert module.batches_done == 6 and int(module.guard.streak) == 0


def test_the_guard_stops_after_patience_bad_batches_in_a_row() -> None:
    guard = NonFiniteGuard(patience=3)
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    guard.update({"l_g_pix": one}, batch=0)
    guard.update({"l_g_pix": one, "l_d_fake": nan}, batch=1)
    guard.update({"l_g_pix": nan}, batch=2)
    guard.check("hint")  # 2 in a row: still skipping
    guard.update({"l_g_pix": one}, batch=3)  # a good batch ends the streak
    assert int(guard.streak) == 0
    for batch in (4, 5, 6):
        guard.update({"l_g_gan": nan, "grad_norm_g": torch.tensor(float("inf"))}, batch=batch)
    with pytest.raises(NonFiniteLossError, match=r"train/l_g_gan, train/grad_norm_g became NaN/Inf at batch 5 .*hint"):
        guard.check("hint")
    guard.skipping = False  # an optimizer that cannot skip: the first bad batch stops the run
    guard.update({"l_g_pix": one}, batch=7)
    guard.update({"l_d_real": nan}, batch=8)
    with pytest.raises(NonFiniteLossError, match=r"train/l_d_real became NaN/Inf at batch 9 .*spoilt"):
        guard.check("hint")


def test_every_rank_judges_the_worst_record_of_the_ranks() -> None:
    """Under DDP (`over_ranks`: the max of the ranks' records) a NaN loss of one rank's own batch,
    before the all-reduce of the next micro-batch's gradients spoilt every rank's norm, stops both
    ranks at the same check, each naming that loss and its batch (rank 0 alone: 1 bad batch, within
    patience; then the norm only)."""
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    ranks = [NonFiniteGuard(patience=2), NonFiniteGuard(patience=2)]
    ranks[0].update({"l_g_pix": one}, batch=2)
    ranks[1].update({"l_g_pix": nan}, batch=2)  # its micro-batch's gradients stay local (no_sync)
    for guard in ranks:
        guard.update({"l_g_pix": one, "grad_norm_g": nan}, batch=3)  # the all-reduced gradients
    ranks[0].check("hint")  # alone: 1 bad batch, skipped
    worst = functools.reduce(torch.maximum, [guard.record() for guard in ranks])
    for guard in ranks:
        with pytest.raises(NonFiniteLossError, match=r"stopped: train/l_g_pix became NaN/Inf at batch 3 and skipped 2"):
            guard.check("hint", over_ranks=lambda record: worst)


def test_a_flagged_step_is_skipped_by_the_fused_kernels() -> None:
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1, fused=True)
    assert can_skip_on_device(optimizer) and not can_skip_on_device(torch.optim.Adam(net.parameters()))
    net(torch.ones(1, 3)).sum().backward()
    start = [p.detach().clone() for p in net.parameters()]
    flag_if_not_finite(optimizer, torch.tensor(float("nan")))
    optimizer.step()
    clear_flag(optimizer)
    assert all(torch.equal(a, p) for a, p in zip(start, net.parameters())) and not hasattr(optimizer, "found_inf")
    flag_if_not_finite(optimizer, torch.tensor(2.0))
    optimizer.step()
    assert all(not torch.equal(a, p) for a, p in zip(start, net.parameters()))


def test_loss_scale_overflows_are_skipped_steps_not_a_diverged_run(tmp_path: Path) -> None:
    """16-mixed starts with a loss scale too large on purpose and halves it on each overflow (NaN/Inf
    gradients, whose step the GradScaler skips): up to `nonfinite_patience` of them in a row are
    tolerated, as skipped steps; more stop the run. Before the fix the first overflow stopped every
    16-mixed run ('the weights are spoilt'), though no step had been taken."""
    from tests.test_gan_step import GradNorms, PlayersAtBatchStart, fit, fixed_batch, loss_scaled, make_module, params

    module, _, _ = make_module()
    norms, players = GradNorms(), PlayersAtBatchStart()
    fit(module, fixed_batch(), tmp_path, batches=5, callbacks=[norms, players], plugins=[loss_scaled(2.0**20)])
    overflowed = [not math.isfinite(batch["grad_norm_g"]) for batch in norms.batches]
    assert overflowed == [True, True, True, False, False]  # 2^20 -> 2^17: G's gradients fit in fp16
    g_at = [params(g) for g, _ in players.players] + [params(module.generator)]
    assert all(torch.equal(a, b) for a, b in zip(g_at[0], g_at[3], strict=True))  # three steps skipped
    assert not any(torch.equal(a, b) for a, b in zip(g_at[3], g_at[4], strict=True))  # then G trains

    module, _, _ = make_module(nonfinite_patience=2)
    with pytest.raises(NonFiniteLossError, match=r"train/grad_norm_g.* at batch 1 and skipped 2 steps in a row"):
        fit(module, fixed_batch(), tmp_path, batches=5, plugins=[loss_scaled(2.0**20)])


def test_gradient_clipping_bounds_each_players_step(make_cfg) -> None:
    from tests.test_train import _fit

    cfg = make_cfg("loss=ragan", "optim.clip_grad_norm.generator=1e-4", "optim.clip_grad_norm.discriminator=3e-4")
    module = build_module(cfg)
    assert module.clip_grad_norm == {"g": 1e-4, "d": 3e-4}  # each player its own: a swap shows
    norms = []

    class Spy(SRGANModule):
        def _step(self, optimizer, player):  # noqa: ANN001, ANN202
            norm = super()._step(optimizer, player)
            network = self.generator if player == "g" else self.discriminator
            clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in network.parameters()]))
            norms.append((player, float(norm), float(clipped)))
            return norm

    _fit(cfg, Spy)
    assert [n[0] for n in norms] == ["g", "d", "g", "d"]
    limits = {"g": 1e-4, "d": 3e-4}
    assert all(raw > limits[p] and clipped == pytest.approx(limits[p], rel=1e-3) for p, raw, clipped in norms)


def test_a_non_finite_gradient_with_finite_losses_stops_the_run(tmp_path: Path) -> None:
    """The guard watches D's gradient norm too: D's losses finite, one of its gradients Inf (plain SGD
    cannot skip the step), the run stops naming train/grad_norm_d."""
    from tests.test_gan_step import fit, fixed_batch, make_module

    module, _, _ = make_module()
    next(module.discriminator.parameters()).register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"train/grad_norm_d became NaN/Inf at batch 1"):
        fit(module, fixed_batch(), tmp_path)


def test_under_accumulation_the_message_names_the_loader_batch(tmp_path: Path) -> None:
    """``accumulate_batches=2``: a NaN pixel loss in loader batch 3 (the first half of iteration 2)
    is reported as batch 3, the count ``trainer.max_steps`` x ``accumulate_batches`` and the
    logs use, not as iteration 2."""
    from tests.test_gan_step import fit, fixed_batch, make_module

    module, _, _ = make_module(pixel_loss=NaNOnCalls([2]), accumulate_batches=2)
    with pytest.raises(NonFiniteLossError, match=r"train/l_g_pix became NaN/Inf at batch 3 "):
        fit(module, fixed_batch(2), tmp_path, batches=4)


def test_one_player_that_cannot_skip_stops_the_run_at_its_first_bad_step(tmp_path: Path) -> None:
    """G's fused Adam can skip a bad step on the device, D's SGD cannot: an Inf in D's gradient has
    spoilt D's weights, so the run stops at once instead of tolerating `nonfinite_patience` batches."""
    from tests.test_gan_step import fit, fixed_batch, make_module

    fused = functools.partial(torch.optim.Adam, lr=1e-3, fused=True)
    module, _, _ = make_module(optimizer_g=fused, nonfinite_patience=5)
    next(module.discriminator.parameters()).register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"train/grad_norm_d became NaN/Inf at batch 1 and the weights"):
        fit(module, fixed_batch(), tmp_path)


def test_a_fused_optimizer_skips_a_step_whose_gradient_is_inf_not_nan(tmp_path: Path) -> None:
    """An overflow gives +Inf gradients (their norm Inf, not NaN): fused Adam skips that step too,
    leaving G's weights finite and as they were, and G trains again on the next batch."""
    from tests.test_gan_step import PlayersAtBatchStart, fit, fixed_batch, make_module, params

    fused = functools.partial(torch.optim.Adam, lr=1e-3, fused=True)
    module, _, _ = make_module(optimizer_g=fused, optimizer_d=fused)
    calls = []

    def inf_on_batch_2(grad: torch.Tensor) -> torch.Tensor:
        calls.append(None)
        return torch.full_like(grad, float("inf")) if len(calls) == 2 else grad

    next(module.generator.parameters()).register_hook(inf_on_batch_2)
    players = PlayersAtBatchStart()
    fit(module, fixed_batch(), tmp_path, batches=3, callbacks=[players])
    g_at = [params(g) for g, _ in players.players] + [params(module.generator)]
    assert all(torch.equal(a, b) for a, b in zip(g_at[1], g_at[2], strict=True))  # batch 2 skipped
    assert not any(torch.equal(a, b) for a, b in zip(g_at[2], g_at[3], strict=True))  # batch 3 trained
    assert all(w.isfinite().all() for w in g_at[3])


def test_the_message_names_the_terms_of_the_first_bad_batch_of_the_streak() -> None:
    """A NaN spreads: the streak's later batches have more bad terms than its first. The message names
    those of the first bad batch (where it started), with that batch's number."""
    guard = NonFiniteGuard(patience=2)
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    guard.update({"l_d_fake": nan, "l_g_pix": one}, batch=3)
    guard.update({"l_d_fake": nan, "l_g_pix": nan, "grad_norm_g": nan}, batch=4)
    with pytest.raises(NonFiniteLossError, match=r"stopped: train/l_d_fake became NaN/Inf at batch 4 and"):
        guard.check("hint")


def test_a_streak_that_ended_is_no_part_of_the_record_over_ranks() -> None:
    """A rank whose bad batch was followed by good ones has no streak: the terms it kept from it are
    left out of its record, so the ranks' worst names the streak running now (rank 1's), not that
    rank's older batch."""
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    ranks = [NonFiniteGuard(patience=2), NonFiniteGuard(patience=2)]
    ranks[0].update({"l_d_fake": nan}, batch=0)  # skipped, then training went on
    ranks[0].update({"l_d_fake": one}, batch=1)
    for batch in (2, 3):
        ranks[0].update({"l_d_fake": one}, batch=batch)
        ranks[1].update({"l_g_pix": nan}, batch=batch)
    worst = functools.reduce(torch.maximum, [guard.record() for guard in ranks])
    for guard in ranks:
        with pytest.raises(NonFiniteLossError, match=r"stopped: train/l_g_pix became NaN/Inf at batch 3 and skipped 2"):
            guard.check("hint", over_ranks=lambda record: worst)
