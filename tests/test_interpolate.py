"""Network interpolation (ESRGAN Sec. 3.4): exact end points, the mean, refusals, the CLI."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from sr_gan.archs import SRResNet
from sr_gan.interpolate import interpolate_files, interpolate_state_dicts, main
from sr_gan.weights import load_generator, load_state_file, save_generator_file
from tests.helpers import run_module, tool_cfg

CONFIG = {"_target_": "sr_gan.archs.RRDBNet", "num_features": 8, "num_blocks": 1, "growth_channels": 4, "scale": 4}


def state(seed: int) -> dict[str, torch.Tensor]:
    """Float weights of awkward magnitudes, plus an integer buffer as BatchNorm has."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=generator) * 1e3,
        "conv.bias": torch.rand(4, generator=generator) * 1e-3,
        "norm.num_batches_tracked": torch.tensor(seed * 10 + 1),
    }


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_end_points_are_exact(alpha: float) -> None:
    psnr, gan = state(0), state(1)
    expected = psnr if alpha == 0 else gan
    result = interpolate_state_dicts(psnr, gan, alpha)
    assert result.keys() == expected.keys() and all(torch.equal(result[k], expected[k]) for k in expected)


def test_half_is_the_mean_and_counters_come_from_the_nearer_end() -> None:
    psnr, gan = state(0), state(1)
    half = interpolate_state_dicts(psnr, gan, 0.5)
    for key in ("conv.weight", "conv.bias"):
        torch.testing.assert_close(half[key], (psnr[key] + gan[key]) / 2)
    assert half["norm.num_batches_tracked"] == gan["norm.num_batches_tracked"]
    assert interpolate_state_dicts(psnr, gan, 0.3)["norm.num_batches_tracked"] == psnr["norm.num_batches_tracked"]
    quarter = interpolate_state_dicts(psnr, gan, 0.25)["conv.bias"]
    torch.testing.assert_close(quarter, 0.75 * psnr["conv.bias"] + 0.25 * gan["conv.bias"])


def test_mismatches_are_refused() -> None:
    psnr, gan = state(0), state(1)
    with pytest.raises(ValueError, match=r"different keys .*only GAN: \['extra.weight'\]"):
        interpolate_state_dicts(psnr, gan | {"extra.weight": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match=r"'conv.bias' is torch.float32 \(4,\) in PSNR but torch.float32 \(5,\)"):
        interpolate_state_dicts(psnr, gan | {"conv.bias": torch.zeros(5)}, 0.5)
    with pytest.raises(ValueError, match=r"alpha=1.5 is outside \[0, 1\]"):
        interpolate_state_dicts(psnr, gan, 1.5)


def write_generator(path: Path, seed: int, config: dict = CONFIG) -> torch.nn.Module:
    """A freshly initialised generator, saved as our safetensors file (config in the metadata)."""
    torch.manual_seed(seed)
    generator = instantiate(config)
    save_generator_file(path, generator.state_dict(), config=config, scale=config["scale"])
    return generator


def test_files_with_different_generators_are_refused(tmp_path: Path) -> None:
    psnr, gan, out = (tmp_path / f"{name}.safetensors" for name in ("psnr", "gan", "out"))
    write_generator(psnr, 0)
    write_generator(gan, 1, CONFIG | {"num_blocks": 2})
    with pytest.raises(ValueError, match=r"hold different generators \(config keys \['num_blocks'\]"):
        interpolate_files(psnr, gan, out, alpha=0.5)
    assert not out.exists()
    with pytest.raises(ValueError, match="is also an input"):
        interpolate_files(psnr, psnr, psnr, alpha=0.5)


def test_a_weights_file_without_config_matches_its_network_spelled_out_in_full(tmp_path: Path) -> None:
    """ESRGAN's workflow: a released PSNR .pth (no config: inferred, every channel named) with one's
    own GAN run (config with the constructor's defaults left out)."""
    psnr, gan, out = tmp_path / "psnr.pth", tmp_path / "gan.safetensors", tmp_path / "out.safetensors"
    torch.manual_seed(0)
    torch.save({"params_ema": instantiate(CONFIG).state_dict()}, psnr)  # BasicSR's layout, our key names
    write_generator(gan, 1)
    info = interpolate_files(psnr, gan, out, alpha=0.5)
    assert info["config"]["in_channels"] == 3 and out.is_file()


@pytest.mark.parametrize("ema", [True, False])
def test_each_files_ema_or_live_generator_is_weighted_by_its_side_of_alpha(tmp_path: Path, ema: bool) -> None:
    """Two Lightning checkpoints with EMA: `ema` picks the EMA or the live G of both files, and the
    result is (1 - alpha) PSNR + alpha GAN (alpha = 0.25: a swap of the files gives 0.75 / 0.25).
    Through the CLI's `main` (Hydra-composed, in-process): `alpha` and `ema` reach the function."""
    states = {}
    for name, seed in (("psnr", 0), ("gan", 1)):
        torch.manual_seed(seed)
        live, average = instantiate(CONFIG).state_dict(), instantiate(CONFIG).state_dict()
        state_dict = {f"generator.{k}": v for k, v in live.items()} | {
            f"generator_ema.{k}": v for k, v in average.items()
        }
        torch.save({"state_dict": state_dict, "sr_gan": {"generator": CONFIG, "scale": 4}}, tmp_path / f"{name}.ckpt")
        states[name] = average if ema else live
    out = tmp_path / "mix.safetensors"
    paths = [f"psnr={tmp_path / 'psnr.ckpt'}", f"gan={tmp_path / 'gan.ckpt'}", f"out={out}"]
    main(tool_cfg("interpolate", *paths, "alpha=0.25", f"ema={str(ema).lower()}"))
    mixed = load_state_file(out)["tensors"]
    assert mixed.keys() == states["psnr"].keys()
    for key, value in mixed.items():
        torch.testing.assert_close(value, 0.75 * states["psnr"][key] + 0.25 * states["gan"][key])


def test_the_generator_key_builds_plain_state_dicts_of_another_network(tmp_path: Path) -> None:
    """Plain state dicts of an SRResNet carry no config, and the loader's error says to pass
    `generator=...`, which interpolate had no key for (Hydra refused it). Now both files are built
    from it and the result is (1 - alpha) PSNR + alpha GAN, with that config stored."""
    states = {}
    for name, seed in (("psnr", 0), ("gan", 1)):
        torch.manual_seed(seed)
        states[name] = SRResNet(scale=4, num_blocks=2).state_dict()
        torch.save(states[name], tmp_path / f"{name}.pth")
    out = tmp_path / "mix.safetensors"
    paths = [f"psnr={tmp_path / 'psnr.pth'}", f"gan={tmp_path / 'gan.pth'}", f"out={out}"]
    main(
        tool_cfg("interpolate", *paths, "alpha=0.25", "generator={_target_:sr_gan.archs.SRResNet,scale:4,num_blocks:2}")
    )
    mixed, info = load_generator(out)
    assert info["config"] == {"_target_": "sr_gan.archs.SRResNet", "scale": 4, "num_blocks": 2}
    for key, value in mixed.state_dict().items():  # BatchNorm's counters from the nearer end, PSNR
        start, end = states["psnr"][key], states["gan"][key]
        torch.testing.assert_close(value, torch.lerp(start, end, 0.25) if start.is_floating_point() else start)


@pytest.mark.slow
def test_cli_writes_the_interpolated_generator(tmp_path: Path) -> None:
    psnr = write_generator(tmp_path / "psnr.safetensors", 0).state_dict()
    gan = write_generator(tmp_path / "gan.safetensors", 1).state_dict()
    overrides = ["psnr=psnr.safetensors", "gan=gan.safetensors", "alpha=0.8", "out=mix.safetensors"]
    proc = run_module("sr_gan.interpolate", *overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gan.safetensors", "mix.safetensors", "psnr.safetensors"]
    mixed, info = load_generator(tmp_path / "mix.safetensors")
    assert info["config"] == CONFIG and info["scale"] == 4
    for key, value in mixed.state_dict().items():
        torch.testing.assert_close(value, 0.2 * psnr[key] + 0.8 * gan[key])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("alpha=strong", "alpha=strong is not allowed: alpha must be a number >= 0 and <= 1"),
        ("ema=maybe", "ema=maybe is not allowed: ema must be true or false"),
        ("out=psnr.safetensors/mix.safetensors", "out=psnr.safetensors/mix.safetensors: cannot write in psnr."),
    ],
)
def test_cli_bad_value_is_one_line_and_exit_2(tmp_path: Path, override: str, message: str) -> None:
    write_generator(tmp_path / "psnr.safetensors", 0)
    overrides = ["psnr=psnr.safetensors", "gan=psnr.safetensors", "alpha=0.5", "out=mix.safetensors", override]
    proc = run_module("sr_gan.interpolate", *overrides, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith(f"error: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["psnr.safetensors"]


def test_a_file_holding_inf_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    psnr, gan, out = (tmp_path / f"{name}.safetensors" for name in ("psnr", "gan", "out"))
    write_generator(psnr, 0)
    state = write_generator(gan, 1).state_dict()
    state["conv_last.weight"][0] = float("inf")
    save_generator_file(gan, state, config=CONFIG, scale=CONFIG["scale"])
    with pytest.raises(ValueError, match=r"gan\.safetensors: 1 tensors hold NaN/Inf \(e\.g\. conv_last\.weight\)"):
        interpolate_files(psnr, gan, out, alpha=0.5)
    assert not out.exists()
