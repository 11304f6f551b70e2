"""Weight files from strangers: a crafted generator config never runs, broken files are one-line errors.

The crafted config is what an attacker would store in a `.safetensors` metadata block or in a
`.ckpt`'s `sr_gan` key (plain containers, so `weights_only=True` accepts it): Hydra would call
`pathlib.Path.write_text(Path(marker), "pwned")` when building "the generator". Every loader must
refuse it in one line naming the file and the target, and the marker file must not appear.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook

from sr_gan.archs import SRResNet
from sr_gan.errors import UserError
from sr_gan.weights import load_generator, load_generator_weights, load_state_file, save_generator_file
from sr_gan.weights.allowlist import GENERATORS
from sr_gan.weights.files import EMA_KEY, GENERATOR_KEY, SCALE_KEY
from tests.helpers import run_module

SCALE = 2
TINY_G = {"_target_": "sr_gan.archs.SRResNet", "num_features": 8, "num_blocks": 1, "scale": SCALE}
EVIL_TARGET = "pathlib.Path.write_text"


def evil_config(marker: Path) -> dict:
    """A config whose instantiation writes `marker` (a nested target builds the Path argument)."""
    return {"_target_": EVIL_TARGET, "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "pwned"]}


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return SRResNet(num_features=8, num_blocks=1, scale=SCALE).state_dict()


def crafted_file(folder: Path, kind: str, config: dict) -> Path:
    """A `.safetensors` or `.ckpt` (torch.save of plain containers) holding `config` as its generator."""
    state = _state()
    if kind == "safetensors":
        path = folder / "crafted.safetensors"
        save_file(state, path, metadata={GENERATOR_KEY: json.dumps(config), SCALE_KEY: str(SCALE)})
    else:
        path = folder / "crafted.ckpt"
        state_dict = {f"generator.{key}": value for key, value in state.items()}
        torch.save({"state_dict": state_dict, "sr_gan": {"generator": config, "scale": SCALE}}, path)
    return path


# --- the refusal, in-process --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetensors", "ckpt"])
def test_crafted_config_is_refused_by_every_python_loader(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned.txt"
    path = crafted_file(tmp_path, kind, evil_config(marker))
    for load in (load_generator, load_generator_weights):  # load_generator_weights: model.init_from
        with pytest.raises(UserError, match=rf"{path.name}.*{EVIL_TARGET}") as caught:
            load(path)
        assert "\n" not in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("where", "node"),
    [
        ("norm_layer", {"_target_": "os.system", "_partial_": True}),  # nested node
        ("act_layer", {"_target_": "torch.nn.PReLU", "_args_": [{"_target_": "builtins.exec", "_args_": ["1"]}]}),
        ("act_layer", [{"_target_": "subprocess.run"}]),  # inside a list
        ("num_features", "${oc.env:HOME}"),  # interpolations are resolved by Hydra: none in a file
        ("num_features", "8 ${oc.env:HOME}"),  # inside a string too (OmegaConf resolves it there)
        ("norm_layer", {"_target_": "torch.nn.BatchNorm2d", "_partial_": True, "_custom_": 1}),
        ("norm_layer", {"_target_": {"_target_": "os.system"}}),  # a target that is no text (was a TypeError)
        ("act_layer", {"_target_": ["torch.nn.ReLU"]}),
    ],
)
def test_nested_targets_lists_and_interpolations_are_checked(tmp_path: Path, where: str, node: object) -> None:
    path = crafted_file(tmp_path, "safetensors", TINY_G | {where: node})
    with pytest.raises(UserError, match=rf"{path.name}: refused") as caught:
        load_generator(path)
    assert "\n" not in str(caught.value)
    if isinstance(node, dict) and not isinstance(node["_target_"], str):  # no class name: nothing to trust
        assert "SR_GAN_TRUST" not in str(caught.value)


@pytest.mark.parametrize(
    "node",
    [
        lambda marker: {"_target_": "torch.save", "_args_": [[], str(marker)]},
        lambda marker: {
            "_target_": "sr_gan.data.download.download_and_extract",
            "url": "file:///nonexistent/a.zip",
            "dest_dir": str(marker),
            "sha256": None,
        },
    ],
    ids=["torch.save", "sr_gan-downloader"],
)
def test_a_nested_target_under_torch_or_sr_gan_that_is_no_listed_layer_is_refused(tmp_path: Path, node) -> None:
    """The nested targets are the listed layers, not whatever lives under `torch` or `sr_gan`: torch.save
    writes a file, our downloader makes its folder before it fetches (Hydra builds nested nodes first)."""
    marker = tmp_path / "pwned"
    path = crafted_file(tmp_path, "safetensors", TINY_G | {"norm_layer": node(marker)})
    for load in (load_generator, load_generator_weights):
        with pytest.raises(UserError, match=rf"{path.name}: refused: .* asks to call .* \(at norm_layer\._target_\)"):
            load(path)
    assert not marker.exists()


@pytest.mark.parametrize("config", [["a list"], "a string", {"num_features": 8}, {"_target_": 3}])
def test_config_that_is_no_mapping_with_a_target_is_refused(tmp_path: Path, config: object) -> None:
    with pytest.raises(UserError, match=r"crafted\.safetensors: "):
        load_generator(crafted_file(tmp_path, "safetensors", config))


def test_our_generators_with_their_layers_still_load(tmp_path: Path) -> None:
    """The allowlist keeps every config our own recipes write (conf/model/*.yaml) and common layers."""
    batch_norm, prelu = {"_target_": "torch.nn.BatchNorm2d", "_partial_": True}, {"_target_": "torch.nn.PReLU"}
    leaky = {"_target_": "torch.nn.modules.activation.LeakyReLU", "_partial_": True, "negative_slope": 0.2}
    for norm, act, layers in [
        (batch_norm, prelu | {"_partial_": True}, {"norm_layer": nn.BatchNorm2d}),
        (None, leaky, {"norm_layer": None, "act_layer": partial(nn.LeakyReLU, negative_slope=0.2)}),
    ]:
        config = TINY_G | {"norm_layer": norm, "act_layer": act}
        generator = SRResNet(num_features=8, num_blocks=1, scale=SCALE, **layers)
        path = tmp_path / "ok.safetensors"
        save_generator_file(path, generator.state_dict(), config=config, scale=SCALE)
        loaded, info = load_generator(path)
        assert info["config"] == config and type(loaded) is SRResNet
        assert type(loaded.body[0].act) is type(generator.body[0].act)


def test_a_config_nested_too_deep_or_holding_itself_is_refused_in_one_line(tmp_path: Path) -> None:
    """A pickle can hold a config that contains itself, JSON one nested 100000 deep: both were a
    RecursionError traceback (in the allowlist's walk, in json.loads), now one line naming the file."""
    looped = dict(TINY_G)
    looped["act_layer"] = looped
    looped_file = crafted_file(tmp_path, "ckpt", looped)  # (JSON cannot hold it)
    deep = json.dumps(TINY_G)[:-1] + ', "act_layer": ' + "[" * 100_000 + "]" * 100_000 + "}"
    deep_file = tmp_path / "deep.safetensors"
    save_file(_state(), deep_file, metadata={GENERATOR_KEY: deep, SCALE_KEY: str(SCALE)})
    for path, reason in [(looped_file, "nests deeper than 32 levels"), (deep_file, "metadata key .* damaged")]:
        for load in (load_generator, load_generator_weights):
            with pytest.raises(UserError, match=rf"{path.name}: .*{reason}") as caught:
                load(path)
            assert "\n" not in str(caught.value)


ON_CPU_BN = {"_target_": "torch.nn.BatchNorm2d", "_partial_": True, "device": "cpu"}  # a device given in the file
ON_CPU_PRELU = {"_target_": "torch.nn.PReLU", "_partial_": True, "_args_": [100_000, 0.25, "cpu"]}  # ... as an arg


@pytest.mark.parametrize(
    "claim",
    [
        {"num_features": 512},
        {"num_blocks": 2000},
        {"num_features": 512, "norm_layer": ON_CPU_BN},
        {"act_layer": ON_CPU_PRELU},
    ],
    ids=["wide", "deep", "wide-on-cpu", "wide-layer-on-cpu"],
)
def test_a_config_larger_than_its_weights_is_refused_before_anything_is_allocated(tmp_path: Path, claim: dict) -> None:
    """A small file whose config claims a huge network (num_features: 60000 would exhaust the memory,
    num_blocks: 10**7 hang) is refused from a build on the meta device, even where the file gives a
    layer's device: no parameter is allocated, and that build stops past twice the file's tensor count."""
    path = crafted_file(tmp_path, "safetensors", TINY_G | claim)
    registered: list[nn.Parameter] = []
    handle = register_module_parameter_registration_hook(lambda module, name, param: registered.append(param))
    try:
        with pytest.raises(UserError, match=rf"{path.name}: (weights do not fit|its config builds a larger) "):
            load_generator(path)
    finally:
        handle.remove()
    assert [param.device for param in registered if param is not None and not param.is_meta] == []
    assert len(registered) <= 2 * len(_state()) + 1


# --- broken safetensors files -------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated", "fake", "huge header"])
def test_broken_safetensors_is_a_one_line_error(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "good.safetensors"
    save_generator_file(good, _state(), config=TINY_G, scale=SCALE)
    path = tmp_path / "broken.safetensors"
    data = good.read_bytes()
    path.write_bytes(
        {
            "empty": b"",
            "truncated": data[: len(data) // 2],
            "fake": b"<html>404 not found</html>",
            "huge header": (2**40).to_bytes(8, "little") + b"{}",
        }[damage]
    )
    for load in (load_state_file, load_generator):
        with pytest.raises(UserError, match=r"broken\.safetensors: not a valid safetensors file") as caught:
            load(path)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (GENERATOR_KEY, "{bad", "Expecting property name enclosed in double quotes"),
        (SCALE_KEY, "four", "invalid literal for int"),
        (EMA_KEY, "yes", "'yes' is neither true nor false"),
    ],
)
@pytest.mark.parametrize("load", [load_generator, load_generator_weights])
def test_damaged_metadata_names_the_file_the_key_and_the_fix(
    tmp_path: Path, load, key: str, value: str, reason: str
) -> None:
    path = tmp_path / "damaged.safetensors"
    metadata = {GENERATOR_KEY: json.dumps(TINY_G), SCALE_KEY: str(SCALE)} | {key: value}
    save_file(_state(), path, metadata=metadata)
    fix = r"export it again with `python -m sr_gan\.export`$"
    with pytest.raises(
        UserError, match=rf"damaged\.safetensors: its metadata key {key} is damaged \({reason}.*\): {fix}"
    ):
        load(path)


# --- every command line tool --------------------------------------------------------------------


def _commands(path: Path, tmp_path: Path) -> dict[str, list[str]]:
    good = tmp_path / "good.safetensors"
    save_generator_file(good, _state(), config=TINY_G, scale=SCALE)
    return {
        "sr_gan.upscale": [f"ckpt={path}", f"input={tmp_path}", "device=cpu"],
        "sr_gan.evaluate": [f"ckpt={path}", f"datasets=[{tmp_path}]", "device=cpu"],
        "sr_gan.export": [f"ckpt={path}", f"out={tmp_path / 'exported.safetensors'}"],
        "sr_gan.interpolate": [f"psnr={good}", f"gan={path}", f"out={tmp_path / 'interp.safetensors'}"],
        "sr_gan.train": [
            f"model.init_from={path}",
            "model=srresnet_nobn",
            "model.generator.num_features=8",
            "model.generator.num_blocks=1",
            "data.scale=2",
            "logger=csv",
            "trainer.accelerator=cpu",
            f"paths.output_dir={tmp_path / 'run'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["safetensors", "ckpt"])
@pytest.mark.parametrize(
    "tool", ["sr_gan.upscale", "sr_gan.evaluate", "sr_gan.export", "sr_gan.interpolate", "sr_gan.train"]
)
def test_every_tool_refuses_the_crafted_file_in_one_line(tmp_path: Path, tool: str, kind: str) -> None:
    marker = tmp_path / "pwned.txt"
    path = crafted_file(tmp_path, kind, evil_config(marker))
    result = run_module(tool, *_commands(path, tmp_path)[tool], cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(errors) == 1 and path.name in errors[0] and EVIL_TARGET in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_every_network_of_archs_is_classified() -> None:
    """A new generator in sr_gan.archs must be added to the allowlist (or it cannot be loaded)."""
    import sr_gan.archs as archs

    networks = {name for name in archs.__all__ if isinstance(getattr(archs, name), type)}
    not_generators = {
        "RRDB",
        "ResidualDenseBlock",
        "SRGANDiscriminator",
        "UNetDiscriminatorSN",
        "VGGStyleDiscriminator",
    }
    assert networks - not_generators == {cls.__name__ for cls in GENERATORS}


# --- a network of the user's own: SR_GAN_TRUST ----------------------------------------------------

USER_G = {"_target_": "usernet.TinyNet", "scale": SCALE}


@pytest.fixture
def mine(tmp_path: Path, usernet: ModuleType) -> nn.Module:
    """The user's own TinyNet (conftest's `usernet`), saved as an exported file and as a training checkpoint."""
    torch.manual_seed(0)
    net = usernet.TinyNet(scale=SCALE).eval()
    save_generator_file(tmp_path / "mine.safetensors", net.state_dict(), config=USER_G, scale=SCALE)
    state_dict = {f"generator.{key}": value for key, value in net.state_dict().items()}
    torch.save({"state_dict": state_dict, "sr_gan": {"generator": USER_G, "scale": SCALE}}, tmp_path / "mine.ckpt")
    return net


@pytest.mark.parametrize("name", ["mine.safetensors", "mine.ckpt"])
def test_a_users_own_network_loads_once_its_class_is_listed_in_sr_gan_trust(
    tmp_path: Path, mine: nn.Module, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Refused by default, with the one-line fix; loaded by every loader once the class is listed."""
    path = tmp_path / name
    fix = r"if you made this file and usernet\.TinyNet is your own network class, allow it: "
    fix += r"export SR_GAN_TRUST=usernet\.TinyNet$"
    for load in (load_generator, load_generator_weights):
        with pytest.raises(UserError, match=rf"{name}: refused: .* usernet\.TinyNet \(at _target_\).*; {fix}"):
            load(path)
    monkeypatch.setenv("SR_GAN_TRUST", "other.Net, usernet.TinyNet")
    generator, info = load_generator(path)
    lr = torch.rand(1, 3, 5, 4)
    assert type(generator) is type(mine) and info["config"] == USER_G
    assert torch.equal(generator(lr), mine(lr))
    assert load_generator_weights(path).state.keys() == mine.state_dict().keys()  # model.init_from


@pytest.mark.parametrize("kind", ["safetensors", "ckpt"])
def test_sr_gan_trust_lets_only_the_listed_class_through(
    tmp_path: Path, mine: nn.Module, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Listing TinyNet allows TinyNet: a crafted target at the top, or nested in TinyNet's own config,
    is still refused and never runs."""
    monkeypatch.setenv("SR_GAN_TRUST", "usernet.TinyNet")
    marker = tmp_path / "pwned.txt"
    for config in (evil_config(marker), USER_G | {"act": evil_config(marker)}):
        path = crafted_file(tmp_path, kind, config)
        with pytest.raises(UserError, match=rf"{path.name}: refused: .* {EVIL_TARGET} \(at (act\.)?_target_\)"):
            load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        (EVIL_TARGET, rf"SR_GAN_TRUST lists {EVIL_TARGET}, which is no nn\.Module class: list only your own networks"),
        ("usernet.not_a_network", r"SR_GAN_TRUST lists usernet\.not_a_network, which is no nn\.Module class"),
        ("nowhere.Net", r"SR_GAN_TRUST lists nowhere\.Net, which cannot be imported \(.*\): put its package on PYTHON"),
    ],
)
def test_sr_gan_trust_listing_no_network_class_is_refused(
    tmp_path: Path, mine: nn.Module, monkeypatch: pytest.MonkeyPatch, listed: str, message: str
) -> None:
    """A function listed by mistake (or a name that cannot be imported) is refused when a file asks for
    it, in one line, and is never called."""
    monkeypatch.setenv("SR_GAN_TRUST", listed)
    marker = tmp_path / "pwned.txt"
    config = evil_config(marker) if listed == EVIL_TARGET else {"_target_": listed}
    path = crafted_file(tmp_path, "safetensors", config)
    with pytest.raises(UserError, match=rf"{path.name}: {message}") as caught:
        load_generator(path)
    assert "\n" not in str(caught.value) and not marker.exists()
