"""The lines a run ends with: its folder, its numbers and the next commands, on the right checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from sr_gan.run_summary import RunRecord, summary


@pytest.mark.parametrize(("gan", "expected"), [(False, "best.ckpt"), (True, "last.ckpt")])
def test_the_next_commands_take_the_result_checkpoint(tmp_path: Path, gan: bool, expected: str) -> None:
    """A PSNR stage's result is its best checkpoint by val/psnr; a GAN stage's is its last (both papers)."""
    (tmp_path / "checkpoints").mkdir()
    for name in ("best.ckpt", "last.ckpt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"x")
    record = RunRecord(folder=tmp_path, status="done", batches=10, wall_s=1.0)
    lines = summary(record, best_psnr=28.5, last={"val/psnr": 28.0, "val/psnr_bicubic": 27.0}, gan=gan)
    assert lines[1] == "val/psnr: best 28.50 dB, last 28.00 dB, bicubic 27.00 dB"
    commands = [line for line in lines if "python -m sr_gan.evaluate" in line or "sr_gan.upscale" in line]
    assert len(commands) == 2 and all(f"ckpt={tmp_path / 'checkpoints' / expected} " in c for c in commands)
