"""Upscaling users' images: kinds kept (grey, alpha, 16 bit), inputs never overwritten, failures reported."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageCms
from skimage import data as skdata
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import rgb_to_grayscale

import sr_gan.upscale as upscale_module
from sr_gan.archs import SRResNet
from sr_gan.errors import UserError
from sr_gan.imageio import read_picture, write_image
from sr_gan.ops import imresize
from sr_gan.tiling import tiled_forward
from sr_gan.upscale import find_inputs, plan_outputs, run, upscale_file, upscale_picture
from sr_gan.weights import load_generator, save_generator_file
from tests.helpers import _ctrl_c_as_in_a_terminal, child_env, run_module
from tests.helpers import png_bomb as bomb

ROOT = Path(__file__).resolve().parents[1]
SCALE = 2
TINY_G = {"_target_": "sr_gan.archs.SRResNet", "num_features": 8, "num_blocks": 1, "scale": SCALE}
RGB = skdata.astronaut()[100:124, 180:210]  # (24, 30, 3) uint8


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_generator_file(
        path, SRResNet(num_features=8, num_blocks=1, scale=SCALE).state_dict(), config=TINY_G, scale=SCALE
    )
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """One file of each kind, plus a corrupt one."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(RGB).save(folder / "rgb.png")
    Image.fromarray(RGB).save(folder / "photo.jpg", quality=95)
    Image.fromarray(RGB[..., 1]).save(folder / "grey.png")
    Image.fromarray(np.dstack([RGB, np.full(RGB.shape[:2], 77, np.uint8)])).save(folder / "rgba.png")
    write_image(folder / "rgb16.png", RGB.astype(np.uint16) * 257 + 3, fmt="png")  # 16 bits that matter
    palette = Image.fromarray(RGB).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.save(folder / "palette.png", transparency=0)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def _cfg(**overrides: object) -> DictConfig:
    cfg = OmegaConf.load(ROOT / "conf" / "upscale.yaml")
    return OmegaConf.merge(cfg, {"device": "cpu", "tile": 0, **overrides})


def _decode(path: Path) -> torch.Tensor:
    return decode_image(str(path), mode=ImageReadMode.UNCHANGED)  # (C, H, W) uint8 / uint16


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_every_kind_keeps_its_kind(tmp_path: Path, ckpt: Path, images: Path) -> None:
    before = _digests(images)
    failures = run(_cfg(ckpt=str(ckpt), input=str(images), out_dir=str(tmp_path / "out")))
    assert len(failures) == 1 and "broken.png" in failures[0] and "\n" not in failures[0]
    assert _digests(images) == before  # inputs untouched
    out = tmp_path / "out"
    expected = {  # name: (channels, dtype)
        "rgb_x2.png": (3, torch.uint8),
        "photo_x2.png": (3, torch.uint8),
        "grey_x2.png": (1, torch.uint8),
        "rgba_x2.png": (4, torch.uint8),
        "rgb16_x2.png": (3, torch.uint16),
        "palette_x2.png": (4, torch.uint8),  # palette with transparency → RGBA
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, (channels, dtype) in expected.items():
        pixels = _decode(out / name)
        assert pixels.shape == (channels, 48, 60) and pixels.dtype == dtype, name
    alpha = _decode(out / "rgba_x2.png")[3]
    assert (alpha == 77).all()  # a constant alpha stays constant under bicubic
    assert (_decode(out / "palette_x2.png")[3] < 255).any()  # the transparent index survived


def test_pixels_are_the_network_output(tmp_path: Path, ckpt: Path) -> None:
    """RGB equals the forward pass rounded; alpha equals MATLAB bicubic; grey is the luma of RGB."""
    model, _ = load_generator(ckpt)
    folder = tmp_path / "in"
    folder.mkdir()
    alpha = np.linspace(0, 255, RGB.shape[0] * RGB.shape[1]).reshape(RGB.shape[:2]).astype(np.uint8)
    Image.fromarray(np.dstack([RGB, alpha])).save(folder / "a.png")
    Image.fromarray(RGB[..., 0]).save(folder / "g.png")
    assert run(_cfg(ckpt=str(ckpt), input=str(folder))) == []  # outputs next to the inputs

    x = torch.from_numpy(RGB).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        sr = model(x).clamp(0, 1)
    got = _decode(folder / "a_x2.png").float()
    assert torch.equal(got[:3], torch.round(sr[0] * 255))
    a = torch.from_numpy(alpha)[None, None].double() / 255
    assert torch.equal(got[3], torch.round(imresize(a, SCALE).clamp(0, 1) * 255)[0, 0].float())

    grey_in = torch.from_numpy(RGB[..., 0])[None, None].float().expand(-1, 3, -1, -1) / 255
    with torch.no_grad():
        sr_grey = model(grey_in).clamp(0, 1)[0]  # (3, H, W)
    luma = 0.299 * sr_grey[0] + 0.587 * sr_grey[1] + 0.114 * sr_grey[2]
    assert (_decode(folder / "g_x2.png")[0].float() - luma * 255).abs().max() <= 0.51


def test_16_bit_levels_survive(tmp_path: Path) -> None:
    """A 16-bit PNG is read with all 16 bits and written back with 16 bits (identity network)."""
    pixels = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * 2731 + 1).astype(np.uint16)  # (H, W, RGBA)
    write_image(tmp_path / "x.png", pixels, fmt="png")
    picture = read_picture(tmp_path / "x.png")
    assert picture.bits == 16 and picture.alpha is not None and not picture.grey
    assert torch.equal(
        torch.round(picture.rgb[0] * 65535).to(torch.int32),
        torch.from_numpy(pixels[..., :3].astype(np.int32)).permute(2, 0, 1),
    )


def test_a_16_bit_picture_to_an_8_bit_format_is_rounded_to_8_bits(tmp_path: Path, ckpt: Path) -> None:
    """format=jpg (or webp) stores 8 bits: a 16-bit PNG's output is rounded to 8 bits for it (refused
    as uint16 otherwise), the 16-bit PNG output of the same picture up to JPEG's losses."""
    write_image(tmp_path / "deep.png", RGB.astype(np.uint16) * 257 + 3, fmt="png")
    for fmt in ("png", "jpg"):
        assert (
            run(_cfg(ckpt=str(ckpt), input=str(tmp_path / "deep.png"), out_dir=str(tmp_path / fmt), format=fmt)) == []
        )
    deep, shallow = _decode(tmp_path / "png" / "deep_x2.png"), _decode(tmp_path / "jpg" / "deep_x2.jpg")
    assert deep.dtype == torch.uint16 and shallow.dtype == torch.uint8 and shallow.shape == deep.shape
    blocks = [torch.nn.functional.avg_pool2d(x.float()[None], 8) for x in (shallow, deep.float() / 257)]
    assert (blocks[0] - blocks[1]).abs().max() < 4  # JPEG about keeps 8x8 block means: the same picture


def test_exif_rotation_and_unwritable_output(tmp_path: Path, ckpt: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(RGB).save(tmp_path / "phone.jpg", exif=exif)
    assert read_picture(tmp_path / "phone.jpg").rgb.shape == (1, 3, 30, 24)  # (H, W) as displayed
    (tmp_path / "blocked").write_text("a file where the output folder should be")
    model, _ = load_generator(ckpt)
    failure = upscale_file(
        model, tmp_path / "phone.jpg", tmp_path / "blocked" / "phone_x2.png", scale=SCALE, cfg=_cfg()
    )
    assert failure is not None and failure.startswith("cannot write") and "\n" not in failure


def test_output_names_never_hit_an_input(tmp_path: Path) -> None:
    a_png, a_jpg, b_png = tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "b.png"
    plan = plan_outputs([a_png, a_jpg, b_png], out_dir=None, suffix="", fmt="png")
    assert "would overwrite an input" in plan[a_png]  # a.png → a.png
    assert str(plan[a_png]).endswith(
        "keep a suffix (drop suffix=: its default _x{scale}) or set out_dir= to another folder"
    )
    assert "would overwrite an input" in plan[a_jpg]  # a.jpg → a.png, also an input
    assert "would overwrite an input" in plan[b_png]
    plan = plan_outputs([a_png, a_jpg], out_dir=tmp_path / "out", suffix="_x4", fmt="png")
    assert plan[a_png] == tmp_path / "out" / "a_x4.png"
    assert "also the output of" in plan[a_jpg]  # two inputs, one output name: the second is refused


def test_two_inputs_of_one_output_name_are_told_what_parts_them(tmp_path: Path) -> None:
    """It said "set out_dir= or rename" with out_dir set, and out_dir cannot part two files of one folder."""
    out = tmp_path / "out"
    bmp, jpg, other = tmp_path / "bad" / "trunc.bmp", tmp_path / "bad" / "trunc.jpg", tmp_path / "good" / "trunc.png"
    for out_dir in (None, out):
        plan = plan_outputs([bmp, jpg], out_dir=out_dir, suffix="_x4", fmt="png")
        assert plan[jpg] == (
            f"output {(out_dir or bmp.parent) / 'trunc_x4.png'} is also the output of {bmp}, a picture of the same "
            "name in the same folder: rename one of them"
        )
    plan = plan_outputs([bmp, other], out_dir=out, suffix="_x4", fmt="png")
    assert plan[other] == (
        f"output {out / 'trunc_x4.png'} is also the output of {bmp}, a picture of the same name in another "
        f"folder, both upscaled into out_dir={out}: rename one, or upscale each folder in a run of its own with its "
        "own out_dir="
    )


def test_inputs_from_folder_glob_and_file(tmp_path: Path, images: Path) -> None:
    (images / "notes.txt").write_text("not an image")
    (images / "rgb_x2.png").write_bytes((images / "rgb.png").read_bytes())  # an earlier output
    from_folder, skipped = find_inputs(str(images), suffix="_x2")
    assert [p.name for p in from_folder] == sorted(
        ["broken.png", "grey.png", "palette.png", "photo.jpg", "rgb.png", "rgb16.png", "rgba.png"]
    )
    assert skipped == [images / "rgb_x2.png"]
    assert [p.name for p in find_inputs(str(images / "r*.png"), suffix="_x2")[0]] == [
        "rgb.png",
        "rgb16.png",
        "rgba.png",
    ]
    assert find_inputs(str(images / "rgb_x2.png"), suffix="_x2") == ([images / "rgb_x2.png"], [])  # named explicitly
    with pytest.raises(UserError, match="names no image"):
        find_inputs(str(tmp_path / "nothing*.png"), suffix="_x2")


def test_precision_choices(tmp_path: Path, ckpt: Path, images: Path) -> None:
    with pytest.raises(UserError, match="fp16 needs a CUDA"):
        run(_cfg(ckpt=str(ckpt), input=str(images), precision="fp16"))
    model, _ = load_generator(ckpt)
    picture = read_picture(images / "rgb.png")
    full = upscale_picture(model, picture, scale=SCALE, tile=0, overlap=0, dtype=None).astype(int)
    half = upscale_picture(model, picture, scale=SCALE, tile=0, overlap=0, dtype=torch.bfloat16).astype(int)
    assert 0 < np.abs(full - half).max() < 0.05 * 255  # bf16 autocast on the CPU: close, not equal
    for precision, expected in (("fp32", full), ("bf16", half)):  # the setting reaches the network
        out = tmp_path / precision
        assert run(_cfg(ckpt=str(ckpt), input=str(images / "rgb.png"), out_dir=str(out), precision=precision)) == []
        assert np.array_equal(_decode(out / "rgb_x2.png").permute(1, 2, 0).numpy(), expected), precision


@pytest.mark.slow
def test_cli_reports_the_corrupt_file_and_writes_the_rest(tmp_path: Path, ckpt: Path, images: Path) -> None:
    result = run_module("sr_gan.upscale", f"ckpt={ckpt}", f"input={images}/*.png", "tile=16", cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: cannot read")]
    assert len(errors) == 1 and "broken.png" in errors[0]
    written = sorted(p.name for p in images.glob("*_x2.png"))
    assert written == sorted(["grey_x2.png", "palette_x2.png", "rgb16_x2.png", "rgba_x2.png", "rgb_x2.png"])
    assert not list(tmp_path.glob("*.log")) and not (tmp_path / "outputs").exists()  # no Hydra litter


def test_empty_suffix_keeps_every_image_of_a_folder(images: Path) -> None:
    """suffix= (outputs beside the inputs under out_dir) must not read as 'every stem ends in it'."""
    assert len(find_inputs(str(images), suffix="")[0]) == 7


def test_a_decompression_bomb_fails_alone(tmp_path: Path, ckpt: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(RGB).save(folder / "ok.png")
    bomb(folder / "bomb.png", 30_000, 30_000)  # 9 * 10**8 pixels claimed
    failures = run(_cfg(ckpt=str(ckpt), input=str(folder), out_dir=str(tmp_path / "out")))
    assert len(failures) == 1 and "bomb.png is 30000x30000" in failures[0] and "raise max_pixels" in failures[0]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ok_x2.png"]
    with pytest.raises(UserError, match="max_pixels=many is not allowed: max_pixels must be an integer >= 1 or null"):
        run(_cfg(ckpt=str(ckpt), input=str(folder), max_pixels="many"))


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("tile", "abc", "an integer >= 0"),
        ("tile_overlap", -1, "an integer >= 0"),
        ("tile_batch", 0, "an integer >= 1"),
        ("precision", "fp8", "one of fp32, bf16, fp16"),
        ("format", "gif", "one of png, jpg, jpeg, webp"),
        ("suffix", None, "a string"),  # suffix=null named outputs aNone.png
        ("quality", 0, "an integer >= 1 and <= 100 or null"),
        ("quality", 101, "an integer >= 1 and <= 100 or null"),
    ],
)
def test_bad_settings_are_one_line_before_any_work(ckpt: Path, images: Path, key: str, value, rule: str) -> None:
    shown = "null" if value is None else value
    with pytest.raises(UserError, match=f"{key}={shown} is not allowed: {key} must be {rule}") as info:
        run(_cfg(ckpt=str(ckpt), input=str(images), **{key: value}))
    assert "\n" not in str(info.value)


def test_quality_with_a_lossless_format_is_refused(ckpt: Path, images: Path) -> None:
    with pytest.raises(UserError) as info:
        run(_cfg(ckpt=str(ckpt), input=str(images), quality=90))
    assert str(info.value) == (
        "quality=90 sets the compression of format=jpg or webp; format=png is lossless: drop quality= or choose "
        "format=jpg or webp"
    )


@pytest.mark.parametrize("quality", [None, 60])
def test_quality_reaches_the_jpeg_writer(tmp_path: Path, ckpt: Path, quality: int | None) -> None:
    Image.fromarray(RGB).save(tmp_path / "in.png")
    assert run(_cfg(ckpt=str(ckpt), input=str(tmp_path / "in.png"), format="jpg", quality=quality)) == []
    Image.fromarray(RGB).save(tmp_path / "reference.jpg", quality=quality or 95)
    with Image.open(tmp_path / "in_x2.jpg") as written, Image.open(tmp_path / "reference.jpg") as reference:
        assert written.quantization == reference.quantization


KINDS = {  # name: (H, W, C) pixels
    "rgb8": RGB,
    "grey8": RGB[..., 1:2],
    "rgba8": np.dstack([RGB, np.random.default_rng(0).integers(0, 256, RGB.shape[:2])]).astype(np.uint8),
    "rgb16": RGB.astype(np.uint16) * 257 + np.random.default_rng(1).integers(0, 257, RGB.shape).astype(np.uint16),
    "greyalpha16": np.dstack([RGB[..., :1], RGB[..., 2:]]).astype(np.uint16) * 257 + 7,
}


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_tiles_equal_the_whole_image_path(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Bit-identical to what upscaling gave before streaming: the float SR image of tiled_forward
    (the evaluate path, same tiles), clamped, grey taken as luma, rounded once to the file's bits;
    alpha by imresize of the whole channel. Tiles of 8 px and alpha strips of 5 rows exercise the
    seams between stored pieces."""
    monkeypatch.setattr(upscale_module, "ALPHA_STRIP_ROWS", 5)
    pixels = KINDS[kind]
    write_image(tmp_path / f"{kind}.png", pixels, fmt="png")
    assert run(_cfg(ckpt=str(ckpt), input=str(tmp_path / f"{kind}.png"), tile=8, tile_overlap=3)) == []
    got = _decode(tmp_path / f"{kind}_x2.png").permute(1, 2, 0).numpy()  # (2H, 2W, C)

    model, _ = load_generator(ckpt)
    bits = 16 if pixels.dtype == np.uint16 else 8
    x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None] / (2**bits - 1)  # (1, C, H, W)
    colours = 3 if pixels.shape[-1] >= 3 else 1
    sr = tiled_forward(model, x[:, :colours].expand(-1, 3, -1, -1), scale=SCALE, tile=8, overlap=3).clamp(0, 1)
    planes = [rgb_to_grayscale(sr) if colours == 1 else sr]
    if pixels.shape[-1] in (2, 4):
        planes.append(imresize(x[:, colours:].double(), SCALE).float())
    expected = torch.cat(planes, 1)[0].clamp(0, 1).mul(2**bits - 1).round().permute(1, 2, 0).numpy()
    assert got.dtype == pixels.dtype and np.array_equal(got, expected)


@pytest.mark.slow
def test_memory_stays_near_the_output_size() -> None:
    """600x450 at x4 (benchmarks/bench_upscale_memory in a fresh process): peak RSS growth after
    loading the model stays within the 8-bit output plus one tile and fixed costs.

    Bound, MiB: the output 2400x1800x3 bytes = 12.4; the LR image as float32 (1, 3, 450, 600) = 3.1;
    a tile = 10 (64 + 2 x 4 = 72 LR px windows, 288 x 288 at HR: RRDBNet with 2 features keeps about
    6 maps of 2 channels float32 there, 4 MiB, and a 3x3 convolution unfolds its input into 2 x 9
    channels, 6 MiB); PNG rows, zlib state, allocator and Python: 20. Total 45. The float32 output
    alone is 49 MiB: before streaming the growth was 151 MiB, now it is 30-33 MiB (2-core CPU).
    """
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_upscale_memory",
            *"--sizes 600x450 --tile 64 --overlap 4 --features 2 --json".split(),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    growth = json.loads(result.stdout.strip().splitlines()[-1])["growth_mb"]
    assert growth < 45, f"peak RSS grew by {growth:.0f} MiB"


@pytest.mark.parametrize(("shape", "scale", "rows"), [((7, 11), 4, 5), ((1, 3), 2, 256), ((5, 2), 3, 4)])
def test_alpha_strips_equal_the_dense_imresize(shape: tuple[int, int], scale: int, rows: int) -> None:
    """The taps form of the alpha enlargement gives MATLAB's imresize (dense matrices), strip by strip."""
    alpha = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    strips = list(upscale_module._alpha_strips(alpha, scale, rows))
    assert [top for top, _ in strips] == list(range(0, shape[0] * scale, rows))
    expected = imresize(alpha[None], scale)[0]  # (h·s, w·s)
    torch.testing.assert_close(torch.cat([strip for _, strip in strips]), expected, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_alpha_enlargement_memory_is_a_strip_not_the_side_squared() -> None:
    """A 4000 px tall alpha at x4 in a fresh process: the dense (16000, 4000) float64 resize matrix
    was 488 MiB (and a 3000x4000 alpha took 840 MiB, 38.6 s); the taps form keeps a strip."""
    script = (
        "import torch, json, pathlib\n"
        "from sr_gan.upscale import _alpha_strips\n"
        "def hwm():\n"
        "    line = [l for l in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')]\n"
        "    return int(line[0].split()[1]) / 1024\n"
        "alpha = torch.rand(4000, 3, dtype=torch.float64)\n"
        "before = hwm()\n"
        "for _ in _alpha_strips(alpha, 4, 256): pass\n"
        "print(json.dumps(hwm() - before))\n"
    )
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the peak memory from /proc (Linux)")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=child_env(), timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) < 32  # MiB


def test_a_plain_state_dict_of_another_network_upscales_with_its_generator_config(tmp_path: Path) -> None:
    """A .pth with no config that is no RRDBNet: `generator` names the network (as in evaluate)."""
    config = {"_target_": "sr_gan.archs.SRResNet", "num_features": 8, "num_blocks": 1, "scale": 4}
    torch.save(SRResNet(num_features=8, num_blocks=1).state_dict(), tmp_path / "srresnet.pth")
    write_image(tmp_path / "in.png", np.full((8, 8, 3), 128, dtype=np.uint8), fmt="png")
    with pytest.raises(UserError, match="cannot infer the RRDBNet config"):
        run(_cfg(ckpt=str(tmp_path / "srresnet.pth"), input=str(tmp_path / "in.png")))
    with pytest.raises(UserError, match="generator=abc is not a network config"):
        run(_cfg(ckpt=str(tmp_path / "srresnet.pth"), input=str(tmp_path / "in.png"), generator="abc"))
    assert run(_cfg(ckpt=str(tmp_path / "srresnet.pth"), input=str(tmp_path / "in.png"), generator=config)) == []
    assert _decode(tmp_path / "in_x4.png").shape == (3, 32, 32)


@pytest.mark.parametrize("suffix", ["{foo}", "{scale", "_x{0}", "{scale[0]}", "{scale:>{width}}"])
def test_a_suffix_with_another_field_is_one_line(ckpt: Path, images: Path, suffix: str) -> None:
    with pytest.raises(
        UserError, match=r"suffix=.*only \{scale\} may be used \(e\.g\. \"suffix='_x\{scale\}'\"\)"
    ) as info:
        run(_cfg(ckpt=str(ckpt), input=str(images / "rgb.png"), suffix=suffix))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", ["/../../evil", "_x{scale}/sub", "\\..\\evil"])
def test_a_suffix_with_a_path_separator_is_refused(tmp_path: Path, ckpt: Path, images: Path, suffix: str) -> None:
    """A separator would put outputs outside out_dir (or beside the input): refused before anything is written."""
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UserError, match="suffix=.* path separator"):
        run(_cfg(ckpt=str(ckpt), input=str(images / "rgb.png"), out_dir=str(tmp_path / "out" / "x4"), suffix=suffix))
    assert sorted(tmp_path.rglob("*")) == before


def test_an_empty_suffix_beside_the_inputs_is_refused(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """photo.jpg → photo.png would replace the user's own photo.png, which is no input of the run:
    out_dir unset, or out_dir one of the inputs' folders (here `.`, the run started in it)."""
    folder = tmp_path / "img2"
    folder.mkdir()
    Image.fromarray(RGB).save(folder / "photo.jpg", quality=95)
    Image.fromarray(RGB[::-1]).save(folder / "photo.png")
    before = _digests(folder)
    monkeypatch.chdir(folder)
    for pattern, out_dir in ((str(folder / "*.jpg"), None), (str(folder / "photo.jpg"), None), ("photo.jpg", ".")):
        with pytest.raises(UserError, match=r"suffix='' with out_dir.*drop suffix= \(its default _x\{scale\}\)"):
            run(_cfg(ckpt=str(ckpt), input=pattern, suffix="", out_dir=out_dir))
        assert _digests(folder) == before
    assert run(_cfg(ckpt=str(ckpt), input=str(folder / "photo.jpg"), suffix="", out_dir=str(tmp_path / "out"))) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["photo.png"]
    for _ in range(2):  # the default suffix: a re-run replaces its own earlier output
        assert run(_cfg(ckpt=str(ckpt), input=str(folder / "*.jpg"))) == []
    assert sorted(p.name for p in folder.iterdir()) == ["photo.jpg", "photo.png", "photo_x2.png"]


def test_an_unwritable_output_folder_stops_the_run_before_any_upscaling(
    tmp_path: Path, ckpt: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked up front (out_dir, or each input's folder when it is unset), not after hours of compute."""
    monkeypatch.setattr(upscale_module, "upscale_picture", lambda *a, **k: pytest.fail("upscaled before the check"))
    (tmp_path / "blocked").write_text("a file where the output folder should be")
    with pytest.raises(UserError, match=r"out_dir=.*blocked[/\\]x2 is not writable"):
        run(_cfg(ckpt=str(ckpt), input=str(images), out_dir=str(tmp_path / "blocked" / "x2")))
    (images / "sub").mkdir()
    Image.fromarray(RGB).save(images / "sub" / "b.png")
    checked = []
    monkeypatch.setattr(upscale_module, "check_writable", lambda folder, **_: checked.append(folder))
    with pytest.raises(pytest.fail.Exception, match="upscaled before the check"):
        run(_cfg(ckpt=str(ckpt), input=str(images / "**" / "*.png")))
    assert sorted(checked) == [images, images / "sub"]  # once per folder, before the first image


def test_temporaries_of_a_killed_earlier_run_are_removed(tmp_path: Path, ckpt: Path, images: Path) -> None:
    """A `kill -9` mid-write left `.rgb_x2.png.<hex>.tmp` beside the output; other names stay."""
    stale = images / f".rgb_x2.png.{'ab' * 16}.tmp"
    other = images / f".rgb16_x2.png.{'ab' * 16}.tmp"  # of an output this run does not write
    for path in (stale, other):
        path.write_bytes(b"half a png")
    assert run(_cfg(ckpt=str(ckpt), input=str(images / "rgb.png"))) == []
    assert (images / "rgb_x2.png").is_file() and not stale.exists() and other.exists()


def test_weights_holding_nan_are_refused_before_any_image_is_written(tmp_path: Path, images: Path) -> None:
    torch.manual_seed(0)
    state = SRResNet(num_features=8, num_blocks=1, scale=SCALE).state_dict()
    state["conv_first.weight"] = torch.full_like(state["conv_first.weight"], float("nan"))
    save_generator_file(tmp_path / "nan.safetensors", state, config=TINY_G, scale=SCALE)
    out = tmp_path / "out"
    result = run_module(
        "sr_gan.upscale", "ckpt=nan.safetensors", f"input={images}/rgb.png", f"out_dir={out}", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: ckpt: nan.safetensors: 1 tensors hold NaN/Inf (e.g. conv_first.weight): the file is damaged or "
        "from a diverged run"
    ]
    assert not list(out.glob("*"))


@pytest.mark.parametrize(("tool", "key"), [("upscale", "tile:"), ("degrade", "degradation=realesrgan|bicubic")])
def test_help_lists_the_tools_own_keys_not_the_training_groups(tool: str, key: str) -> None:
    """Hydra's default --help offers every group under conf/ (model=..., loss=...): a file tool refuses them."""
    result = run_module(f"sr_gan.{tool}", "--help", timeout=120)
    assert result.returncode == 0 and key in result.stdout
    assert "model: rrdb" not in result.stdout and "Configuration groups" not in result.stdout


def test_an_output_too_large_for_its_format_fails_alone_before_the_compute(tmp_path: Path, ckpt: Path) -> None:
    """WebP stores at most 16383 px a side (JPEG 65500): such an output is one line for its file, known
    from the input's size before any upscaling, and the other files are written (it was a traceback
    from Pillow after the compute, and the rest of the folder was never tried)."""
    folder = tmp_path / "wide"
    folder.mkdir()
    Image.fromarray(RGB[:4, :20]).save(folder / "a_small.png")
    Image.fromarray(np.tile(RGB[:2, :1], (1, 8200, 1))).save(folder / "b_wide.png")  # x2: 16400 px wide
    Image.fromarray(RGB[:4, :20]).save(folder / "c_small.png")
    failures = run(_cfg(ckpt=str(ckpt), input=str(folder), out_dir=str(tmp_path / "out"), format="webp"))
    assert failures == [
        "b_wide.png: its x2 output, 16400x4 px, is larger than format=webp can store (16383 px a side): use format=png"
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_small_x2.webp", "c_small_x2.webp"]


def test_when_every_output_is_refused_the_summary_names_no_folder(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing written: out_dir is never made, and the summary does not say the images went there
    (it read "0 of 1 image(s) written to <out_dir>", a folder that does not exist)."""
    folder = tmp_path / "wide"
    folder.mkdir()
    Image.fromarray(np.tile(RGB[:2, :1], (1, 8200, 1))).save(folder / "wide.png")  # x2: 16400 px wide
    out_dir = tmp_path / "out"
    failures = run(_cfg(ckpt=str(ckpt), input=str(folder), out_dir=str(out_dir), format="webp"))
    assert len(failures) == 1 and not out_dir.exists()
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary.startswith("0 of 1 image(s) written") and str(out_dir) not in summary


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_transparent_colour_becomes_alpha(tmp_path: Path, ckpt: Path, mode: str) -> None:
    """A PNG's tRNS colour key (8-bit grey or RGB) is transparency: read as an alpha channel (0 where the
    pixel has the key colour) and enlarged with the picture, as for palette PNGs (torchvision drops it)."""
    pixels = RGB.copy() if mode == "RGB" else RGB[..., 1].copy()
    key = (1, 2, 3) if mode == "RGB" else 1
    pixels[0, 0] = key
    Image.fromarray(pixels).save(tmp_path / "keyed.png", transparency=key)
    picture = read_picture(tmp_path / "keyed.png")
    assert (
        picture.alpha is not None
        and picture.alpha[0, 0, 0, 0] == 0
        and picture.alpha.sum() == picture.alpha.numel() - 1
    )
    assert run(_cfg(ckpt=str(ckpt), input=str(tmp_path / "keyed.png"), out_dir=str(tmp_path / "out"))) == []
    channels = 4 if mode == "RGB" else 2
    assert _decode(tmp_path / "out" / "keyed_x2.png").shape == (channels, 24 * SCALE, 30 * SCALE)


def test_ctrl_c_between_images_is_one_line_counting_the_written_ones(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while the second of three images is upscaled: exit status 130 and one line saying how many
    were written (it was a 104-line KeyboardInterrupt traceback); the first output is whole, the rest absent."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in "abc":
        Image.fromarray(RGB).save(folder / f"{name}.png")
    calls = []

    def pressed_on_the_second(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return upscale_picture(*args, **kwargs)

    monkeypatch.setattr(upscale_module, "upscale_picture", pressed_on_the_second)
    out = tmp_path / "out"
    try:
        with pytest.raises(SystemExit) as stopped:
            run(_cfg(ckpt=str(ckpt), input=str(folder), out_dir=str(out)))
    except KeyboardInterrupt:  # would stop the test session
        pytest.fail("the Ctrl-C escaped run as a KeyboardInterrupt (a traceback)")
    assert stopped.value.code == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"Ctrl-C: stopped with 1 of 3 image(s) written to {out}, each whole; the one in progress and the rest were not"
    )
    assert [p.name for p in out.iterdir()] == ["a_x2.png"] and _decode(out / "a_x2.png").shape == (3, 48, 60)


@pytest.mark.slow
def test_cli_ctrl_c_is_one_line_and_exit_130(tmp_path: Path, ckpt: Path) -> None:
    """A real SIGINT to the command (its process group, as a terminal sends it) while a large image is tiled."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(RGB).save(folder / "a.png")
    Image.fromarray(np.tile(RGB, (60, 50, 1))).save(folder / "b.png")  # 1440x1500: many tiles of 16 px
    command = [sys.executable, "-m", "sr_gan.upscale", f"ckpt={ckpt}", f"input={folder}", "tile=16", "out_dir=out"]
    child = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=child_env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "out" / "a_x2.png").exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and "x2 on cpu" not in line]  # the progress bar
    assert lines == [
        "Ctrl-C: stopped with 1 of 2 image(s) written to out, each whole; the one in progress and the rest were not"
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x2.png"]  # no temporary file of b left


def test_a_16_bit_colour_tiff_is_one_warning_line_and_still_written(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tifffile = pytest.importorskip("tifffile")  # scikit-image's dependency: Pillow cannot write one
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, RGB.astype(np.uint16) * 257, photometric="rgb")
    assert run(_cfg(ckpt=str(ckpt), input=str(path), out_dir=str(tmp_path / "out"))) == []
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if "warning" in line.lower()] == [
        f"warning: {path} is a 16-bit colour TIFF, which is read as 8 bits: save it as a 16-bit PNG to keep 16"
    ]
    assert (tmp_path / "out" / "rgb16_x2.png").exists()


def test_inputs_skipped_as_earlier_outputs_are_reported(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """suffix='{scale}' at x2 takes IMG_0002.png for an earlier output: it was dropped without a word."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("IMG_0001.png", "IMG_0002.png"):
        Image.fromarray(RGB).save(folder / name)
    assert run(_cfg(ckpt=str(ckpt), input=str(folder), out_dir=str(tmp_path / "out"), suffix="{scale}")) == []
    skipped = folder / "IMG_0002.png"
    line = f"skipped 1 file(s) whose names end in the output suffix '2' (outputs of an earlier run?): {skipped}"
    assert line in capsys.readouterr().err.splitlines()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["IMG_00012.png"]


def test_a_folder_of_earlier_outputs_only_says_so(tmp_path: Path, ckpt: Path) -> None:
    """It said "names no image file" of a folder holding scan_x2.png."""
    Image.fromarray(RGB).save(tmp_path / "scan_x2.png")
    with pytest.raises(UserError) as info:
        find_inputs(str(tmp_path), suffix="_x2")
    assert str(info.value) == (
        f"input={tmp_path}: all its 1 image file(s) end in the output suffix '_x2' (outputs of an earlier run?), "
        f"e.g. {tmp_path / 'scan_x2.png'}: name one file as input= to upscale it, or set another suffix="
    )


SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize(("fmt", "deep"), [("png", False), ("png", True), ("jpg", False), ("webp", False)])
def test_the_inputs_icc_profile_is_carried_to_the_output(tmp_path: Path, ckpt: Path, fmt: str, deep: bool) -> None:
    """It was dropped: a wide-gamut photo's output shifted colour. PNG (8 and 16 bit, our encoder's
    iCCP chunk), JPEG and WebP keep it."""
    source = tmp_path / ("in.png" if deep else "in.jpg")
    if deep:
        write_image(source, RGB.astype(np.uint16) * 257, fmt="png", icc=SRGB_ICC)
    else:
        Image.fromarray(RGB).save(source, quality=95, icc_profile=SRGB_ICC)
    assert run(_cfg(ckpt=str(ckpt), input=str(source), out_dir=str(tmp_path / "out"), format=fmt)) == []
    with Image.open(tmp_path / "out" / f"in_x2.{fmt}") as out:
        assert out.info.get("icc_profile") == SRGB_ICC and out.size == (60, 48)
    if fmt == "png":  # libpng (torchvision) reads the chunk too, and the 16 bits
        assert _decode(tmp_path / "out" / "in_x2.png").dtype == (torch.uint16 if deep else torch.uint8)


def test_a_profile_of_another_colour_space_is_not_carried(tmp_path: Path, ckpt: Path) -> None:
    """A grey picture's output gets no RGB profile (nor an RGB one a CMYK profile): it would misdescribe it."""
    Image.fromarray(RGB[..., 1]).save(tmp_path / "grey.png", icc_profile=SRGB_ICC)
    assert read_picture(tmp_path / "grey.png").icc is None
    Image.fromarray(RGB).save(tmp_path / "rgb.png", icc_profile=SRGB_ICC)
    assert read_picture(tmp_path / "rgb.png").icc == SRGB_ICC


def test_an_unwritable_folder_beside_the_inputs_asks_for_out_dir(
    ckpt: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(folder: Path, **_: object) -> None:
        raise UserError(f"{folder} is not writable")

    monkeypatch.setattr(upscale_module, "check_writable", refuse)
    with pytest.raises(UserError, match=rf"^cannot write the outputs beside the inputs in {images}: set out_dir= to"):
        run(_cfg(ckpt=str(ckpt), input=str(images)))


def test_a_refused_output_name_fails_alone_and_the_others_are_written(tmp_path: Path, ckpt: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(RGB).save(folder / "photo.bmp")
    Image.fromarray(RGB).save(folder / "photo.jpg")
    failures = run(_cfg(ckpt=str(ckpt), input=str(folder)))
    assert failures == [
        f"output {folder / 'photo_x2.png'} is also the output of {folder / 'photo.bmp'}, a picture of the same name "
        "in the same folder: rename one of them"
    ]
    assert _decode(folder / "photo_x2.png").shape == (3, 2 * RGB.shape[0], 2 * RGB.shape[1])


def test_alpha_to_jpeg_fails_alone_naming_the_file(tmp_path: Path, ckpt: Path, images: Path) -> None:
    failures = run(_cfg(ckpt=str(ckpt), input=str(images / "*.png"), out_dir=str(tmp_path / "out"), format="jpg"))
    assert "format=jpg cannot store the alpha channel of rgba.png: use format=png" in failures
    assert (tmp_path / "out" / "rgb_x2.jpg").is_file() and not (tmp_path / "out" / "rgba_x2.jpg").exists()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (torch.OutOfMemoryError, "out of memory at tile=0, tile_batch=1: lower them (tile=0 is no tiling)"),
        (MemoryError, "not enough memory for its x2 output image: upscale a smaller image (or crop it)"),
    ],
    ids=["device", "host"],
)
def test_running_out_of_memory_fails_that_image_alone(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, error: type[Exception], message: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(RGB).save(folder / name)
    compute, calls = upscale_module.upscale_picture, []

    def short_of_memory(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(args)
        if len(calls) == 1:  # a.png's
            raise error("no memory")
        return compute(*args, **kwargs)

    monkeypatch.setattr(upscale_module, "upscale_picture", short_of_memory)
    failures = run(_cfg(ckpt=str(ckpt), input=str(folder), out_dir=str(tmp_path / "out")))
    assert failures == [f"{folder / 'a.png'}: {message}"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b_x2.png"]


def test_input_unset_is_one_line(ckpt: Path) -> None:
    with pytest.raises(UserError, match=r"^input is not set: add input=photos/ \(a file, a folder or a quoted glob\)$"):
        run(_cfg(ckpt=str(ckpt), input=None))


def test_a_warning_of_another_kind_is_shown_as_python_shows_it(
    tmp_path: Path, ckpt: Path, images: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not turned into a `warning:` line (that is for InputWarning, the file's own): handed on to
    Python's `warnings.showwarning` (pytest's recorder here; stderr in a terminal)."""

    def warns(*args: object, **kwargs: object) -> None:
        warnings.warn("a library's own warning", UserWarning, stacklevel=1)

    monkeypatch.setattr(upscale_module, "upscale_file", warns)
    with pytest.warns(UserWarning, match="a library's own warning"):
        assert run(_cfg(ckpt=str(ckpt), input=str(images / "rgb.png"), out_dir=str(tmp_path / "out"))) == []
    assert "warning: a library's own warning" not in capsys.readouterr().err


def test_ctrl_c_while_the_weights_load_is_one_line_and_exit_130(
    ckpt: Path, images: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(upscale_module, "load_generator", interrupted)
    with pytest.raises(SystemExit) as stopped:
        upscale_module.main(_cfg(ckpt=str(ckpt), input=str(images)))
    assert stopped.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["Ctrl-C: stopped before any image was upscaled"]
