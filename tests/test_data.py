"""Data pipeline: decoding, pairing, aligned crops, on-device augmentation, the datamodule, demo set."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import write_png

from sr_gan.data import (
    DataError,
    SRDataModule,
    TrainPatchDataset,
    ValImageDataset,
    demo,
    pair_images,
    paired_augment,
    read_image,
)
from sr_gan.data.sampler import PatchStream, ShardSampler
from sr_gan.errors import UserError
from sr_gan.ops import BicubicDegradation, imresize
from tests.helpers import file_size_limit, png_bomb

SCALE = 4


def save(image: torch.Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(image, str(path))
    return path


def unique_blocks(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """LR (3, h, w) with a distinct colour per pixel, and HR whose SCALE x SCALE blocks repeat it."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(256 * 256, generator=g)[: height * width].view(height, width)
    lr = torch.stack([index // 256, index % 256, (index * 7) % 256]).to(torch.uint8)  # (3, h, w)
    hr = lr.repeat_interleave(SCALE, -2).repeat_interleave(SCALE, -1)  # (3, h*s, w*s)
    return hr, lr


def upsample_nearest(lr: torch.Tensor) -> torch.Tensor:
    return lr.repeat_interleave(SCALE, -2).repeat_interleave(SCALE, -1)


@pytest.fixture
def div2k(tmp_path: Path) -> dict[str, Path]:
    """A DIV2K-style pair of folders: HR/0001.png ↔ X4/0001x4.png, two 48x40 images."""
    for i in (1, 2):
        hr, lr = unique_blocks(10, 12, seed=i)
        save(hr, tmp_path / "HR" / f"000{i}.png")
        save(lr, tmp_path / "X4" / f"000{i}x4.png")
    return {"hr": tmp_path / "HR", "lr": tmp_path / "X4"}


# --- decoding -----------------------------------------------------------------------------------


def test_read_image_converts_grey_16bit_alpha_and_bmp_to_rgb_uint8(tmp_path: Path) -> None:
    grey16 = (np.arange(48 * 32, dtype=np.uint16).reshape(32, 48) * 40).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    image = read_image(tmp_path / "grey16.png")
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 48)
    assert torch.equal(image[0], image[2])
    assert torch.equal(image[0], torch.from_numpy((grey16 >> 8).astype(np.uint8)))  # 8 high bits

    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.bmp")
    expected = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1)
    assert torch.equal(read_image(tmp_path / "rgba.png"), expected)
    assert torch.equal(read_image(tmp_path / "rgb.bmp"), expected)


def test_unreadable_image_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png") as info:
        read_image(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="broken.png") as info:  # the header read at start-up
        ValImageDataset(hr_dir=tmp_path, scale=SCALE)
    assert "\n" not in str(info.value)


# --- pairing and crops ---------------------------------------------------------------------------


def test_div2k_pairing_and_val_mod_crop(div2k: dict[str, Path], tmp_path: Path) -> None:
    val = ValImageDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE)
    assert [p.lr.name for p in val.pairs] == ["0001x4.png", "0002x4.png"]
    item = val[1]
    assert item["name"] == "0002" and item["hr"].shape == (3, 40, 48) and item["lr"].shape == (3, 10, 12)
    assert torch.equal(upsample_nearest(item["lr"]), item["hr"])

    # HR 50x43 is mod-cropped (top-left kept) to 48x40, which the same-stem LR 12x10 matches
    hr, lr = unique_blocks(10, 12)
    big = torch.zeros(3, 43, 50, dtype=torch.uint8)
    big[:, :40, :48] = hr
    save(big, tmp_path / "odd" / "HR" / "img.png")
    save(lr, tmp_path / "odd" / "LR" / "img.png")
    item = ValImageDataset(hr_dir=tmp_path / "odd" / "HR", lr_dir=tmp_path / "odd" / "LR", scale=SCALE)[0]
    assert torch.equal(item["hr"], hr)


def test_missing_lr_partner_names_the_file_and_folder(div2k: dict[str, Path]) -> None:
    (div2k["lr"] / "0002x4.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"0002\.png.*X4"):
        ValImageDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE)


def test_two_images_of_one_stem_are_refused_naming_both(div2k: dict[str, Path]) -> None:
    """`0002.png` and `0002.jpg` were both kept and shared the item name "0002" (a partner of one
    of them was taken silently); now both files are named at start-up, in HR and LR folders."""
    Image.open(div2k["hr"] / "0002.png").save(div2k["hr"] / "0002.jpg")
    for make in (ValImageDataset, lambda **kw: TrainPatchDataset(**kw, patch_size=16)):
        with pytest.raises(DataError, match=r"0002\.jpg and .*0002\.png; .*rename or remove one") as info:
            make(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE)
        assert "\n" not in str(info.value)
    (div2k["hr"] / "0002.jpg").unlink()
    Image.open(div2k["lr"] / "0001x4.png").save(div2k["lr"] / "0001x4.bmp")
    with pytest.raises(DataError, match=r"0001x4\.bmp and .*0001x4\.png"):
        ValImageDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE)


def test_size_mismatch_names_both_files_and_sizes(div2k: dict[str, Path]) -> None:
    save(torch.zeros(3, 10, 11, dtype=torch.uint8), div2k["lr"] / "0002x4.png")
    with pytest.raises(ValueError) as info:
        TrainPatchDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, patch_size=16)
    message = str(info.value)
    assert "0002x4.png" in message and "0002.png" in message and "11x10" in message and "12x10" in message
    assert "\n" not in message


def test_verify_decodes_the_lr_partner_too(div2k: dict[str, Path]) -> None:
    """An LR file cut after its header passes the header scan; `verify` decodes it and names it."""
    lr = div2k["lr"] / "0002x4.png"
    lr.write_bytes(lr.read_bytes()[: lr.stat().st_size // 2])
    assert len(ValImageDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE)) == 2  # the header is whole
    with pytest.raises(DataError, match=r"cannot read image .*0002x4\.png"):
        ValImageDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, verify=True)


def test_the_pixel_limit_given_applies_to_the_lr_headers_too(tmp_path: Path) -> None:
    """`max_pixels=None` (no limit) reaches the LR header too: an LR of 400 M pixels, above the default
    limit of 2**28, pairs with its HR (headers only: nothing is decoded)."""
    for side, size in (("HR", 40_000), ("LR", 20_000)):
        (tmp_path / side).mkdir()
        png_bomb(tmp_path / side / "a.png", size, size)
    (pair,) = pair_images(tmp_path / "HR", tmp_path / "LR", 2, max_pixels=None)
    assert (pair.height, pair.width, pair.lr.name) == (40_000, 40_000, "a.png")


def test_more_than_ten_unusable_images_show_ten_and_count_the_rest(tmp_path: Path) -> None:
    for i in range(12):
        (tmp_path / f"bad{i:02d}.png").write_bytes(b"garbage")
    with pytest.raises(DataError) as info:
        ValImageDataset(hr_dir=tmp_path, scale=SCALE)
    message = str(info.value)
    assert message.startswith(f"12 images of {tmp_path} cannot be used: ")
    assert message.count("cannot read image") == 10 and "bad09.png" in message and "bad10.png" not in message
    assert message.endswith("; and 2 more")


def test_patch_size_and_small_image_errors_name_the_keys(div2k: dict[str, Path]) -> None:
    with pytest.raises(DataError, match=r"data\.patch_size=18.*data\.scale=4"):
        TrainPatchDataset(hr_dir=div2k["hr"], scale=SCALE, patch_size=18)
    with pytest.raises(DataError, match=r"0001\.png.*data\.patch_size=48"):
        TrainPatchDataset(hr_dir=div2k["hr"], scale=SCALE, patch_size=48)


def stream_keys(num_images: int, count: int, seed: int = 0) -> list[tuple[int, int]]:
    return list(itertools.islice(PatchStream(num_images, seed=seed), count))


@pytest.mark.parametrize("cache", [False, True])
def test_train_crops_are_aligned_on_the_scale_grid(div2k: dict[str, Path], cache: bool) -> None:
    paired = TrainPatchDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, patch_size=16, cache=cache)
    assert len(paired) == 2
    corners = set()
    for key in stream_keys(len(paired), 60):
        item = paired[key]
        assert item["hr"].shape == (3, 16, 16) and item["lr"].shape == (3, 4, 4)
        assert item["hr"].dtype == torch.uint8 and item["lr"].dtype == torch.uint8
        # every LR colour is unique in the image, so equality pins the LR crop to the HR crop
        assert torch.equal(upsample_nearest(item["lr"]), item["hr"])
        corners.add(tuple(item["lr"][:, 0, 0].tolist()))
        again = paired[key]  # a patch is a function of its key alone
        assert all(torch.equal(again[k], item[k]) for k in item)
    assert len(corners) > 10  # random positions

    hr_only = TrainPatchDataset(hr_dir=div2k["hr"], scale=SCALE, patch_size=16)
    for key in stream_keys(len(hr_only), 20):
        item = hr_only[key]
        assert set(item) == {"hr", "flips", "seed"} and int(item["seed"]) == key[1]
        # an HR crop on the scale grid holds whole constant 4x4 blocks
        assert torch.equal(upsample_nearest(item["hr"][:, ::SCALE, ::SCALE]), item["hr"])


def test_cached_images_give_each_images_patches_without_reading_the_files(div2k: dict[str, Path]) -> None:
    """`cache` decodes every image at start-up: each key's patch is the one read from the files (of its
    own image), and no file is opened afterwards (the folders are emptied after start-up)."""
    keys = stream_keys(2, 16)
    files = TrainPatchDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, patch_size=16)
    expected = [files[key] for key in keys]
    assert {key[0] for key in keys} == {0, 1}
    cached = TrainPatchDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, patch_size=16, cache=True)
    for folder in div2k.values():
        for path in folder.iterdir():
            path.unlink()
    for key, item in zip(keys, expected, strict=True):
        assert all(torch.equal(cached[key][k], item[k]) for k in item)


def test_patch_flips_are_drawn_per_key_and_off_without_augment(div2k: dict[str, Path]) -> None:
    keys = stream_keys(2, 400)
    flips = torch.stack([TrainPatchDataset(hr_dir=div2k["hr"], scale=SCALE, patch_size=16)[k]["flips"] for k in keys])
    assert flips.dtype == torch.bool and flips.shape == (400, 3)
    assert (flips.float().mean(0) - 0.5).abs().max() < 0.1  # each transform for about half the patches
    plain = TrainPatchDataset(hr_dir=div2k["hr"], scale=SCALE, patch_size=16, augment=False)
    assert not any(plain[k]["flips"].any() for k in keys[:20])
    # rotate=False (Real-ESRGAN's use_rot: False): the same horizontal flips, never a vflip or transpose
    hflips = TrainPatchDataset(hr_dir=div2k["hr"], scale=SCALE, patch_size=16, rotate=False)
    hflip_only = torch.stack([hflips[k]["flips"] for k in keys])
    assert torch.equal(hflip_only[:, 0], flips[:, 0]) and not hflip_only[:, 1:].any()


# --- the patch stream ---------------------------------------------------------------------------


def test_patch_stream_visits_every_image_once_per_pass_and_resumes_exactly() -> None:
    keys = stream_keys(5, 30, seed=7)
    for start in range(0, 30, 5):
        assert sorted(index for index, _ in keys[start : start + 5]) == [0, 1, 2, 3, 4]
    assert [k[0] for k in keys[:5]] != [k[0] for k in keys[5:10]]  # a new order each pass
    assert len({seed for _, seed in keys}) == 30  # a distinct crop seed per position
    resumed = list(itertools.islice(PatchStream(5, seed=7, start=13), 17))
    assert resumed == keys[13:]
    assert stream_keys(5, 30, seed=8) != keys


def test_patch_stream_ranks_share_the_single_process_stream() -> None:
    single = stream_keys(7, 24, seed=3)
    ranks = [list(itertools.islice(PatchStream(7, seed=3, start=6, rank=r, world_size=3), 6)) for r in range(3)]
    assert [key for step in zip(*ranks) for key in step] == single[6:]


def test_shard_sampler_splits_without_padding() -> None:
    shards = [list(ShardSampler(5, rank=r, world_size=2)) for r in range(2)]
    assert shards == [[0, 2, 4], [1, 3]] and [len(ShardSampler(5, rank=r, world_size=2)) for r in range(2)] == [3, 2]


class _RankOf4:
    """What the datamodule reads of a Trainer: rank 3 of 4 (local rank 1: the second node's second
    process), `completed` training batches done, a module accumulating 1 batch an iteration."""

    global_rank, local_rank, world_size, is_global_zero = 3, 1, 4, False
    lightning_module = SimpleNamespace(accumulate_batches=1)

    def __init__(self, completed: int) -> None:
        self.fit_loop = SimpleNamespace(
            epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(total=SimpleNamespace()))
        )
        self.completed = completed

    @property
    def completed(self) -> int:
        return self.fit_loop.epoch_loop.batch_progress.total.completed

    @completed.setter
    def completed(self, value: int) -> None:
        self.fit_loop.epoch_loop.batch_progress.total.completed = value


def test_a_ranks_loaders_take_its_global_share_and_resume_where_all_ranks_stopped(folders: dict[str, Path]) -> None:
    """Rank 3 of 4 validates images 3, 7 of 9 (its global rank, not its rank on its node), trains on
    positions 3, 7, 11, ... of the one-process stream, and after 5 batches of 2 on 4 ranks saves the
    position 40, from which a resumed rank 3 reads position 43 onwards."""
    for i in range(9):
        save(smooth_image(20, 20, i), folders["val"].parent / "val9" / f"v{i}.png")
    dm = make_datamodule({**folders, "val": folders["val"].parent / "val9"}, batch_size=2, seed=5)
    dm.trainer = _RankOf4(completed=0)
    dm.setup("fit")
    assert list(dm.val_dataloader().sampler) == [3, 7]
    single = stream_keys(3, 60, seed=5)
    assert list(itertools.islice(dm.train_dataloader().sampler, 4)) == single[3:16:4]
    dm.trainer.completed = 5
    state = dm.state_dict()
    assert state == {"seed": 5, "stream_position": 5 * 2 * 4, "global_batch": [4, 2, 1]}
    resumed = make_datamodule(folders, batch_size=2)
    resumed.load_state_dict(state)
    resumed.trainer = _RankOf4(completed=5)
    resumed.setup("fit")
    assert list(itertools.islice(resumed.train_dataloader().sampler, 3)) == single[43:52:4]


@pytest.mark.parametrize(
    ("batch_size", "accumulate", "line"),
    [
        (2, 1, None),
        (1, 2, None),  # the same global batch, made another way
        (
            1,
            1,
            "resuming with a global batch of 4 (4 process(es) x data.batch_size=1 x optim.accumulate_batches=1) "
            "where the checkpoint's run had 8 (4 x 2 x 1): learning rates and milestones count iterations, which "
            "now see fewer images; keep 8 with data.batch_size or optim.accumulate_batches",
        ),
    ],
)
def test_resuming_with_another_global_batch_is_said_once(
    folders: dict[str, Path], batch_size: int, accumulate: int, line: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A run resumed on fewer GPUs, or with another data.batch_size: its iterations see another number
    of images than the schedule was set for. Said by rank 0 (here rank 3: silent), not refused."""
    dm = make_datamodule(folders, batch_size=2)
    dm.trainer = _RankOf4(completed=5)
    dm.setup("fit")
    state = dm.state_dict()
    for rank_zero in (False, True):
        resumed = make_datamodule(folders, batch_size=batch_size)
        resumed.trainer = _RankOf4(completed=5)
        resumed.trainer.is_global_zero = rank_zero
        resumed.trainer.lightning_module = SimpleNamespace(accumulate_batches=accumulate)
        with caplog.at_level("WARNING", logger="sr_gan.data.datamodule"):
            caplog.clear()
            resumed.load_state_dict(state)
        said = [r.getMessage() for r in caplog.records]
        assert said == ([line] if line and rank_zero else [])
        assert resumed.stream_start == 5 * 2 * 4


def test_a_rank_without_a_validation_image_of_its_own_validates_a_stand_in_weighted_zero(
    folders: dict[str, Path],
) -> None:
    """2 images on 4 ranks: rank 3 has none. Lightning refuses a rank without validation batches (and
    it would skip the metrics' reduction the other ranks wait for): it validates image 0, weighted 0."""
    for i in range(2):
        save(smooth_image(20, 20, i), folders["val"].parent / "val2" / f"v{i}.png")
    dm = make_datamodule({**folders, "val": folders["val"].parent / "val2"})
    dm.trainer = _RankOf4(completed=0)
    dm.setup("fit")
    (batch,) = [transfer(dm, b) for b in dm.val_dataloader()]
    assert batch["name"] == ["v0"] and batch["index"].tolist() == [0]
    assert batch["weight"].dtype == torch.float32 and batch["weight"].tolist() == [0.0]
    dm.trainer.global_rank = 1  # a rank with an image of its own: unweighted, as in one process
    (batch,) = [transfer(dm, b) for b in dm.val_dataloader()]
    assert batch["name"] == ["v1"] and "weight" not in batch


# --- on-device augmentation ---------------------------------------------------------------------


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 transforms of the square: 4 rotations, each optionally mirrored."""
    rotations = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [r.flip(-1) for r in rotations]


def all_flips(batch: int) -> torch.Tensor:
    """(batch, 3) booleans cycling through the 8 combinations."""
    codes = torch.arange(batch) % 8
    return torch.stack([codes & 1, codes & 2, codes & 4], dim=1).bool()


def test_paired_augment_keeps_hr_and_lr_aligned_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(64, 3, 8, 8, generator=g)
    lr = F.avg_pool2d(hr, 2)  # (64, 3, 4, 4)
    aug_hr, aug_lr = paired_augment(hr, lr, all_flips(64))
    torch.testing.assert_close(aug_lr, F.avg_pool2d(aug_hr, 2))
    assert torch.equal(aug_hr[::8], hr[::8]) and not torch.equal(aug_hr, hr)  # code 0 is the identity

    off, none = paired_augment(hr, None, torch.zeros(64, 3, dtype=torch.bool))
    assert torch.equal(off, hr) and none is None
    with pytest.raises(ValueError, match="square"):
        paired_augment(torch.zeros(2, 3, 8, 6), None, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch size"):
        paired_augment(hr, lr, torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch size"):  # an LR batch of another size
        paired_augment(hr, lr[:3], all_flips(64))


def test_paired_augment_gives_each_of_the_eight_dihedral_transforms() -> None:
    base = torch.arange(3 * 6 * 6, dtype=torch.uint8).view(3, 6, 6)  # no symmetry
    out, _ = paired_augment(base.expand(8, -1, -1, -1), None, all_flips(8))
    references = torch.stack(dihedral(base))  # (8, 3, 6, 6)
    matches = (out[:, None] == references[None]).flatten(2).all(-1)  # (8, 8)
    assert torch.equal(matches.sum(0), torch.ones(8, dtype=torch.long))  # a permutation of the group


# --- datamodule ---------------------------------------------------------------------------------


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    return (F.interpolate(coarse, size=(height, width), mode="bilinear")[0] * 255).round().to(torch.uint8)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    for i in range(3):
        save(smooth_image(48, 48, i), tmp_path / "train" / f"im{i}.png")
    save(smooth_image(45, 50, 9), tmp_path / "val" / "odd.png")
    return {"train": tmp_path / "train", "val": tmp_path / "val"}


def transfer(dm: SRDataModule, batch: dict) -> dict:
    """What Lightning does with a batch between the loader and the step (on the CPU here)."""
    return dm.on_after_batch_transfer(dm.on_before_batch_transfer(batch, 0), 0)


def make_datamodule(folders: dict[str, Path], **overrides) -> SRDataModule:
    options = dict(
        train_hr_dir=folders["train"], val_hr_dir=folders["val"], scale=SCALE, patch_size=16,
        batch_size=4, num_workers=0,
    )  # fmt: skip
    return SRDataModule(**{**options, **overrides})


def test_datamodule_makes_quantized_bicubic_lr_on_the_fly(folders: dict[str, Path]) -> None:
    calls = []
    dm = make_datamodule(folders, prepare=lambda: calls.append(1))
    dm.prepare_data()
    dm.setup("fit")
    assert calls == [1] and (dm.scale, dm.patch_size) == (SCALE, 16)
    loader = dm.train_dataloader()
    with pytest.raises(TypeError):
        len(loader)  # endless: the batch budget ends a run

    raw = next(iter(loader))
    assert raw["hr"].dtype == torch.uint8 and set(raw) == {"hr", "flips", "seed"}
    raw["flips"].zero_()  # identity, to compare with the raw patches
    batch = transfer(dm, raw)
    assert set(batch) == {"hr", "lr", "seed"}
    hr, lr = batch["hr"], batch["lr"]
    assert hr.dtype == lr.dtype == torch.float32
    assert hr.shape == (4, 3, 16, 16) and lr.shape == (4, 3, 4, 4)
    torch.testing.assert_close(hr, raw["hr"].float() / 255)
    torch.testing.assert_close(lr, imresize(hr, 1 / SCALE), atol=0.5 / 255 + 1e-6, rtol=0)
    assert torch.equal(lr * 255, (lr * 255).round()) and lr.min() >= 0 and lr.max() <= 1

    dm_float = make_datamodule(folders, degradation=BicubicDegradation(scale=SCALE, quantize=False))
    raw["flips"] = torch.zeros(4, 3, dtype=torch.bool)
    torch.testing.assert_close(transfer(dm_float, raw)["lr"], imresize(hr, 1 / SCALE))

    val = [transfer(dm, b) for b in dm.val_dataloader()]
    assert len(val) == 1 and val[0]["name"] == ["odd"]
    assert val[0]["hr"].shape == (1, 3, 44, 48) and val[0]["lr"].shape == (1, 3, 11, 12)  # mod-cropped
    assert len(dm.test_dataloader()) == 1


def test_datamodule_applies_the_patch_flips_to_paired_lr(div2k: dict[str, Path]) -> None:
    dm = SRDataModule(
        train_hr_dir=div2k["hr"], train_lr_dir=div2k["lr"], val_hr_dir=div2k["hr"], val_lr_dir=div2k["lr"],
        scale=SCALE, patch_size=16, batch_size=32, num_workers=0,
    )  # fmt: skip
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    assert raw["flips"].any() and not raw["flips"].all()
    plain = transfer(dm, {**raw, "flips": torch.zeros_like(raw["flips"])})
    torch.testing.assert_close(plain["lr"], raw["lr"].float() / 255)
    augmented = transfer(dm, dict(raw))
    assert not torch.equal(augmented["hr"], plain["hr"])
    assert torch.equal(upsample_nearest(augmented["lr"]), augmented["hr"])  # still aligned


def test_the_datamodule_hands_its_options_to_the_datasets(folders: dict[str, Path]) -> None:
    """`rotate`, `val_max_images`, `val_crop` and `max_image_pixels` reach the datasets it builds."""
    save(smooth_image(48, 48, 8), folders["val"] / "second.png")  # after odd.png (50x45) by name
    dm = make_datamodule(folders, rotate=False, val_max_images=1, val_crop=20, batch_size=64)
    dm.setup("fit")
    flips = next(iter(dm.train_dataloader()))["flips"]
    assert flips[:, 0].any() and not flips[:, 1:].any()  # horizontal flips only
    val = list(dm.val_dataloader())
    assert len(val) == 1 and val[0]["name"] == ["odd"] and val[0]["hr"].shape == (1, 3, 20, 20)
    with pytest.raises(DataError, match=r"im0\.png is 48x48 = 2,304 pixels, above the limit of 2,303"):
        make_datamodule(folders, max_image_pixels=48 * 48 - 1).setup("fit")


class _Probe(L.LightningModule):
    """Records the batches a real Trainer hands to the steps."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.train_hr, self.val_batches = [], []

    def training_step(self, batch, batch_idx):  # noqa: ANN001
        self.train_hr.append(batch["hr"])
        return (self.weight - batch["lr"].mean()) ** 2

    def validation_step(self, batch, batch_idx) -> None:  # noqa: ANN001
        self.val_batches.append(batch)

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_datamodule_under_a_real_trainer_augments_training_batches_only(tmp_path: Path) -> None:
    image = smooth_image(32, 32, 3)
    save(image, tmp_path / "train" / "a.png")
    save(image, tmp_path / "val" / "a.png")
    dm = SRDataModule(
        train_hr_dir=tmp_path / "train", val_hr_dir=tmp_path / "val", scale=SCALE, patch_size=32,
        batch_size=8, num_workers=2, cache=True,
    )  # fmt: skip
    probe = _Probe()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, val_check_interval=3, check_val_every_n_epoch=None, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(probe, datamodule=dm)

    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        return (x * 255).round().to(torch.uint8)

    references = dihedral(image)
    seen = {tuple(int(torch.equal(to_uint8(x), t)) for t in references) for x in torch.cat(probe.train_hr)}
    assert len(seen) > 1 and all(sum(t) == 1 for t in seen)  # flipped/rotated copies of the image
    assert len(probe.val_batches) == 1 and torch.equal(to_uint8(probe.val_batches[0]["hr"][0]), image)
    assert probe.val_batches[0]["lr"].shape == (1, 3, 8, 8)


# --- the embedded demo set ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "skimage_photos"
    demo.prepare_skimage_photos(root)
    return root


def test_demo_photos_are_split_deterministically_and_cropped_for_validation(demo_root: Path) -> None:
    train = sorted(p.name for p in (demo_root / "train").iterdir())
    val = sorted(p.name for p in (demo_root / "val").iterdir())
    assert val == ["chelsea.png", "coffee.png"]
    expected = {Path(f).stem + ".png" for f in demo.DEMO_PHOTOS} - set(val)
    assert set(train) == expected and len(train) >= 5
    source = Path(demo.skimage.data.__file__).parent
    copied = read_image(demo_root / "train" / "astronaut.png")
    assert torch.equal(copied, read_image(source / "astronaut.png"))
    for name in val:
        image = read_image(demo_root / "val" / name)
        assert image.shape[1:] == (256, 256) and not torch.equal(image[0], image[1])  # colour


def test_demo_prepare_is_idempotent_and_reproducible(demo_root: Path, tmp_path: Path) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in demo_root.rglob("*")}
    demo.prepare_skimage_photos(demo_root)  # second call: nothing written
    assert {p: p.stat().st_mtime_ns for p in demo_root.rglob("*")} == stamps
    again = tmp_path / "again"
    demo.prepare_skimage_photos(again)
    files = sorted(p.relative_to(demo_root) for p in demo_root.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((demo_root / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no staging folder left behind


def test_demo_photos_are_whole_or_a_one_line_error(tmp_path: Path) -> None:
    """A photo write that fails (a full disk) leaves no demo set and says so in one line: torchvision's
    writer ignored the failure, and the truncated photos were kept as a complete set."""
    root = tmp_path / "photos"
    with file_size_limit(4096), pytest.raises(UserError, match=rf"cannot write the demo photos into {root}: "):
        demo.prepare_skimage_photos(root)
    assert list(tmp_path.iterdir()) == []  # neither the set nor its staging folder


def test_demo_photos_of_another_scikit_image_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo the release lacks or ships smaller than 256 px is skipped; a split left with none is one
    line and leaves no set; an empty folder in the set's place (made by hand) is taken over."""
    monkeypatch.setattr(demo, "DEMO_PHOTOS", ("astronaut.png", "gone.png", "chelsea.png", "coffee.png"))
    monkeypatch.setattr(demo, "MIN_SIDE", 350)  # chelsea.png is 300 x 451, coffee.png 400 x 600
    (tmp_path / "photos").mkdir()
    demo.prepare_skimage_photos(tmp_path / "photos")
    assert sorted(p.name for p in (tmp_path / "photos" / "train").iterdir()) == ["astronaut.png"]
    assert sorted(p.name for p in (tmp_path / "photos" / "val").iterdir()) == ["coffee.png"]
    monkeypatch.setattr(demo, "VAL_PHOTOS", ("chelsea",))
    with pytest.raises(UserError, match=r"^scikit-image .* ships none of the val demo photos in .*: point data\."):
        demo.prepare_skimage_photos(tmp_path / "other")
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]


def test_demo_refuses_a_foreign_folder_and_honours_the_cache_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mine.txt").write_text("x")
    with pytest.raises(UserError, match="not a complete demo set"):
        demo.prepare_skimage_photos(tmp_path / "photos")
    monkeypatch.setenv("SR_GAN_CACHE", str(tmp_path / "cache"))
    assert demo.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SR_GAN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo.default_cache_dir() == tmp_path / "xdg" / "sr_gan"
    assert os.fspath(demo.DEMO_ROOT).endswith(os.path.join("sr_gan", "skimage_photos"))


def test_prepared_folders_give_the_same_patches_as_the_image_files(div2k: dict[str, Path]) -> None:
    from sr_gan.data.prepared import prepare_folder

    keys = stream_keys(2, 12)
    decoded = TrainPatchDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, patch_size=16)
    expected = [decoded[k] for k in keys]
    prepare_folder(div2k["hr"], progress=False)
    hr_only = TrainPatchDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, patch_size=16)
    assert hr_only.prepared["hr"] is not None and hr_only.prepared["lr"] is None and hr_only.decoded
    prepare_folder(div2k["lr"], progress=False)
    prepared = TrainPatchDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, patch_size=16)
    assert not prepared.decoded
    for dataset in (hr_only, prepared):
        for key, item in zip(keys, expected):
            assert all(torch.equal(dataset[key][k], item[k]) for k in item)
    off = TrainPatchDataset(hr_dir=div2k["hr"], scale=SCALE, patch_size=16, use_prepared=False)
    assert off.prepared == {"hr": None}


@pytest.mark.parametrize("cache", [False, True])
def test_a_prepared_side_is_never_decoded_from_its_files(
    div2k: dict[str, Path], monkeypatch: pytest.MonkeyPatch, cache: bool
) -> None:
    """HR prepared, LR not: a patch (or the cache) decodes the LR file alone, the HR crop comes from
    the arrays. Every patch decoded the whole HR PNG as well, then cropped the arrays (and the cache
    held every decoded HR), so preparing the HR folder alone saved nothing."""
    import sr_gan.data.datasets as datasets
    from sr_gan.data.prepared import prepare_folder

    keys = stream_keys(2, 8)
    files = TrainPatchDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, patch_size=16)
    expected = [files[key] for key in keys]
    prepare_folder(div2k["hr"], progress=False)
    decoded = []
    monkeypatch.setattr(datasets, "read_image", lambda path, **kw: decoded.append(path.name) or read_image(path, **kw))
    dataset = TrainPatchDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, patch_size=16, cache=cache)
    patches = [dataset[key] for key in keys]
    assert all(torch.equal(got[k], item[k]) for got, item in zip(patches, expected, strict=True) for k in item)
    assert sorted(set(decoded)) == ["0001x4.png", "0002x4.png"]
    assert len(decoded) == (2 if cache else len(keys))


def test_every_unusable_image_is_reported_at_start_up_once(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        save(smooth_image(40, 40, 1), tmp_path / "train" / f"{name}.png")
    (tmp_path / "train" / "b.png").write_bytes(b"garbage")
    (tmp_path / "train" / "d.png").write_bytes((tmp_path / "train" / "a.png").read_bytes()[:200])  # header only
    with pytest.raises(DataError, match=r"cannot read image .*b\.png") as info:
        TrainPatchDataset(hr_dir=tmp_path / "train", scale=SCALE, patch_size=16)  # headers: b only
    assert "d.png" not in str(info.value)
    with pytest.raises(DataError) as info:
        TrainPatchDataset(hr_dir=tmp_path / "train", scale=SCALE, patch_size=16, verify=True)
    message = str(info.value)
    assert message.startswith("2 images of") and message.count("cannot read image") == 2
    assert "b.png" in message and "d.png" in message and "a.png" not in message
    assert "\n" not in message


def test_a_validation_image_too_small_for_ssim_is_named_at_start_up(tmp_path: Path) -> None:
    save(smooth_image(48, 48, 1), tmp_path / "val" / "fine.png")
    save(smooth_image(18, 60, 2), tmp_path / "val" / "tiny.png")  # 16 px after mod-crop, needs 11 + 2 * 4
    with pytest.raises(DataError, match=r"smaller than 19x19 .*tiny\.png \(60x16\)") as info:
        ValImageDataset(hr_dir=tmp_path / "val", scale=SCALE)
    assert "fine.png" not in str(info.value)
    assert len(ValImageDataset(hr_dir=tmp_path / "val", scale=SCALE, max_images=1)) == 1  # only the kept are checked


def test_a_worker_error_prints_as_its_own_one_line(div2k: dict[str, Path], tmp_path: Path) -> None:
    from sr_gan.errors import one_line

    dataset = TrainPatchDataset(hr_dir=div2k["hr"], scale=SCALE, patch_size=16)
    dataset.pairs[0].hr.write_bytes(b"broken after the start-up scan")
    loader = torch.utils.data.DataLoader(dataset, sampler=PatchStream(1, seed=0), batch_size=1, num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)  # how DataLoader re-raises a worker's error
    assert one_line(info.value).startswith("cannot read image ") and "0001.png" in one_line(info.value)


def test_validation_keeps_the_first_images_and_their_aligned_centres(div2k: dict[str, Path]) -> None:
    whole = ValImageDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE)
    small = ValImageDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, max_images=1, crop=22)
    assert len(small) == 1 and small.crop == 20
    item, full = small[0], whole[0]  # HR 48x40 (WxH): centre 20x20 from top 8, left 12
    assert item["hr"].shape == (3, 20, 20) and item["lr"].shape == (3, 5, 5)
    assert torch.equal(item["hr"], full["hr"][:, 8:28, 12:32]) and torch.equal(item["lr"], full["lr"][:, 2:7, 3:8])
    assert torch.equal(upsample_nearest(item["lr"]), item["hr"])
    # a crop higher than the image (44 > 40): the whole height, the centre 44 columns (from left 2 // 4 * 4 = 0)
    wide = ValImageDataset(hr_dir=div2k["hr"], lr_dir=div2k["lr"], scale=SCALE, max_images=1, crop=44)[0]
    assert torch.equal(wide["hr"], full["hr"][:, :, 0:44]) and torch.equal(wide["lr"], full["lr"][:, :, 0:11])
    with pytest.raises(DataError, match=r"data\.val_crop=12 is below 19"):
        ValImageDataset(hr_dir=div2k["hr"], scale=SCALE, crop=12)


def test_a_validation_crop_just_large_enough_for_ssim_is_taken(div2k: dict[str, Path]) -> None:
    """At x1 SSIM needs 11 + 2 x 1 pixels: `crop=13` is the smallest crop taken (the centre of 48x40
    from top 13, left 17), 12 is refused."""
    item = ValImageDataset(hr_dir=div2k["hr"], scale=1, crop=13)[0]
    full = ValImageDataset(hr_dir=div2k["hr"], scale=1)[0]
    assert torch.equal(item["hr"], full["hr"][:, 13:26, 17:30])
    with pytest.raises(DataError, match=r"data\.val_crop=12 is below 13"):
        ValImageDataset(hr_dir=div2k["hr"], scale=1, crop=12)


def test_the_real_world_degradation_runs_in_the_datamodule_seeded_by_the_batch(folders: dict[str, Path]) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "degradation" / "realesrgan.yaml")
    config.scale = SCALE
    dm = make_datamodule(folders, degradation=instantiate(config), patch_size=32)
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    raw, other = next(loader), next(loader)
    first, again, second = transfer(dm, dict(raw)), transfer(dm, dict(raw)), transfer(dm, dict(other))
    assert first["lr"].shape == (4, 3, 8, 8) and first["hr"].shape == (4, 3, 32, 32)
    assert torch.equal(first["lr"], again["lr"])  # a function of the batch's patch seed
    assert not torch.equal(first["lr"], transfer(dm, {**raw, "seed": raw["seed"] + 1})["lr"])
    assert not torch.equal(first["lr"], imresize(first["hr"], 1 / SCALE))  # not the bicubic LR
    # the target is USM-sharpened; the discriminator's real images are the HR patches themselves
    plain = transfer(dm, {**raw, "flips": torch.zeros_like(raw["flips"])})
    torch.testing.assert_close(plain["hr_real"], raw["hr"].float() / 255)
    assert not torch.allclose(plain["hr"], plain["hr_real"])
    val = [transfer(dm, b) for b in dm.val_dataloader()]
    assert torch.equal(val[0]["lr"], transfer(dm, next(iter(dm.val_dataloader())))["lr"])  # fixed per image
    # validation scores the HR itself, not the sharpened training target (val/psnr was 34 dB off the truth)
    raw_val = next(iter(dm.val_dataloader()))
    assert "hr_real" not in val[0]
    torch.testing.assert_close(val[0]["hr"], raw_val["hr"].float() / 255)
    assert second["lr"].shape == first["lr"].shape


def test_each_validation_image_has_its_own_fixed_degradation(tmp_path: Path) -> None:
    """Two copies of one picture in the validation folder: each gets its own random degradation (a seed
    per image, not one for the set), the same at every validation and in a run of another seed (each
    seed of a sweep was validated on its own set: 0.44 dB apart in bicubic PSNR on the demo photos)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    for name in ("a", "b"):
        save(smooth_image(32, 32, 4), tmp_path / "val" / f"{name}.png")
    config = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "degradation" / "realesrgan.yaml")
    config.scale = SCALE
    folders = {"train": tmp_path / "val", "val": tmp_path / "val"}
    dm = make_datamodule(folders, degradation=instantiate(config))
    dm.setup("validate")
    first, again = ([transfer(dm, b)["lr"] for b in dm.val_dataloader()] for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])
    other = make_datamodule(folders, degradation=instantiate(config), seed=7)
    assert other.seed != dm.seed
    other.setup("validate")
    assert all(torch.equal(x, transfer(other, b)["lr"]) for x, b in zip(first, other.val_dataloader(), strict=True))


def test_loader_workers_ignore_ctrl_c_and_keep_lightnings_worker_seeding(
    div2k: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's start ignores SIGINT (the main process answers a terminal's Ctrl-C) and, under
    ``seed_everything(workers=True)``, seeds the worker's RNGs as Lightning's own start would have:
    a loader's own worker start takes the place of Lightning's."""
    import random
    import signal

    from lightning.fabric.utilities.seed import pl_worker_init_function

    dm = SRDataModule(train_hr_dir=div2k["hr"], val_hr_dir=div2k["hr"], scale=4, patch_size=32, num_workers=2)
    dm.setup("fit")
    start = dm.train_dataloader().worker_init_fn
    monkeypatch.setenv("PL_SEED_WORKERS", "1")
    drawn = []
    for init in (start, lambda worker: pl_worker_init_function(worker, rank=0)):
        torch.manual_seed(7)  # as torch seeds a worker before its start
        before = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever an earlier test left
        try:
            init(1)
            drawn.append((signal.getsignal(signal.SIGINT), torch.rand(2), np.random.rand(2), random.random()))
        finally:
            signal.signal(signal.SIGINT, before)
    ours, lightnings = drawn
    assert ours[0] is signal.SIG_IGN and lightnings[0] is not signal.SIG_IGN
    assert torch.equal(ours[1], lightnings[1]) and np.array_equal(ours[2], lightnings[2]) and ours[3] == lightnings[3]


def test_a_stand_in_is_one_image_weighted_zero() -> None:
    """What a DDP rank left without a validation image of its own validates (its loader's length 1)."""
    from sr_gan.data.datamodule import StandIn

    images = [{"lr": torch.full((3, 2, 2), float(i)), "hr": torch.full((3, 4, 4), float(i))} for i in range(3)]
    stand_in = StandIn(images)  # type: ignore[arg-type]
    assert len(stand_in) == 1 and len(torch.utils.data.DataLoader(stand_in, batch_size=1)) == 1
    item = stand_in[0]
    assert torch.equal(item["lr"], images[0]["lr"]) and item["weight"] == 0.0
