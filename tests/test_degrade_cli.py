"""`python -m sr_gan.degrade`: the preview grid of the training degradations."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from skimage import data

from sr_gan.degrade import describe, main, preview
from sr_gan.errors import UserError
from sr_gan.ops import RealESRGANDegradation
from sr_gan.ops.sharpen import usm_sharpen
from tests.helpers import file_size_limit, png_bomb, run_module, tool_cfg


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)  # 451 x 300 (W x H)
    return path


def degrade_cfg(*overrides: str) -> DictConfig:
    return tool_cfg("degrade", *overrides)


def test_preview_grid_is_reproducible_and_shows_n_draws(photo: Path, tmp_path: Path) -> None:
    args = [f"input={photo}", "n=3", "crop=64"]
    first = preview(degrade_cfg(*args, f"out={tmp_path / 'a.png'}", "seed=1"))
    again = preview(degrade_cfg(*args, f"out={tmp_path / 'b.png'}", "seed=1"))
    other = preview(degrade_cfg(*args, f"out={tmp_path / 'c.png'}", "seed=2"))
    a, b, c = (np.asarray(Image.open(path)) for path in (first, again, other))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape[0] > 2 * 64 and a.shape[1] > 2 * 64  # 4 tiles (HR + 3 LR) in 2 x 2, text under each
    # the top-left tile is the training target: the USM-sharpened centre crop
    image = torch.from_numpy(data.chelsea().copy()).permute(2, 0, 1).float() / 255  # (3, 300, 451)
    crop = image[None, :, 118:182, 193:257]  # the centre 64 x 64
    target = (usm_sharpen(crop)[0].permute(1, 2, 0) * 255).round().numpy()
    assert np.abs(a[4:68, 4:68].astype(float) - target).max() <= 1
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_captions_name_the_drawn_parameters() -> None:
    degradation = instantiate(degrade_cfg().degradation)  # conf/degrade.yaml's default: realesrgan
    assert isinstance(degradation, RealESRGANDegradation) and degradation.scale == 4
    n = 6
    _, _, params = degradation(torch.rand(n, 3, 32, 32), generator=torch.Generator().manual_seed(0), return_params=True)
    for key in ("first/grey", "final/jpeg_first"):
        assert 0 < params[key].sum() < n, key  # both cases below
    for i in range(n):
        lines = describe(params, i)
        assert lines[0].startswith("1st: ") and lines[2].startswith("2nd: ") and lines[4].startswith("end: ")
        quality = params["first/jpeg_quality"][i].item()
        assert f"JPEG q{quality:.0f}" in lines[1] and f"x{params['first/resize_factor'][i].item():.2f}" in lines[1]
        assert ("gauss" in lines[1]) == bool(params["first/gaussian"][i])
        assert (" grey, JPEG" in lines[1]) == bool(params["first/grey"][i])
        assert lines[4].startswith("end: JPEG q") == bool(params["final/jpeg_first"][i])  # in the order applied
    p = {key: value[:1].clone() for key, value in params.items()}
    p["first/blur"][0], p["first/sinc"][0], p["first/kernel_family"][0] = True, False, 3  # generalized_aniso
    sx, sy, theta, beta, size = (p[f"first/{k}"].item() for k in ("sigma_x", "sigma_y", "theta", "beta", "kernel_size"))
    rotation = theta * 180 / math.pi
    expected = f"1st: generalized_aniso k{size} s={sx:.2f}/{sy:.2f} rot={rotation:.0f}deg b={beta:.2f}"
    assert describe(p, 0)[0] == expected
    assert describe({}, 0) == ["bicubic (MATLAB), 8-bit: no random draw"]


def test_preview_errors_are_one_line_and_name_the_key(photo: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"crop=1000"):
        preview(degrade_cfg(f"input={photo}", f"out={tmp_path / 'p.png'}", "crop=1000"))
    with pytest.raises(UserError, match=r"n=0"):
        preview(degrade_cfg(f"input={photo}", f"out={tmp_path / 'p.png'}", "n=0"))
    with pytest.raises(UserError, match=r"out=.*\.txt"):
        preview(degrade_cfg(f"input={photo}", f"out={tmp_path / 'p.txt'}"))
    with pytest.raises(UserError, match=r"crop=30.*multiple"):
        preview(degrade_cfg(f"input={photo}", f"out={tmp_path / 'p.png'}", "crop=30"))
    with pytest.raises(UserError, match=r"input=.*: a folder, not a file; pass an existing file"):
        preview(degrade_cfg(f"input={photo.parent}", f"out={tmp_path / 'p.png'}"))


def test_an_input_above_the_pixel_limit_names_degrades_key(tmp_path: Path) -> None:
    """The header check names the tool's own `max_pixels` (training's data.max_image_pixels is no key
    here), which lets a genuine large photo through."""
    huge = png_bomb(tmp_path / "huge.png", 20_000, 20_000)  # 4e8 pixels claimed in its header
    args = [f"input={huge}", f"out={tmp_path / 'p.png'}"]
    with pytest.raises(UserError, match=r"huge\.png is 20000x20000 .* raise max_pixels$"):
        preview(degrade_cfg(*args))
    with pytest.raises(UserError, match=r"cannot read image .*huge\.png"):  # past the header: decoded, and empty
        preview(degrade_cfg(*args, "max_pixels=null"))


def test_the_input_spelt_another_way_is_refused_as_out(photo: Path, tmp_path: Path) -> None:
    """out=<dir>/../<dir>/photo.png is the input: refused before the grid replaces the photo."""
    source = tmp_path / "photo.png"
    source.write_bytes(photo.read_bytes())
    with pytest.raises(UserError, match=r"out=.* is also the input: choose another output file"):
        preview(degrade_cfg(f"input={source}", f"out={tmp_path / '..' / tmp_path.name / 'photo.png'}"))
    assert source.read_bytes() == photo.read_bytes()


def test_the_crop_is_checked_against_the_degradations_own_scale(photo: Path, tmp_path: Path) -> None:
    """degradation.scale set apart from scale (conf/degrade.yaml: `${scale}` unless set on its own):
    a crop that is a multiple of it is taken (34 = 17 x 2, not a multiple of scale=4)."""
    out, scales = tmp_path / "p.png", ["scale=4", "degradation=bicubic", "degradation.scale=2"]
    assert preview(degrade_cfg(f"input={photo}", f"out={out}", *scales, "crop=34", "n=1")) == out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"seed": "abc"}, "seed=abc is not allowed: seed must be an integer >= 0"),
        ({"scale": "abc"}, "scale=abc is not allowed: scale must be one of 1, 2, 3, 4, 8"),
        ({"scale": "0"}, "scale=0 is not allowed: scale must be one of 1, 2, 3, 4, 8"),
        ({"n": "65"}, "n=65 is not allowed: n must be an integer >= 1 and <= 64"),
        ({"max_pixels": "0"}, "max_pixels=0 is not allowed: max_pixels must be an integer >= 1 or null"),
        ({"input": "{tiny}", "crop": "0"}, "input={tiny} is 3x2, smaller than scale=4: use an image of at least 4x4"),
        ({"out": "{tiny}/preview.png"}, "out={tiny}/preview.png: cannot write in {tiny}"),
    ],
)
def test_cli_refuses_bad_values_in_one_line_before_any_work(
    overrides: dict[str, str], message: str, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (3, 2)).save(tiny)  # smaller than the scale: nothing left after cutting to multiples of 4
    out = tmp_path / "preview.png"
    args = {"input": str(photo), "out": str(out)} | {key: value.format(tiny=tiny) for key, value in overrides.items()}
    out = Path(args["out"])
    with pytest.raises(SystemExit) as exited:
        main(degrade_cfg(*(f"{key}={value}" for key, value in args.items())))  # the CLI's function, Hydra parsed
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {message.format(tiny=tiny)}") and err.count("\n") == 1
    assert not out.exists()


def test_a_full_disk_is_one_line_and_keeps_the_previous_grid(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A grid that does not fit on the disk (here: files may not grow past 100 bytes) was PIL's
    OSError traceback, exit 1; now one line naming the file and the fix, and the previous grid
    stays whole with no temporary file beside it."""
    out = tmp_path / "preview.png"
    args = [f"input={photo}", f"out={out}", "n=1", "crop=32", "degradation=bicubic"]
    preview(degrade_cfg(*args))
    before = out.read_bytes()
    with file_size_limit(100), pytest.raises(SystemExit) as exited:
        main(degrade_cfg(*args, "seed=1"))
    assert exited.value.code == 2 and capsys.readouterr().err == (
        f"error: cannot write {out}: File too large; free space there or choose another out= "
        "(an earlier preview.png is left as it was)\n"
    )
    assert out.read_bytes() == before and sorted(tmp_path.iterdir()) == [out]


@pytest.mark.slow
def test_cli_writes_the_grid_and_reports_errors(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "preview.png"
    done = run_module("sr_gan.degrade", f"input={photo}", "n=2", "crop=32", f"out={out}", "degradation=bicubic")
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "wrote" in done.stdout
    failed = run_module("sr_gan.degrade", f"input={tmp_path / 'missing.png'}", f"out={out}")
    assert failed.returncode == 2 and failed.stderr.strip().count("\n") == 0
    assert "input=" in failed.stderr and "missing.png" in failed.stderr
