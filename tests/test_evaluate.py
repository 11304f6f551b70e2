"""Evaluation: data set layouts, the table against an independent numpy computation, reports, CLI."""

import csv
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich.console import Console
from scipy.signal import correlate2d
from skimage import data as skdata
from torchmetrics.functional.image import learned_perceptual_image_patch_similarity, visual_information_fidelity

from sr_gan import evaluate_report
from sr_gan.archs import SRResNet
from sr_gan.errors import UserError
from sr_gan.evaluate import Scorer, find_benchmark, model_names, run
from sr_gan.evaluate_report import (
    benchmark_columns,
    notes,
    plot_datasets,
    plot_perception_distortion,
    rich_table,
    to_markdown,
)
from sr_gan.ops import imresize
from sr_gan.perception import LPIPS_LABEL, lpips_backbone_path, vif_y
from sr_gan.weights import save_generator_file
from tests.helpers import png_bomb, run_module

ROOT = Path(__file__).resolve().parents[1]
SCALE = 2
TINY_G = {"_target_": "sr_gan.archs.SRResNet", "num_features": 8, "num_blocks": 1, "scale": SCALE}


# --- an independent implementation of the protocol (numpy, float64) -------------------------------


def _y(rgb255: np.ndarray) -> np.ndarray:
    """BT.601 Y of (H, W, 3) levels 0..255, as MATLAB's rgb2ycbcr (not rounded)."""
    return 16 + (65.481 * rgb255[..., 0] + 128.553 * rgb255[..., 1] + 24.966 * rgb255[..., 2]) / 255


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a - b) ** 2)))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004: 11x11 Gaussian (sigma 1.5), 'valid' filtering, data range 255."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def f(x: np.ndarray) -> np.ndarray:
        return correlate2d(x, window, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def _reference(hr_u8: np.ndarray, sr_float: np.ndarray, *, rgb: bool = False) -> dict[str, float]:
    """Scores of an SR image (H, W, 3) float against an HR (H, W, 3) uint8, border = scale."""
    crop = (slice(SCALE, -SCALE), slice(SCALE, -SCALE))
    sr255 = np.round(np.clip(sr_float, 0, 1) * 255)[crop].astype(np.float64)
    hr255 = hr_u8[crop].astype(np.float64)
    scores = {"psnr_y": _psnr(_y(sr255), _y(hr255)), "ssim_y": _ssim(_y(sr255), _y(hr255))}
    if rgb:
        scores["psnr_rgb"] = _psnr(sr255, hr255)
    return scores


def _to_tensor(x: np.ndarray) -> torch.Tensor:  # (H, W, 3) → (1, 3, H, W) float64 in [0, 1]
    return torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].double() / 255


def _to_numpy(x: torch.Tensor) -> np.ndarray:  # (1, 3, H, W) → (H, W, 3) float64
    return x[0].permute(1, 2, 0).double().numpy()


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three small skimage photos with odd sizes (the HR gets mod-cropped to even sizes)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    crops = {
        "astronaut": skdata.astronaut()[60:113, 180:227],
        "chelsea": skdata.chelsea()[40:91, 120:175],
        "coffee": skdata.coffee()[100:149, 200:251],
    }
    for name, pixels in crops.items():
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder


def _tiny_generator(path: Path, seed: int) -> SRResNet:
    torch.manual_seed(seed)
    net = SRResNet(num_features=8, num_blocks=1, scale=SCALE)
    save_generator_file(path, net.state_dict(), config=TINY_G, scale=SCALE)
    return net.eval()


def _cfg(tmp_path: Path, **overrides: object) -> DictConfig:
    cfg = OmegaConf.load(ROOT / "conf" / "evaluate.yaml")
    cfg.paths = {"data_dir": str(tmp_path / "data")}
    cfg.out_dir = str(tmp_path / "eval")
    cfg.device = "cpu"
    cfg.lpips = False
    return OmegaConf.merge(cfg, overrides)


# --- data set layouts ------------------------------------------------------------------------------


def test_benchmark_layouts_are_found(tmp_path: Path, photos: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "benchmark" / "Set5" / "HR").mkdir(parents=True)
    (data_dir / "benchmark" / "Set5" / "LR_bicubic" / "X2").mkdir(parents=True)
    (data_dir / "benchmark" / "B100" / "HR").mkdir(parents=True)  # the archive's name of BSD100
    (data_dir / "DIV2K" / "DIV2K_valid_HR").mkdir(parents=True)
    (data_dir / "DIV2K" / "DIV2K_valid_LR_bicubic" / "X4").mkdir(parents=True)

    set5 = find_benchmark("Set5", scale=2, data_dir=data_dir)
    assert (set5.name, set5.hr_dir, set5.lr_dir) == (
        "Set5",
        data_dir / "benchmark/Set5/HR",
        data_dir / "benchmark/Set5/LR_bicubic/X2",
    )
    assert find_benchmark("Set5", scale=4, data_dir=data_dir).lr_dir is None  # no X4 folder: made on the fly
    bsd100 = find_benchmark("BSD100", scale=4, data_dir=data_dir)
    assert (bsd100.name, bsd100.hr_dir) == ("BSD100", data_dir / "benchmark/B100/HR")
    div2k = find_benchmark("DIV2K", scale=4, data_dir=data_dir)
    assert div2k.hr_dir == data_dir / "DIV2K/DIV2K_valid_HR"
    assert div2k.lr_dir == data_dir / "DIV2K/DIV2K_valid_LR_bicubic/X4"
    direct = find_benchmark(str(data_dir / "DIV2K" / "DIV2K_valid_HR"), scale=4, data_dir=tmp_path)
    assert direct.lr_dir == div2k.lr_dir
    plain = find_benchmark(str(photos), scale=2, data_dir=data_dir)
    assert (plain.name, plain.hr_dir, plain.lr_dir) == ("photos", photos, None)
    with pytest.raises(UserError, match="Set14.*sr_gan.data.download benchmarks"):
        find_benchmark("Set14", scale=2, data_dir=data_dir)


def test_a_named_data_set_is_read_from_paths_data_dir(
    tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """datasets=[Set5] is looked up under `paths.data_dir` (SR_GAN_DATA), wherever the command runs:
    the same scores as the folder itself."""
    shutil.copytree(photos, tmp_path / "elsewhere" / "benchmark" / "Set5" / "HR")
    monkeypatch.chdir(tmp_path)  # no data/ here
    by_folder = run(_cfg(tmp_path, ckpt="bicubic", datasets=[str(photos)], scale=SCALE))
    cfg = _cfg(tmp_path, ckpt="bicubic", datasets=["Set5"], scale=SCALE)
    cfg.paths.data_dir = str(tmp_path / "elsewhere")
    assert run(cfg) == [row | {"dataset": "Set5"} for row in by_folder]


# --- the table ------------------------------------------------------------------------------------


def test_table_matches_independent_computation(tmp_path: Path, photos: Path) -> None:
    nets = {
        "psnr": _tiny_generator(tmp_path / "psnr.safetensors", 0),
        "gan": _tiny_generator(tmp_path / "gan.safetensors", 1),
    }
    cfg = _cfg(
        tmp_path,
        ckpt=[str(tmp_path / "psnr.safetensors"), str(tmp_path / "gan.safetensors")],
        datasets=[str(photos)],
        rgb=True,
        tile=16,
        tile_overlap=12,
    )
    rows = run(cfg)

    assert [(r["dataset"], r["model"]) for r in rows] == [("photos", "bicubic"), ("photos", "psnr"), ("photos", "gan")]
    assert all(list(r) == ["dataset", "model", "psnr_y", "ssim_y", "psnr_rgb", "images"] for r in rows)
    assert all(r["images"] == 3 for r in rows)
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert report["scale"] == report["crop_border"] == SCALE

    expected: dict[str, list[dict[str, float]]] = {"bicubic": [], "psnr": [], "gan": []}
    for path in sorted(photos.glob("*.png")):
        hr = np.asarray(Image.open(path))
        hr = hr[: hr.shape[0] // SCALE * SCALE, : hr.shape[1] // SCALE * SCALE]  # mod-crop
        lr = torch.round(imresize(_to_tensor(hr), 1 / SCALE).clamp(0, 1) * 255) / 255  # 8-bit LR
        expected["bicubic"].append(_reference(hr, _to_numpy(imresize(lr, SCALE)), rgb=True))
        for name, net in nets.items():
            with torch.no_grad():
                expected[name].append(_reference(hr, _to_numpy(net(lr.float())), rgb=True))
        for model, scores in expected.items():
            got = report["per_image"]["photos"][model][path.stem]
            assert got == pytest.approx(scores[-1], abs=1e-4), (model, path.stem)
    for row in rows:
        for key in ("psnr_y", "ssim_y", "psnr_rgb"):
            assert row[key] == pytest.approx(np.mean([s[key] for s in expected[row["model"]]]), abs=1e-4)

    with open(tmp_path / "eval" / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(t["model"], float(t["psnr_y"])) for t in table] == [(r["model"], pytest.approx(r["psnr_y"])) for r in rows]
    markdown = (tmp_path / "eval" / "results.md").read_text()
    assert "| Dataset | Model | PSNR-Y | SSIM-Y | PSNR-RGB | Images |" in markdown
    assert f"| photos | bicubic | {rows[0]['psnr_y']:.2f} | {rows[0]['ssim_y']:.4f} |" in markdown


def test_an_infinite_psnr_is_written_as_null_in_json(tmp_path: Path, photos: Path) -> None:
    """At scale=1 the bicubic SR is its HR: PSNR is inf. The reports are written (the strict JSON
    encoder raised on inf before), with null in JSON and a readable `inf` in Markdown and CSV."""
    rows = run(_cfg(tmp_path, datasets=[str(photos)], scale=1))
    assert rows[0]["psnr_y"] == float("inf") and rows[0]["ssim_y"] == pytest.approx(1)
    out = tmp_path / "eval"
    report = json.loads((out / "results.json").read_text())
    assert report["rows"][0]["psnr_y"] is None and report["rows"][0]["ssim_y"] == pytest.approx(1)
    assert report["per_image"]["photos"]["bicubic"]["coffee"]["psnr_y"] is None
    assert "| photos | bicubic | inf | 1.0000 | 3 |" in (out / "results.md").read_text()
    with open(out / "results.csv", newline="") as handle:
        assert float(next(csv.DictReader(handle))["psnr_y"]) == float("inf")


def test_lr_folder_is_used_when_present(tmp_path: Path, photos: Path) -> None:
    """With LR_bicubic/X<s> the given LR images are upsampled, not LR made from HR."""
    lr_dir = photos / "LR_bicubic" / f"X{SCALE}"
    lr_dir.mkdir(parents=True)
    for path in photos.glob("*.png"):
        with Image.open(path) as image:  # nearest-neighbour LR: clearly not the bicubic one
            image.resize((image.width // SCALE, image.height // SCALE), Image.NEAREST).save(
                lr_dir / f"{path.stem}x{SCALE}.png"
            )
    rows = run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE))
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert report["lr"]["photos"] == str(lr_dir)
    hr = np.asarray(Image.open(photos / "chelsea.png"))[:50, :54]  # 51 x 55 mod-cropped
    lr = _to_tensor(np.asarray(Image.open(lr_dir / f"chelseax{SCALE}.png")))
    expected = _reference(hr, _to_numpy(imresize(lr, SCALE)))
    assert report["per_image"]["photos"]["bicubic"]["chelsea"] == pytest.approx(expected, abs=1e-4)
    assert [r["model"] for r in rows] == ["bicubic"]


def test_two_images_of_one_stem_are_refused_before_scoring(tmp_path: Path, photos: Path) -> None:
    """coffee.png and coffee.jpg were scored as one image: rows said 3 images for 4 files."""
    Image.open(photos / "coffee.png").save(photos / "coffee.jpg")
    with pytest.raises(UserError, match=f"{re.escape(str(photos / 'coffee.jpg'))} and .*coffee.png") as info:
        run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE))
    assert "\n" not in str(info.value) and not (tmp_path / "eval" / "results.json").exists()


def test_an_lr_folder_of_another_scale_is_refused_naming_evaluates_key(tmp_path: Path, photos: Path) -> None:
    """The size check of LR against HR is shared with training; here it names evaluate's `scale`."""
    lr_dir = photos / "LR_bicubic" / f"X{SCALE}"
    lr_dir.mkdir(parents=True)
    for path in photos.glob("*.png"):
        with Image.open(path) as image:  # x4 LR images in the X2 folder
            image.resize((image.width // 4, image.height // 4)).save(lr_dir / path.name)
    with pytest.raises(UserError, match=f"size mismatch at scale={SCALE}: LR .* needs LR") as err:
        run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE))
    assert "data.scale" not in str(err.value)


def test_an_image_above_the_pixel_limit_names_evaluates_key(tmp_path: Path, photos: Path) -> None:
    """The header check is shared with training, whose key (data.max_image_pixels) evaluate has not:
    here it names evaluate's `max_pixels`, which lets a genuine large image through."""
    png_bomb(photos / "huge.png", 20_000, 20_000)  # 4e8 pixels claimed in its header
    with pytest.raises(UserError, match=r"huge\.png is 20000x20000 .* raise max_pixels$") as err:
        run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE))
    assert "data.max_image_pixels" not in str(err.value)
    with pytest.raises(UserError, match=r"cannot read image .*huge\.png"):  # past the header: decoded, and empty
        run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE, max_pixels=None))
    (photos / "huge.png").unlink()
    lr_dir = photos / "LR_bicubic" / f"X{SCALE}"  # an LR file's header names the key too
    lr_dir.mkdir(parents=True)
    for path in photos.glob("*.png"):
        png_bomb(lr_dir / path.name, 20_000, 20_000)
    with pytest.raises(UserError, match=rf"X{SCALE}/\w+\.png is 20000x20000 .* raise max_pixels$"):
        run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE))


def test_plot_falls_back_to_vif_without_lpips(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    Image.fromarray(skdata.astronaut()[::4, ::4]).save(folder / "astronaut.png")  # 128 x 128
    _tiny_generator(tmp_path / "a0.safetensors", 0)
    _tiny_generator(tmp_path / "a1.safetensors", 1)
    cfg = _cfg(
        tmp_path,
        ckpt=[str(tmp_path / "a0.safetensors"), str(tmp_path / "a1.safetensors")],
        datasets=[str(folder)],
        plot=True,
    )
    rows = run(cfg)
    # bicubic's VIF-P is torchmetrics' on the border-cropped Y of the 8-bit images, computed here
    hr = np.asarray(Image.open(folder / "astronaut.png"))  # 128 x 128: no mod-crop at x2
    lr = torch.round(imresize(_to_tensor(hr), 1 / SCALE).clamp(0, 1) * 255) / 255
    sr255 = np.round(np.clip(_to_numpy(imresize(lr, SCALE)), 0, 1) * 255)
    crop = (slice(SCALE, -SCALE), slice(SCALE, -SCALE))
    sr_y, hr_y = (torch.from_numpy(_y(x[crop].astype(np.float64)))[None, None] for x in (sr255, hr))
    expected = float(visual_information_fidelity(sr_y, hr_y))
    assert rows[0]["model"] == "bicubic" and rows[0]["vif_y"] == pytest.approx(expected, abs=1e-5)
    assert all(np.isfinite(r["vif_y"]) for r in rows)
    png = tmp_path / "eval" / "perception_distortion_big.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vif_is_the_mean_over_the_images_that_have_it(tmp_path: Path) -> None:
    """VIF has no value under 41x41 px after the crop: one such image made the data set's VIF-Y
    NaN with no note, and the CSV wrote `nan`. Now the mean is over the other images and says so;
    a row with no VIF at all is empty in CSV, null in JSON."""
    mixed, tiny = tmp_path / "mixed", tmp_path / "tiny"
    mixed.mkdir()
    tiny.mkdir()
    Image.fromarray(skdata.astronaut()[::4, ::4]).save(mixed / "astronaut.png")  # 128 x 128
    Image.fromarray(skdata.coffee()[100:140, 200:240]).save(mixed / "coffee.png")  # 40 x 40: no VIF
    Image.fromarray(skdata.chelsea()[40:80, 120:160]).save(tiny / "chelsea.png")
    rows = run(_cfg(tmp_path, datasets=[str(mixed), str(tiny)], scale=SCALE, plot=True))
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    per_image = report["per_image"]["mixed"]["bicubic"]
    assert per_image["coffee"]["vif_y"] is None and per_image["astronaut"]["vif_y"] > 0
    assert rows[0]["vif_y"] == pytest.approx(per_image["astronaut"]["vif_y"])
    assert rows[0]["psnr_y"] == pytest.approx((per_image["astronaut"]["psnr_y"] + per_image["coffee"]["psnr_y"]) / 2)
    assert (rows[0]["images"], rows[0]["scored"]) == (2, {"vif_y": 1})
    assert report["rows"][1]["vif_y"] is None and report["rows"][1]["scored"] == {"vif_y": 0}
    markdown = (tmp_path / "eval" / "results.md").read_text()
    assert "- VIF-Y of mixed is the mean over 1 of 2 images (the others have none)" in markdown
    assert "- VIF-Y of tiny has no value" in markdown
    with open(tmp_path / "eval" / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert float(table[0]["vif_y"]) == pytest.approx(rows[0]["vif_y"]) and table[1]["vif_y"] == ""


def test_a_note_names_the_models_only_when_some_of_the_dataset_have_the_value() -> None:
    nan = float("nan")
    rows = [
        {"dataset": "Set5", "model": "bicubic", "psnr_y": 28.0, "vif_y": 0.5, "images": 5, "scored": {"vif_y": 3}},
        {"dataset": "Set5", "model": "esrgan", "psnr_y": 30.0, "vif_y": 0.4, "images": 5},
        {"dataset": "Set14", "model": "bicubic", "psnr_y": 26.0, "vif_y": nan, "images": 2, "scored": {"vif_y": 0}},
        {"dataset": "Set14", "model": "esrgan", "psnr_y": 27.0, "vif_y": nan, "images": 2, "scored": {"vif_y": 0}},
    ]
    assert notes(rows, benchmark_columns(rows)) == [
        "VIF-Y of Set5 (bicubic) is the mean over 3 of 5 images (the others have none)",
        "VIF-Y of Set14 has no value",
    ]


def test_each_plane_joins_the_models_and_sets_the_baseline_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One plot per dataset: the models in row order on the line, bicubic apart, LPIPS where the rows have it."""
    drawn = {}
    monkeypatch.setattr(
        evaluate_report, "plot_perception_distortion", lambda points, **kw: drawn.update({kw["title"]: (points, kw)})
    )
    rows = [
        {"dataset": "Set5", "model": "bicubic", "psnr_y": 28.0, "lpips": 0.4, "vif_y": 0.3},
        {"dataset": "Set5", "model": "b", "psnr_y": 30.0, "lpips": 0.2, "vif_y": 0.5},
        {"dataset": "Set5", "model": "a", "psnr_y": 29.0, "lpips": 0.1, "vif_y": 0.4},
        {"dataset": "Set14", "model": "bicubic", "psnr_y": 26.0, "lpips": 0.5, "vif_y": 0.2},
        {"dataset": "Set14", "model": "b", "psnr_y": 27.0, "lpips": 0.3, "vif_y": 0.3},
    ]
    paths = plot_datasets(rows, out_dir=tmp_path, scale=4, baseline="bicubic")
    assert paths == [tmp_path / "perception_distortion_Set5.png", tmp_path / "perception_distortion_Set14.png"]
    points, kw = drawn["Set5 x4"]
    assert points == [("b", 30.0, 0.2), ("a", 29.0, 0.1)]
    assert (kw["baseline"], kw["score_label"], kw["path"]) == (("bicubic", 28.0, 0.4), LPIPS_LABEL, paths[0])
    assert drawn["Set14 x4"][0] == [("b", 27.0, 0.3)]


def test_lpips_column_when_the_backbone_is_cached(
    tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LPIPS wiring, with a random AlexNet standing in for the ImageNet one (no download here):
    the values are not meaningful LPIPS, only equal to torchmetrics' on the same cropped images."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    backbone = lpips_backbone_path()
    backbone.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), backbone)
    run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE, lpips="auto"))
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert "lpips" in report["rows"][0]
    hr = _to_tensor(np.asarray(Image.open(photos / "coffee.png"))[:48, :50])
    lr = torch.round(imresize(hr, 1 / SCALE).clamp(0, 1) * 255) / 255
    sr = torch.round(imresize(lr, SCALE).clamp(0, 1) * 255) / 255
    crop = (..., slice(SCALE, -SCALE), slice(SCALE, -SCALE))
    expected = learned_perceptual_image_patch_similarity(sr[crop].float(), hr[crop].float(), normalize=True)
    assert report["per_image"]["photos"]["bicubic"]["coffee"]["lpips"] == pytest.approx(float(expected), abs=1e-5)


class _KeepsItsInputs(torch.nn.Module):
    """An LPIPS metric stand-in: keeps the (SR, HR) pairs `lpips_score` gives it, scores 0."""

    def reset(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def update(self, sr: torch.Tensor, hr: torch.Tensor) -> None:
        self.seen.append((sr, hr))

    def compute(self) -> torch.Tensor:
        return torch.zeros(1)


def test_lpips_sees_the_8_bit_border_cropped_images() -> None:
    """LPIPS, like PSNR and SSIM, scores the SR image an 8-bit file would hold, cropped by the scale:
    an SR between the 8-bit levels reaches it rounded (the random-AlexNet test above cannot tell
    rounded from not: its scores moved by less than its 1e-5)."""
    torch.manual_seed(0)
    hr = torch.randint(0, 256, (1, 3, 24, 28)).double() / 255
    sr = hr + torch.randn(hr.shape, dtype=torch.float64) / 255  # off the levels, a little outside [0, 1]
    metric = _KeepsItsInputs()
    Scorer(scale=SCALE, lpips=metric)(sr, hr)
    ((seen_sr, seen_hr),) = metric.seen
    crop = (..., slice(SCALE, -SCALE), slice(SCALE, -SCALE))
    assert torch.equal(seen_sr, (torch.round(sr.clamp(0, 1) * 255) / 255)[crop].float())
    assert torch.equal(seen_hr, hr[crop].float())


def test_config_errors_name_the_key(tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="datasets is empty"):
        run(_cfg(tmp_path, datasets=[]))
    _tiny_generator(tmp_path / "g.safetensors", 0)
    with pytest.raises(UserError, match="x2 model but scale=4"):
        run(_cfg(tmp_path, ckpt=str(tmp_path / "g.safetensors"), datasets=[str(photos)], scale=4))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights"))  # no AlexNet here
    with pytest.raises(UserError, match="lpips=true"):
        run(_cfg(tmp_path, datasets=[str(photos)], lpips=True))
    with pytest.raises(UserError, match="lpips=maybe is not allowed: lpips must be one of auto, true, false"):
        run(_cfg(tmp_path, datasets=[str(photos)], lpips="maybe"))
    with pytest.raises(UserError, match=r"datasets=\['a/Set5', 'b/Set5'\]: two entries have the same folder name"):
        run(_cfg(tmp_path, datasets=["a/Set5", "b/Set5"]))


def test_checkpoints_of_two_scales_or_a_row_named_bicubic_are_refused(tmp_path: Path, photos: Path) -> None:
    _tiny_generator(tmp_path / "x2.safetensors", 0)
    torch.manual_seed(0)
    x4 = SRResNet(num_features=8, num_blocks=1, scale=4)
    save_generator_file(tmp_path / "x4.safetensors", x4.state_dict(), config=TINY_G | {"scale": 4}, scale=4)
    ckpts = [str(tmp_path / "x2.safetensors"), str(tmp_path / "x4.safetensors")]
    with pytest.raises(UserError, match=r"^ckpt: the checkpoints have different scales \[2, 4\]: evaluate one scale"):
        run(_cfg(tmp_path, ckpt=ckpts, datasets=[str(photos)]))
    _tiny_generator(tmp_path / "bicubic.safetensors", 0)
    with pytest.raises(UserError, match=r"bicubic\.safetensors: a row named 'bicubic' would hide the baseline"):
        run(_cfg(tmp_path, ckpt=str(tmp_path / "bicubic.safetensors"), datasets=[str(photos)]))


@pytest.mark.slow
def test_cli_bicubic_baseline_writes_reports(tmp_path: Path, photos: Path) -> None:
    """The real Hydra app: baseline only, reports and the offline W&B run in out_dir, nothing else
    left in the working dir; a bad entry is one line on stderr."""
    env = {"TORCH_HOME": str(tmp_path / "torch")}
    work = tmp_path / "work"
    work.mkdir()
    result = run_module(
        "sr_gan.evaluate",
        "ckpt=bicubic",
        f"datasets=[{photos}]",
        "out_dir=out",
        "scale=2",
        "logger=wandb",
        cwd=work,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "no LPIPS column" in result.stdout and "bicubic" in result.stdout
    assert sorted(p.name for p in work.iterdir()) == ["out"]
    assert sorted(p.name for p in (work / "out").iterdir()) == ["results.csv", "results.json", "results.md", "wandb"]
    assert list((work / "out" / "wandb").glob("offline-run-*/run-*.wandb"))

    bad = run_module("sr_gan.evaluate", "datasets=[NoSuchSet]", cwd=work, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "NoSuchSet" in bad.stderr


def _run_checkpoint(path: Path, seed: int) -> SRResNet:
    """A Lightning-style checkpoint as sr_gan.train writes it (generator keys, config and scale)."""
    torch.manual_seed(seed)
    net = SRResNet(num_features=8, num_blocks=1, scale=SCALE)
    state = {f"generator.{key}": value for key, value in net.state_dict().items()}
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state, "sr_gan": {"generator": TINY_G, "scale": SCALE}}, path)
    return net.eval()


def test_two_runs_best_checkpoints_get_one_row_each(tmp_path: Path, photos: Path) -> None:
    """runA/checkpoints/best.ckpt and runB/checkpoints/best.ckpt: rows named by run (both were
    `checkpoints/best` before, and the run crashed at the end, writing nothing)."""
    ckpts = [tmp_path / run / "checkpoints" / "best.ckpt" for run in ("runA", "runB")]
    nets = [_run_checkpoint(path, seed) for seed, path in enumerate(ckpts)]
    rows = run(_cfg(tmp_path, ckpt=[str(p) for p in ckpts], datasets=[str(photos)]))
    assert [r["model"] for r in rows] == ["bicubic", "runA/best", "runB/best"]
    assert rows[1]["psnr_y"] != rows[2]["psnr_y"]  # two different generators, not one twice
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert report["ckpt"] == {"runA/best": str(ckpts[0]), "runB/best": str(ckpts[1])}
    hr = np.asarray(Image.open(photos / "coffee.png"))[:48, :50]
    lr = torch.round(imresize(_to_tensor(hr), 1 / SCALE).clamp(0, 1) * 255) / 255
    with torch.no_grad():
        expected = _reference(hr, _to_numpy(nets[1](lr.float())))
    assert report["per_image"]["photos"]["runB/best"]["coffee"] == pytest.approx(expected, abs=1e-4)


def test_a_table_printed_to_a_log_keeps_its_row_names_whole(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Printed to a log file or pipe (not a terminal), the table was cut to 80 columns and a run's row
    name came out as `esrgan_x4_2026-11-27_11-25-0…`, which names no run; compare's table is kept whole
    the same way."""
    monkeypatch.delenv("COLUMNS", raising=False)
    runs = ("esrgan_x4_2026-11-27_11-25-05", "esrgan_x4_2026-11-27_11-20-24")
    ckpts = [tmp_path / name / "checkpoints" / "best.ckpt" for name in runs]
    for seed, path in enumerate(ckpts):
        _run_checkpoint(path, seed)
    run(_cfg(tmp_path, ckpt=[str(p) for p in ckpts], datasets=[str(photos)], rgb=True))
    out = capsys.readouterr().out
    assert all(f"{name}/best" in out for name in runs), out


def test_model_names_stay_unique() -> None:
    names = model_names(
        [Path("s1/0/checkpoints/best.ckpt"), Path("s2/0/checkpoints/best.ckpt"), Path("s2/0/checkpoints/last.ckpt")]
    )
    assert names == ["s1/0/best", "s2/0/best", "0/last"]
    assert model_names([Path("a/psnr.safetensors"), Path("b/gan.pth")]) == ["psnr", "gan"]
    with pytest.raises(UserError, match="twice"):
        model_names([Path("g.pth"), Path("g.pth")])


def test_two_files_of_one_stem_get_one_row_each(tmp_path: Path, photos: Path) -> None:
    """ckpt=[g.safetensors,g.pth] was refused as `g.pth, g.safetensors twice`: two different
    files now give two rows named by file name; one file given twice is still refused."""
    ckpts = [tmp_path / "g.safetensors", tmp_path / "g.pth"]
    for seed, path in enumerate(ckpts):
        _tiny_generator(path, seed)
    rows = run(_cfg(tmp_path, ckpt=[str(p) for p in ckpts], datasets=[str(photos)]))
    assert [r["model"] for r in rows] == ["bicubic", "g.safetensors", "g.pth"]
    assert rows[1]["psnr_y"] != rows[2]["psnr_y"]  # two different generators, not one twice
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert report["ckpt"] == {"g.safetensors": str(ckpts[0]), "g.pth": str(ckpts[1])}
    with pytest.raises(UserError, match="twice: give each checkpoint once"):
        run(_cfg(tmp_path, ckpt=[str(ckpts[1]), str(tmp_path / "." / "g.pth")], datasets=[str(photos)]))


def test_unwritable_out_dir_fails_before_any_work(tmp_path: Path, photos: Path) -> None:
    """A file where out_dir's parent should be: one-line error, before a model is loaded."""
    (tmp_path / "a_file").write_text("not a folder")
    cfg = _cfg(tmp_path, ckpt=str(tmp_path / "missing.safetensors"), datasets=[str(photos)])
    cfg.out_dir = str(tmp_path / "a_file" / "eval")
    with pytest.raises(UserError, match="out_dir=.*a_file/eval is not writable"):
        run(cfg)  # the missing checkpoint is never reached


def test_out_dir_null_is_refused_before_any_work(tmp_path: Path, photos: Path) -> None:
    """out_dir=null: one line naming the key (it was a TypeError traceback from Path(None))."""
    cfg = _cfg(tmp_path, ckpt=str(tmp_path / "missing.safetensors"), datasets=[str(photos)])
    cfg.out_dir = None
    with pytest.raises(UserError, match=r"^out_dir is not set: add out_dir=eval"):
        run(cfg)  # the missing checkpoint is never reached


@pytest.mark.parametrize("bad", ["missing.ckpt", "run_folder"])
def test_a_missing_or_folder_ckpt_in_a_list_is_refused_before_any_model_loads(
    tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """ckpt=[good,bad]: one line naming the key and the entry, before the good file is loaded (a
    folder was `<dir>: no such weight file`, a missing file had no key and no fix)."""
    (tmp_path / "run_folder").mkdir()
    _tiny_generator(tmp_path / "g.safetensors", 0)

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("sr_gan.evaluate.load_generator", loaded)
    cfg = _cfg(tmp_path, ckpt=[str(tmp_path / "g.safetensors"), str(tmp_path / bad)], datasets=[str(photos)])
    expected = " is a folder: pass a weight file" if bad == "run_folder" else ": no such file; pass a .ckpt"
    with pytest.raises(UserError, match="^" + re.escape(f"ckpt={tmp_path / bad}{expected}")):
        run(cfg)


def test_table_is_printed_before_the_files_are_written(
    tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sr_gan.evaluate.write_reports", disk_full)
    with pytest.raises(OSError, match="No space"):
        run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE))
    assert "bicubic" in capsys.readouterr().out  # the numbers reached the console


def test_a_failed_report_write_leaves_the_previous_three_reports(
    tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """results.md/.csv/.json are one set: the disk filling up at the last of them replaces none."""
    run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE))
    out = tmp_path / "eval"
    before = {path.name: path.read_bytes() for path in out.glob("results.*")}
    assert sorted(before) == ["results.csv", "results.json", "results.md"]
    real_write = Path.write_text

    def json_fills_the_disk(path: Path, *args: Any, **kwargs: Any) -> int:
        if path.name.startswith(".results.json."):
            raise OSError(28, "No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", json_fills_the_disk)
    with pytest.raises(OSError, match="No space"):
        run(_cfg(tmp_path, datasets=[str(photos)], scale=SCALE, rgb=True))  # another table
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # and no temporaries


def test_a_folder_in_place_of_a_report_is_refused_before_any_report_is_replaced(tmp_path: Path) -> None:
    """results.md a folder: its rename failed last (IsADirectoryError's traceback), after results.json
    and results.csv were replaced: a mix of two runs."""
    (tmp_path / "results.md").mkdir()
    for name in ("results.json", "results.csv"):
        (tmp_path / name).write_text("OLD")
    rows = [{"dataset": "Set5", "model": "bicubic", "images": 5}]
    with pytest.raises(UserError, match=r"results.md is a folder, where the report's file goes: move it away"):
        evaluate_report.write_reports(rows, {"rows": rows}, tmp_path, columns=benchmark_columns(rows), caption="x")
    assert [(tmp_path / name).read_text() for name in ("results.json", "results.csv")] == ["OLD", "OLD"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.json", "results.md"]


@pytest.mark.parametrize(
    ("key", "value"), [("tile", -1), ("tile_batch", 0), ("scale", 5), ("lpips", "maybe"), ("max_pixels", 0)]
)
def test_bad_settings_are_refused_before_any_work(tmp_path: Path, key: str, value) -> None:
    with pytest.raises(UserError, match=f"{key}={value} is not allowed") as info:
        run(_cfg(tmp_path, **{key: value}))
    assert "\n" not in str(info.value)


def test_a_generator_that_is_no_config_is_refused_before_any_file_is_read(tmp_path: Path) -> None:
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "evaluate.yaml"), {"ckpt": "missing.ckpt", "generator": "abc"})
    with pytest.raises(UserError, match=r"^generator=abc is not a network config: pass the network's config"):
        run(cfg)


def test_markdown_and_console_tables_keep_the_row_order_and_mark_a_value_missing() -> None:
    """The rows in their order (bicubic first), one separator cell per column, the papers' decimals,
    `–` where a data set has no value of a metric (NaN: every image under VIF's 41 px), and on the
    console the numbers right-aligned, the text left-aligned and the notes under the table."""
    nan = float("nan")
    rows = [
        {"dataset": "Set5", "model": "bicubic", "psnr_y": 28.4213, "ssim_y": 0.81049, "lpips": 0.41236, "vif_y": nan},
        {"dataset": "Set5", "model": "esrgan", "psnr_y": 30.5, "ssim_y": 0.85, "lpips": 0.2, "vif_y": nan},
    ]
    for row in rows:
        row |= {"images": 5, "scored": {"vif_y": 0}}
    columns = benchmark_columns(rows)
    assert to_markdown(rows, columns, caption="x4") == (
        "x4\n\n"
        "| Dataset | Model | PSNR-Y | SSIM-Y | LPIPS | VIF-Y | Images |\n"
        "|---|---|---|---|---|---|---|\n"
        "| Set5 | bicubic | 28.42 | 0.8105 | 0.4124 | – | 5 |\n"
        "| Set5 | esrgan | 30.50 | 0.8500 | 0.2000 | – | 5 |\n"
        "\n- VIF-Y of Set5 has no value\n"
    )
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(rich_table(rows, columns, caption="x4"))
    text = console.export_text()
    assert "│  28.42 │ 0.8105 │" in text and "│ esrgan  │" in text  # PSNR-Y is 6 wide, Model 7
    assert "VIF-Y of Set5 has no value" in text.split("30.50")[1]


def test_a_plane_has_psnr_on_x_the_score_on_y_and_every_point_labelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plot_perception_distortion's own figure (the plane test above stubs it out): the models' line,
    the baseline as a point of its own, a label at each point, the axis titles, a PNG."""
    figures: list[Figure] = []

    class Kept(Figure):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            figures.append(self)

    monkeypatch.setattr(evaluate_report, "Figure", Kept)
    path = tmp_path / "plane.png"
    points = [("a", 30.0, 0.2), ("b", 29.0, 0.1)]
    plot_perception_distortion(points, baseline=("bicubic", 28.0, 0.4), score_label=LPIPS_LABEL, title="t", path=path)
    ((axes,),) = [figure.axes for figure in figures]
    line, baseline = axes.lines
    assert (list(line.get_xdata()), list(line.get_ydata())) == ([30.0, 29.0], [0.2, 0.1])
    assert (list(baseline.get_xdata()), list(baseline.get_ydata())) == ([28.0], [0.4])
    assert {label.get_text(): label.xy for label in axes.texts} == {
        "a": (30, 0.2),
        "b": (29, 0.1),
        "bicubic": (28, 0.4),
    }
    assert axes.get_xlabel().startswith("PSNR on Y") and axes.get_ylabel() == LPIPS_LABEL
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_wandb_table_holds_every_row_and_the_resolved_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """One W&B run from `logger.wandb` (its settings overridden by the caller's): the config with its
    interpolations resolved, the table's rows in order under the column keys, each figure under the
    key's prefix."""
    made: list[tuple[Any, dict[str, Any]]] = []
    logged: dict[str, Any] = {"images": []}

    class Recorder:
        def log_hyperparams(self, params: dict[str, Any]) -> None:
            logged["config"] = params

        def log_table(self, key: str, columns: list[str], data: list[list[Any]]) -> None:
            logged["table"] = (key, columns, data)

        def log_image(self, key: str, images: list[str]) -> None:
            logged["images"].append((key, images))

    monkeypatch.setattr(evaluate_report, "instantiate", lambda node, **run: made.append((node, run)) or Recorder())
    cfg = OmegaConf.create({"scale": 4, "out_dir": "eval_x${scale}", "logger": {"wandb": {"_target_": "x"}}})
    rows = [
        {"dataset": "Set5", "model": "bicubic", "psnr_y": 28.0, "ssim_y": 0.8, "images": 5},
        {"dataset": "Set5", "model": "g", "psnr_y": 30.0, "ssim_y": 0.85, "images": 5},
    ]
    plane = Path("eval_x4") / "perception_distortion_Set5.png"
    evaluate_report.log_to_wandb(rows, [plane], cfg, columns=benchmark_columns(rows), key="eval/results", group="g1")
    assert made == [(cfg.logger.wandb, {"group": "g1"})]
    assert logged["config"] == {"scale": 4, "out_dir": "eval_x4", "logger": {"wandb": {"_target_": "x"}}}
    assert logged["table"] == (
        "eval/results",
        ["dataset", "model", "psnr_y", "ssim_y", "images"],
        [["Set5", "bicubic", 28.0, 0.8, 5], ["Set5", "g", 30.0, 0.85, 5]],
    )
    assert logged["images"] == [("eval/perception_distortion_Set5", [str(plane)])]


@pytest.mark.parametrize(
    ("height", "width", "scored"), [(45, 45, True), (44, 44, False), (44, 90, False), (90, 44, False)]
)
def test_vif_has_a_value_from_41_by_41_pixels_after_the_crop(height: int, width: int, scored: bool) -> None:
    """torchmetrics' VIF filters need 41 x 41 pixels: a crop of 41 x 41 has a value, one narrower
    than 41 on either side has none (NaN; torchmetrics raises on it)."""
    torch.manual_seed(0)
    hr = torch.rand(2, 3, height, width, dtype=torch.float64)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    scores = vif_y(sr, hr, crop_border=2)
    assert scores.shape == (2,)
    assert bool(scores.isfinite().all()) if scored else bool(scores.isnan().all())
