"""A training process takes the CPU threads its data workers leave (sr_gan.threads), logged and overridable."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sr_gan import threads
from sr_gan.errors import UserError
from sr_gan.threads import configure_cpu_threads, cpu_threads_for, local_processes, usable_cores


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without OMP_NUM_THREADS and leaves torch's thread count as it found it."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_applied", None)
    monkeypatch.setattr(threads, "_exported", "")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_cores_left_after_the_data_workers_are_shared_among_the_processes() -> None:
    assert cpu_threads_for(num_workers=8, cores=16) == 8
    assert cpu_threads_for(num_workers=4, processes_per_node=2, cores=16) == 4  # (16 - 2 x 4) // 2
    assert cpu_threads_for(num_workers=0, processes_per_node=8, cores=64) == 8
    assert cpu_threads_for(num_workers=2, cores=2) == 1  # never below one
    assert cpu_threads_for(num_workers=16, processes_per_node=4, cores=16) == 1


def test_a_container_cpu_quota_bounds_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", quota)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    quota.write_text("max 100000\n")
    assert usable_cores() == 64
    quota.write_text("150000 100000\n")  # docker --cpus=1.5
    assert usable_cores() == 2
    quota.unlink()  # no cgroup v2: the affinity decides
    assert usable_cores() == 64


def test_auto_sets_torch_and_omp_threads_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 6)
    with caplog.at_level(logging.INFO, logger="sr_gan.threads"):
        assert configure_cpu_threads("auto", num_workers=4) == 2
    assert torch.get_num_threads() == 2 and threads.os.environ["OMP_NUM_THREADS"] == "2"
    assert "torch CPU threads per training process: 2 (cpu_threads=auto: 6 cores, 4 data workers" in caplog.text
    # a second run in the same process (an in-process sweep) recomputes rather than keep its own value
    assert configure_cpu_threads("auto", num_workers=0) == 6


def test_a_number_forces_the_count_and_an_exported_omp_num_threads_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configure_cpu_threads(3, num_workers=64) == 3 and torch.get_num_threads() == 3
    assert threads.resolve_cpu_threads(3) == (3, "cpu_threads=3")  # the log line's reason
    assert threads.resolve_cpu_threads(None) == threads.resolve_cpu_threads("auto")  # null is auto
    monkeypatch.setattr(threads, "_applied", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's
    monkeypatch.setattr(threads, "usable_cores", lambda: 6)
    assert configure_cpu_threads("auto", num_workers=0) == 1
    # ... and for every later run of the process (the jobs of an in-process sweep; a forced count between)
    assert configure_cpu_threads(3) == 3
    assert configure_cpu_threads("auto", num_workers=0) == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(threads, "_applied", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # not a count: auto computes one
    assert configure_cpu_threads("auto", num_workers=2) == 4 and threads.os.environ["OMP_NUM_THREADS"] == "4"


@pytest.mark.parametrize("value", ["many", 0, -2, True, 1.5])
def test_a_bad_setting_names_the_key(value: object) -> None:
    with pytest.raises(UserError, match=r"^cpu_threads="):
        configure_cpu_threads(value)  # type: ignore[arg-type]


def test_processes_per_node_follow_the_trainer_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert local_processes({"devices": 1, "accelerator": "gpu"}) == 1
    assert local_processes({"devices": 2, "accelerator": "cpu"}) == 2  # trainer=ddp on CPU
    assert local_processes({"devices": "0,1,2", "accelerator": "gpu"}) == 3
    assert local_processes({"devices": [0, 1], "accelerator": "gpu"}) == 2
    assert local_processes({"devices": -1, "accelerator": "gpu"}) == 4  # every visible GPU
    assert local_processes({"devices": "-1", "accelerator": "gpu"}) == 4  # the same as a string
    assert local_processes({"devices": -1, "accelerator": "auto"}) == 4  # auto: the GPUs when there are some
    assert local_processes({"devices": "auto", "accelerator": "gpu"}) == 4  # Lightning's default devices
    assert local_processes({"devices": "auto"}) == 4
    assert local_processes({"devices": "auto", "accelerator": "cpu"}) == 1


def test_train_configures_the_threads_before_building_the_data(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    import sr_gan.train

    class Stop(Exception):
        pass

    seen = {}

    def configure(setting: object, *, num_workers: int, processes_per_node: int) -> int:
        seen.update(setting=setting, num_workers=num_workers, processes=processes_per_node)
        raise Stop

    monkeypatch.setattr(sr_gan.train, "configure_cpu_threads", configure)
    monkeypatch.setattr(sr_gan.train, "instantiate", lambda *a, **k: pytest.fail("built something first"))
    with pytest.raises(Stop):
        sr_gan.train.train(make_cfg("cpu_threads=1", "data.num_workers=3"))
    assert seen == {"setting": 1, "num_workers": 3, "processes": 1}
