"""Training callbacks that are not about budgets or checkpoints (those: test_train.py, test_checkpoints.py)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from sr_gan.callbacks import BatchBudget, SpeedMonitor, gpu_peak_gib
from tests.helpers import LoggedRows


class _Slow(Dataset):
    """`length` items, each taking `delay` seconds to load."""

    def __init__(self, length: int, delay: float) -> None:
        self.length, self.delay = length, delay

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(self.delay)
        return torch.ones(4)


class _Tiny(L.LightningModule):
    def __init__(self, train_delay: float, val_delay: float) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.train_delay, self.val_delay = train_delay, val_delay

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch).square().mean()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.layer(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Slow(8, self.train_delay), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Slow(1, self.val_delay), batch_size=1)


def _logged(
    tmp_path: Path,
    *,
    train_delay: float = 0.0,
    val_delay: float = 0.0,
    every: int = 4,
    monitor: SpeedMonitor | None = None,
    budget: int = 8,
) -> list[tuple[int, dict[str, float]]]:
    """(batch index, values) as logged over 8 batches (or a smaller `budget`), every `every`, with
    one validation after batch 6 (inside the second interval of 4)."""
    recorder = LoggedRows()
    callbacks = [monitor or SpeedMonitor(), BatchBudget(budget)]  # the budget last, as sr_gan.train adds it
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=recorder, callbacks=callbacks,
        log_every_n_steps=every, val_check_interval=6, num_sanity_val_steps=0, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(_Tiny(train_delay, val_delay))
    return recorder.rows


def _speeds(tmp_path: Path, **options: Any) -> list[tuple[int, float, float]]:
    """(batch index, time/batches_per_s, time/data_share) as `_logged` logs them."""
    logged = [(step, m) for step, m in _logged(tmp_path, **options) if "time/data_share" in m]
    return [(step, m["time/batches_per_s"], m["time/data_share"]) for step, m in logged]


def test_speed_monitor_shows_a_slow_loader_as_data_time(tmp_path: Path) -> None:
    """Loading takes 0.2 s a batch against a step of milliseconds: most of the time is between
    batches, and each interval of 4 batches holds at least 3 loads (the fit's first batch and the
    one after the validation count their step only): at most 4 / 0.6 batches/s."""
    speeds = _speeds(tmp_path, train_delay=0.2, val_delay=0.0)
    assert [step for step, _, _ in speeds] == [3, 7]  # Lightning's logging steps (log_every_n_steps=4)
    for _, rate, data_share in speeds:
        assert rate <= 4 / 0.6 and data_share > 0.5


def test_speed_monitor_logs_at_the_budgets_last_batch_too(tmp_path: Path) -> None:
    """Lightning writes the logged values at the batch a run stops at: the speed of the batches
    since the last interval, not the interval's figure again."""
    speeds = _speeds(tmp_path, train_delay=0.0, val_delay=0.0, budget=6)
    assert [step for step, _, _ in speeds] == [3, 5] and speeds[0][1] != speeds[1][1]


def test_speed_monitor_leaves_validation_out(tmp_path: Path) -> None:
    """A validation of 1 s inside the second interval: counted, 4 batches could not exceed 4/s."""
    (_, first, _), (_, second, _) = _speeds(tmp_path, train_delay=0.0, val_delay=1.0)
    assert second > 4.0 and first > 4.0


def test_speed_monitor_logs_every_batch_fresh_around_a_validation(tmp_path: Path) -> None:
    """Logging every batch: the batch after the validation counts its own step, so each logged
    value is its batch's (Lightning would re-write the previous values at a step that logs none)."""
    speeds = _speeds(tmp_path, train_delay=0.0, val_delay=0.0, every=1)
    assert [step for step, _, _ in speeds] == list(range(8))
    assert len({rate for _, rate, _ in speeds}) == 8


def test_speed_monitor_reused_for_a_second_fit_leaves_the_pause_between_out(tmp_path: Path) -> None:
    monitor = SpeedMonitor()
    _speeds(tmp_path, train_delay=0.0, val_delay=0.0, monitor=monitor)
    time.sleep(1.0)  # between two fits: not training time
    (_, first, _), _ = _speeds(tmp_path, train_delay=0.0, val_delay=0.0, monitor=monitor)
    assert first > 4.0  # counted, one second alone would hold 4 batches under 4/s


def test_the_gpu_peak_is_the_allocators_reserved_memory_and_none_off_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """What nvidia-smi shows at its peak (reserved, not the tensors' allocated bytes), in GiB."""
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 2**30)
    assert gpu_peak_gib(torch.device("cuda", 0)) == 3.0
    assert gpu_peak_gib(torch.device("cpu")) is None


def test_speed_monitor_logs_the_gpu_peak_where_there_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the logging interval beside the speed; a CPU run logs no memory key at all."""
    assert all("memory/gpu_peak_gib" not in m for _, m in _logged(tmp_path / "cpu"))
    monkeypatch.setattr("sr_gan.callbacks.gpu_peak_gib", lambda device: 1.25)  # as on a GPU (none here)
    logged = _logged(tmp_path / "gpu")
    assert [(step, m["memory/gpu_peak_gib"]) for step, m in logged if "time/data_share" in m] == [(3, 1.25), (7, 1.25)]


def test_a_budget_below_the_checkpoints_batches_says_nothing_is_trained(caplog: pytest.LogCaptureFixture) -> None:
    """Resuming a 6-batch checkpoint with trainer.max_steps=4 (meaning "4 more") trains nothing: say
    so, naming both numbers; a finished run relaunched with its own budget (a requeue) stays quiet."""

    def trainer(done: int) -> Any:
        total = SimpleNamespace(completed=done, processed=done)
        progress = SimpleNamespace(total=total)
        loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
        return SimpleNamespace(fit_loop=loop, should_stop=False)

    with caplog.at_level("WARNING", logger="sr_gan.callbacks"):
        spent = trainer(4)
        BatchBudget(4).on_train_start(spent)
        assert spent.should_stop and not caplog.records
        beyond = trainer(6)
        BatchBudget(4).on_train_start(beyond)
    assert beyond.should_stop
    (record,) = caplog.records
    assert "trained 6 batches, more than this run's budget of 4" in record.getMessage()
    assert "trainer.max_steps" in record.getMessage()
