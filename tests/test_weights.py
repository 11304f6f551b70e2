"""Safe loading of generator weights in every documented layout (tiny RRDBNet, CPU)."""

import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.io import write_png

from sr_gan.archs import SRResNet
from sr_gan.errors import UserError
from sr_gan.weights import (
    UnsafeCheckpointError,
    esrgan_old_to_ours,
    find_generator_weights,
    infer_rrdbnet_config,
    load_generator,
    load_generator_weights,
    load_state_file,
    ours_to_esrgan_old,
    ours_to_sequential,
    save_generator_file,
    sequential_to_ours,
)
from sr_gan.weights.files import GENERATOR_KEY, SCALE_KEY, non_finite_keys
from tests.helpers import TINY_RRDBNET, tiny_rrdbnet, upscale


def rrdbnet_config(scale: int = 4) -> dict:
    return {"_target_": "sr_gan.archs.RRDBNet", "in_channels": 3, "out_channels": 3, **TINY_RRDBNET, "scale": scale}


def save(tmp_path: Path, obj: object, name: str = "weights.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def lightning_ckpt(generator: nn.Module, config: dict, *, ema: nn.Module | None = None) -> dict:
    """The layout of an sr_gan Lightning checkpoint, with the parts the loader must ignore."""
    state_dict = {f"generator.{key}": value for key, value in generator.state_dict().items()}
    if ema is not None:
        state_dict |= {f"generator_ema.{key}": value for key, value in ema.state_dict().items()}
    state_dict["discriminator.conv.weight"] = torch.zeros(1)
    return {"state_dict": state_dict, "sr_gan": {"generator": config, "scale": config["scale"]}, "global_step": 7}


LAYOUTS = {
    "state_dict": lambda state: state,
    "esrgan-old": ours_to_esrgan_old,
    "esrgan-sequential": ours_to_sequential,
    "basicsr": lambda state: {"params": state},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_to_the_same_network(tmp_path: Path, layout: str) -> None:
    reference = tiny_rrdbnet()
    path = save(tmp_path, LAYOUTS[layout](reference.state_dict()))
    generator, info = load_generator(path)
    assert torch.equal(upscale(generator), upscale(reference))
    assert not generator.training
    assert info["source"] == layout.replace("-sequential", "-old")
    assert info["config"] == rrdbnet_config() and info["scale"] == 4 and not info["ema"]
    state = load_generator_weights(path).state  # what model.init_from loads: renamed to our keys, nothing built
    assert state.keys() == reference.state_dict().keys()
    assert all(torch.equal(value, reference.state_dict()[key]) for key, value in state.items())


def test_lightning_checkpoint_prefers_ema(tmp_path: Path) -> None:
    generator, ema = tiny_rrdbnet(seed=0), tiny_rrdbnet(seed=1)
    path = save(tmp_path, lightning_ckpt(generator, rrdbnet_config(), ema=ema), "last.ckpt")
    loaded, info = load_generator(path)
    assert torch.equal(upscale(loaded), upscale(ema)) and info["ema"] and info["source"] == "lightning"
    loaded, info = load_generator(path, prefer_ema=False)
    assert torch.equal(upscale(loaded), upscale(generator)) and not info["ema"]
    weights = load_generator_weights(path)  # what model.init_from loads: the EMA too, unless told otherwise
    assert weights.ema and all(torch.equal(v, ema.state_dict()[k]) for k, v in weights.state.items())


def test_basicsr_params_ema_preferred_over_params(tmp_path: Path) -> None:
    params, params_ema = tiny_rrdbnet(seed=0), tiny_rrdbnet(seed=1)
    path = save(tmp_path, {"params": params.state_dict(), "params_ema": params_ema.state_dict()})
    loaded, info = load_generator(path)
    assert torch.equal(upscale(loaded), upscale(params_ema)) and info["ema"]
    loaded, info = load_generator(path, prefer_ema=False)
    assert torch.equal(upscale(loaded), upscale(params)) and not info["ema"]


def test_lightning_config_with_partial_layers_builds_the_generator(tmp_path: Path) -> None:
    config = {
        "_target_": "sr_gan.archs.SRResNet",
        "num_features": 8,
        "num_blocks": 1,
        "scale": 2,
        "norm_layer": {"_target_": "torch.nn.BatchNorm2d", "_partial_": True},
    }
    torch.manual_seed(0)
    reference = SRResNet(num_features=8, num_blocks=1, scale=2)
    reference.train()(torch.rand(2, 3, 8, 8))  # non-trivial BatchNorm running statistics
    reference.eval()
    loaded, info = load_generator(save(tmp_path, lightning_ckpt(reference, config), "srgan.ckpt"))
    assert isinstance(loaded.norm_body, nn.BatchNorm2d)
    assert torch.equal(upscale(loaded), upscale(reference)) and info["scale"] == 2


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_config_inferred_from_shapes(tmp_path: Path, scale: int) -> None:
    reference = tiny_rrdbnet(scale)
    assert infer_rrdbnet_config(reference.state_dict()) == rrdbnet_config(scale)
    loaded, info = load_generator(save(tmp_path, ours_to_sequential(reference.state_dict())))
    assert torch.equal(upscale(loaded), upscale(reference)) and info["scale"] == scale


def test_sequential_names_match_the_2018_release() -> None:
    weights = {key for key in ours_to_sequential(tiny_rrdbnet().state_dict()) if key.endswith(".weight")}
    head = {key.removesuffix(".weight") for key in weights if ".RDB" not in key}
    assert head == {"model.0", "model.1.sub.2", "model.3", "model.6", "model.8", "model.10"}
    assert "model.1.sub.1.RDB3.conv5.0.weight" in weights


@pytest.mark.parametrize(
    ("to_old", "to_ours"), [(ours_to_esrgan_old, esrgan_old_to_ours), (ours_to_sequential, sequential_to_ours)]
)
@pytest.mark.parametrize("scale", [4, 8])
def test_key_conversion_round_trips(to_old, to_ours, scale: int) -> None:
    state = tiny_rrdbnet(scale).state_dict()
    old = to_old(state)
    shared_names = {"conv_first.weight", "conv_first.bias", "conv_last.weight", "conv_last.bias"}
    assert not old.keys() & state.keys() - shared_names
    back = to_ours(old)
    assert back.keys() == state.keys() and all(back[key] is state[key] for key in state)


def test_extract_ignores_everything_but_the_generator() -> None:
    generator = tiny_rrdbnet()
    state = find_generator_weights(lightning_ckpt(generator, rrdbnet_config())).state
    assert state.keys() == generator.state_dict().keys()


class Payload:
    """Unpickling this runs open(marker, "w"): creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("dump", [torch.save, lambda obj, path: path.write_bytes(pickle.dumps(obj, protocol=2))])
def test_pickled_payload_is_refused_and_never_runs(tmp_path: Path, dump) -> None:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    dump({"params": {}, "extra": Payload(marker)}, path)
    refused = r"evil.pth: refused to load.*needs (builtins|_?io)\.open.*pickled Python objects"  # _io.open: Python 3.13
    with pytest.raises(UnsafeCheckpointError, match=refused) as caught:
        load_generator(path)
    assert "\n" not in str(caught.value)
    assert not marker.exists()
    with open(path, "rb") as handle:  # the payload is live: an unsafe load does run it
        pickle.load(handle) if dump is not torch.save else torch.load(handle, weights_only=False)
    assert marker.exists()


def test_a_torch_file_with_a_compressed_record_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """torch.load inflates a deflated zip record whole (torch.save never compresses): 4 MB of zeros
    deflate to a few KB, so a small file could claim any size; refused in one line, the claim named."""
    plain = save(tmp_path, {"params": {"w": torch.zeros(1_000_000)}}, "plain.pth")
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as packed:
        for info in source.infolist():
            packed.writestr(info.filename, source.read(info.filename))
    assert bomb.stat().st_size < 100_000
    for load in (load_state_file, load_generator_weights):
        with pytest.raises(
            UserError, match=r"bomb\.pth: refused to load, its record .* is compressed \(\d+ such, 4,0"
        ) as caught:
            load(bomb)
        assert "\n" not in str(caught.value)
    assert load_state_file(plain)["params"]["w"].shape == (1_000_000,)  # as torch.save wrote it: loads


def test_a_view_spanning_more_than_its_stored_bytes_is_refused_before_it_is_used(tmp_path: Path) -> None:
    """torch.save keeps a view's strides: a file of a few KB held a stride-0 tensor of 3e9 floats,
    which the NaN check allocated in full (12 GB, or an allocator traceback); refused in one line."""
    path = save(tmp_path, {"params": {"w": torch.zeros(1).expand(3_000_000_000)}, "other": [{"x": torch.zeros(2)}]})
    assert path.stat().st_size < 4000
    for load in (load_state_file, load_generator_weights):
        with pytest.raises(UserError, match=r"weights\.pth: refused to load, a tensor of shape \(3000000000,\) spans "):
            load(path)
    sliced = torch.arange(10.0)[2:5]  # a view within its storage, as a sliced state dict holds: loads
    assert torch.equal(load_state_file(save(tmp_path, {"w": sliced}))["w"], sliced)


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_generator(tmp_path / "nowhere.pth")
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(ValueError, match="notes.pth: "):  # unreadable or refused, never unpickled
        load_generator(tmp_path / "notes.pth")
    with pytest.raises(ValueError, match="no generator weights found"):
        load_generator(save(tmp_path, {"optimizer": {"lr": 1e-4}}))


def test_mismatched_weights_name_file_and_keys(tmp_path: Path) -> None:
    path = save(tmp_path, tiny_rrdbnet().state_dict())
    with pytest.raises(ValueError, match=r"weights\.pth: .*30 missing \['body\.2\.") as caught:
        load_generator(path, generator_config=rrdbnet_config() | {"num_blocks": 3})
    assert "pass the network's config, e.g. 'generator={_target_:" in str(caught.value)
    with pytest.raises(ValueError, match=r"30 unexpected \['body\.1\."):
        load_generator(path, generator_config=rrdbnet_config() | {"num_blocks": 1})
    with pytest.raises(ValueError, match=r"wrong shape \['conv_first\.weight"):
        load_generator(path, generator_config=rrdbnet_config() | {"num_features": 16})


def test_a_pickled_vgg_weights_file_is_refused_and_never_runs(tmp_path: Path) -> None:
    from sr_gan.losses import PerceptualLoss

    marker, path = tmp_path / "payload_ran", tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": torch.zeros(1), "extra": Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="vgg19.pth: refused to load"):
        PerceptualLoss(layers=["relu1_1"], weights=str(path))
    assert not marker.exists()


def test_a_damaged_scale_names_the_file(tmp_path: Path) -> None:
    ckpt = lightning_ckpt(tiny_rrdbnet(), rrdbnet_config())
    ckpt["sr_gan"]["scale"] = "abc"
    path = save(tmp_path, ckpt, "damaged.ckpt")
    with pytest.raises(ValueError, match=rf"{path}: its scale 'abc' is no whole number"):
        load_generator(path, generator_config={k: v for k, v in rrdbnet_config().items() if k != "scale"})


@pytest.mark.parametrize("load", [load_generator, load_generator_weights])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused_naming_file_and_key(tmp_path: Path, load, value: float) -> None:
    state = tiny_rrdbnet().state_dict()
    state["conv_first.weight"][0, 0, 0, 0] = value
    path = save(tmp_path, {"params": state}, "diverged.pth")
    message = (
        r"diverged\.pth: 1 tensors hold NaN/Inf \(e\.g\. conv_first\.weight\): the file is damaged or from a diverged"
    )
    with pytest.raises(ValueError, match=message):
        load(path)


def test_only_the_picked_generator_is_checked_for_nan(tmp_path: Path) -> None:
    """A checkpoint whose live G diverged but whose EMA did not still gives its EMA (and refuses G)."""
    live, ema = tiny_rrdbnet(seed=0), tiny_rrdbnet(seed=1)
    with torch.no_grad():
        live.conv_last.bias.fill_(float("nan"))
    path = save(tmp_path, lightning_ckpt(live, rrdbnet_config(), ema=ema), "last.ckpt")
    generator, info = load_generator(path)
    assert info["ema"] and torch.equal(upscale(generator), upscale(ema))
    with pytest.raises(ValueError, match=r"last\.ckpt: 1 tensors hold NaN/Inf \(e\.g\. conv_last\.bias\)"):
        load_generator(path, prefer_ema=False)


@pytest.mark.parametrize("name", ["weights.pth", "weights.bin", "weights.ckpt"])
def test_safetensors_is_read_by_its_content_whatever_its_name(tmp_path: Path, name: str) -> None:
    reference = tiny_rrdbnet(scale=2)
    save_generator_file(tmp_path / name, reference.state_dict(), config=rrdbnet_config(2), scale=2)
    generator, info = load_generator(tmp_path / name)
    assert info["source"] == "safetensors" and info["scale"] == 2
    assert torch.equal(upscale(generator), upscale(reference))


def test_a_safetensors_header_length_starting_like_a_pickle_is_read_as_safetensors(tmp_path: Path) -> None:
    """A header length whose low byte is 0x80, pickle's PROTO opcode, was read as a torch file: its
    config and scale were lost, and an SRResNet (an interpolation of two, whose metadata carries no EMA
    flag) was refused as an RRDBNet whose config could not be inferred."""
    reference = SRResNet(num_features=8, num_blocks=1, scale=2).eval()
    config = {"_target_": "sr_gan.archs.SRResNet", "num_features": 8, "num_blocks": 1, "scale": 2}
    path = tmp_path / "interp.safetensors"
    metadata = {GENERATOR_KEY: json.dumps(config), SCALE_KEY: "2"}
    for pad in range(0, 256, 8):  # the header is padded to 8 bytes; 0x80 is a multiple of 8
        save_file(reference.state_dict(), path, metadata=metadata | {"note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    generator, info = load_generator(path)
    assert info["source"] == "safetensors" and info["config"] == config and info["scale"] == 2
    assert torch.equal(upscale(generator), upscale(reference))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"\x89PNG\r\n\x1a\n" + bytes(64),
            r"not a weight file \(neither a torch checkpoint nor safetensors; it starts",
        ),
        (b"", r"not a weight file \(neither a torch checkpoint nor safetensors; it is empty\)"),
        (b"\x80\x02garbage", r"torch\.load\(weights_only=True\) cannot read it \(Unsupported operand"),
    ],
    ids=["png", "empty", "bad pickle"],
)
def test_a_file_that_is_no_weight_file_is_not_called_unsafe(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "x.ckpt").write_bytes(content)
    with pytest.raises(UserError, match=rf"x\.ckpt: {message}") as caught:
        load_generator(tmp_path / "x.ckpt")
    assert not isinstance(caught.value, UnsafeCheckpointError) and "pickled" not in str(caught.value)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"params": torch.zeros(3)}, "'params' holds a Tensor"),
        ({"params_ema": [torch.zeros(3)]}, "'params_ema' holds a list"),
        ({"params": {"conv_first.weight": 0.5}}, "'params' holds 'conv_first.weight': float"),
        ({"state_dict": {"generator.conv_first.weight": "w"}}, "'state_dict' holds 'conv_first.weight': str"),
    ],
    ids=["tensor", "list", "float value", "lightning str value"],
)
@pytest.mark.parametrize("load", [load_generator, load_generator_weights])
def test_weights_that_are_no_state_dict_name_the_file_and_key(tmp_path: Path, load, obj: dict, message: str) -> None:
    path = save(tmp_path, obj, "crafted.pth")
    with pytest.raises(UserError, match=rf"crafted\.pth: {message}, not a state dict \(names to tensors\)"):
        load(path)


@pytest.mark.parametrize("obj", [torch.zeros(3), [torch.zeros(3)]], ids=["tensor", "list"])
def test_a_file_holding_no_dict_is_one_line(tmp_path: Path, obj: object) -> None:
    """torch.load(weights_only=True) rebuilds a bare tensor or list too: every loader refuses it in one
    line naming the file (it was an AttributeError traceback from `.get`)."""
    from sr_gan.weights.discriminator import load_discriminator_state

    path = save(tmp_path, obj, "bare.pth")
    kind = type(obj).__name__
    for load in (load_generator, load_generator_weights, load_discriminator_state):
        with pytest.raises(UserError, match=rf"^{path}: holds a {kind}, expected a dict of weights$"):
            load(path)


def test_the_tools_read_weights_by_url_from_torch_hubs_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """upscale ckpt=, export ckpt=, interpolate psnr= and gan=, evaluate ckpt= take an http(s) URL (a
    released BasicSR / Real-ESRGAN file): fetched once into torch.hub's cache (one GET for all the
    tools) and read as the local file is: every output equals the one made from the file."""
    from safetensors.torch import load_file

    from sr_gan.evaluate import run as evaluate
    from sr_gan.export import main as export
    from sr_gan.interpolate import main as interpolate
    from sr_gan.upscale import main as upscale_main
    from tests.helpers import serve_folder, tool_cfg

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served, photos = tmp_path / "served", tmp_path / "photos"
    served.mkdir()
    photos.mkdir()
    torch.save({"params_ema": tiny_rrdbnet().state_dict()}, served / "g.pth")
    torch.save({"params_ema": tiny_rrdbnet(seed=1).state_dict()}, tmp_path / "gan.pth")
    write_png(
        torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
        str(photos / "a.png"),
    )
    local = served / "g.pth"
    with serve_folder(served) as (url, requested):
        outputs = {}
        for source in (f"{url}/g.pth", str(local)):
            out = tmp_path / ("url" if source.startswith("http") else "local")
            out.mkdir()
            upscale_main(
                tool_cfg("upscale", f"ckpt={source}", f"input={photos / 'a.png'}", f"out_dir={out}", "device=cpu")
            )
            export(tool_cfg("export", f"ckpt={source}", f"out={out / 'g.safetensors'}"))
            interpolate(
                tool_cfg(
                    "interpolate",
                    f"psnr={source}",
                    f"gan={tmp_path / 'gan.pth'}",
                    "alpha=0.5",
                    f"out={out / 'i.safetensors'}",
                )
            )
            rows = evaluate(
                tool_cfg(
                    "evaluate",
                    f"ckpt={source}",
                    f"datasets=[{photos}]",
                    f"out_dir={out / 'eval'}",
                    "lpips=false",
                    "device=cpu",
                )
            )
            outputs[out.name] = (
                (out / "a_x4.png").read_bytes(),
                load_file(out / "g.safetensors"),
                load_file(out / "i.safetensors"),
                [(row["model"], row["psnr_y"], row["ssim_y"]) for row in rows],
                json.loads((out / "eval" / "results.json").read_text())["ckpt"],
            )
    assert requested == ["/g.pth"]
    (url_png, url_g, url_i, url_rows, url_ckpt), (png, g, i, rows, ckpt) = outputs["url"], outputs["local"]
    assert url_png == png and url_rows == rows and len(rows) == 2  # bicubic and the network
    assert rows[1][0] == "g"  # a URL's row is named after its file, not after torch.hub's cache folder
    assert url_ckpt == {"g": f"{url}/g.pth"} and ckpt == {"g": str(local)}  # the report names what was given
    for ours, theirs in ((url_g, g), (url_i, i)):
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_only_http_and_https_names_are_urls() -> None:
    """A released file is given by its https URL (GitHub releases); a path, a Windows drive path
    (whose "C:" urlparse takes for a scheme) or a file URL is read as a local file."""
    from sr_gan.weights import is_url

    assert is_url("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth")
    assert is_url("http://127.0.0.1:8000/g.pth")
    for local in ("g.pth", "/runs/a/checkpoints/last.ckpt", "C:/weights/g.pth", r"C:\weights\g.pth", Path("x.pth")):
        assert not is_url(local), local


def test_a_url_is_cached_under_its_files_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache file is named by the URL's path: a query string (a signed or a "?download=1" link)
    is no part of it."""
    from sr_gan.weights import cached_download
    from tests.helpers import serve_folder

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served = tmp_path / "served"
    served.mkdir()
    (served / "g.pth").write_bytes(b"weights")
    with serve_folder(served) as (url, requested):
        path = cached_download(f"{url}/g.pth?download=1", key="ckpt")
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / "g.pth" and path.read_bytes() == b"weights"
    assert requested == ["/g.pth?download=1"]


def test_a_url_naming_no_file_is_refused_before_any_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL ending in / names a folder (a server answers with its listing, an HTML page): refused in
    one line, nothing requested nor cached. It was refused only for the server's root; ``.../weights/``
    was fetched and its page kept in the cache as the file ``weights``, read by every later URL of
    that name."""
    from sr_gan.weights import cached_download
    from tests.helpers import serve_folder

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served = tmp_path / "served"
    (served / "weights").mkdir(parents=True)
    with serve_folder(served) as (url, requested):
        for folder in (f"{url}/", f"{url}/weights/", f"{url}/weights/?download=1"):
            with pytest.raises(UserError, match=rf"^ckpt={folder.replace('?', '[?]')}: the URL names no file \(it"):
                cached_download(folder, key="ckpt")
    assert requested == [] and not (tmp_path / "torch").exists()


def test_a_server_that_refuses_the_connection_is_one_line_and_caches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server at the URL (a port nothing listens on): urllib's URLError, an OSError, is the one
    line naming the key and the URL; nothing is left in the cache."""
    import socket

    from sr_gan.weights import cached_download

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with socket.socket() as probe:  # a free port, closed again: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/g.pth"
    with pytest.raises(UserError, match=rf"^model\.init_from={url}: cannot download it \(.*refused.*\): check the URL"):
        cached_download(url, key="model.init_from")
    assert list((tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == []


def _tiny_srresnet_file(tmp_path: Path) -> Path:
    return save(tmp_path, SRResNet(num_features=8, num_blocks=1, scale=2).state_dict(), "srresnet.pth")


@pytest.mark.parametrize(
    ("make", "config", "message"),
    [
        (
            lambda tmp: save(tmp, {"state_dict": {"discriminator.w": torch.zeros(1)}}, "d_only.ckpt"),
            None,
            r"d_only\.ckpt: checkpoint 'state_dict' has no 'generator\.\*' keys; is it an sr_gan checkpoint\?$",
        ),
        (
            lambda tmp: save(tmp, {"state_dict": {"generator.w": torch.zeros(1)}, "sr_gan": [4]}, "odd.ckpt"),
            None,
            r"odd\.ckpt: checkpoint key 'sr_gan' holds a list, expected a mapping$",
        ),
        (
            _tiny_srresnet_file,
            {"_target_": "sr_gan.archs.SRResNet", "num_features": 8, "num_blocks": 1},
            r"srresnet\.pth: the scale is unknown: add it to the generator config \('generator=\{\.\.\.,scale:4\}'\)$",
        ),
        (
            lambda tmp: save(tmp, tiny_rrdbnet().state_dict()),
            {"_target_": "builtins.dict", "scale": 4},
            r"weights\.pth: builtins\.dict built a dict, not a network$",
        ),
        (
            lambda tmp: save(tmp, tiny_rrdbnet().state_dict()),
            rrdbnet_config() | {"bogus": 1},
            r"weights\.pth: cannot build sr_gan\.archs\.RRDBNet from its config: .*unexpected keyword argument 'bogus'",
        ),
    ],
    ids=["no generator keys", "sr_gan not a mapping", "no scale", "not a network", "constructor refuses"],
)
def test_weights_that_build_no_generator_are_one_line_naming_the_file(tmp_path: Path, make, config, message) -> None:
    with pytest.raises(UserError, match=message) as caught:
        load_generator(make(tmp_path), generator_config=config)
    assert "\n" not in str(caught.value)


def test_a_zip_that_is_no_torch_file_is_one_line(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "archive.pth", "w") as archive:
        archive.writestr("archive/notes.txt", "not weights")
    with pytest.raises(UserError, match=r"archive\.pth: not a torch or safetensors weight file \(RuntimeError: "):
        load_generator(tmp_path / "archive.pth")


def test_a_first_conv_of_no_rrdbnet_scale_asks_for_the_config() -> None:
    state = tiny_rrdbnet().state_dict()
    state["conv_first.weight"] = torch.zeros(state["conv_first.weight"].shape[0], 5, 3, 3)  # 5 for 3 channels
    with pytest.raises(
        UserError, match=r"conv_first takes 5 channels for 3 output channels, which is no RRDBNet scale"
    ):
        infer_rrdbnet_config(state)


def test_keys_of_another_layout_are_refused_naming_the_key() -> None:
    state = ours_to_esrgan_old(tiny_rrdbnet().state_dict()) | {"attention.weight": torch.zeros(1)}
    with pytest.raises(UserError, match=r"state-dict key 'attention\.weight' is not an RRDBNet key"):
        esrgan_old_to_ours(state)
    sequential = ours_to_sequential(tiny_rrdbnet().state_dict())
    without_trunk = {k: v for k, v in sequential.items() if not k.startswith("model.1.sub.2.")}  # TINY: 2 RRDBs
    with pytest.raises(UserError, match=r"not the 2018 ESRGAN layout: expected one trunk conv"):
        sequential_to_ours(without_trunk)
    assert sequential_to_ours(sequential).keys() == tiny_rrdbnet().state_dict().keys()


def test_a_state_without_floats_has_no_non_finite_key() -> None:
    assert non_finite_keys({"steps": torch.tensor(3), "name": "x"}) == []  # type: ignore[dict-item]
    assert non_finite_keys({"steps": torch.tensor(3), "w": torch.tensor([1.0, float("nan")])}) == ["w"]
