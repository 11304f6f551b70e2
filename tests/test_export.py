"""Exporting a generator: safetensors round trip, ONNX vs PyTorch, the `python -m sr_gan.export` CLI."""

import json
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from safetensors import safe_open
from torch import nn

from sr_gan.archs import RRDBNet, SRResNet
from sr_gan.errors import UserError
from sr_gan.export import check_onnx, export_onnx, export_safetensors, main
from sr_gan.tiling import tiled_forward
from sr_gan.weights import load_generator, load_state_file, save_generator_file
from tests.helpers import TINY_RRDBNET, file_size_limit, run_module, tiny_rrdbnet, tool_cfg, upscale

Generators = tuple[nn.Module, nn.Module]  # (generator, EMA generator)
CONFIG = {"_target_": "sr_gan.archs.RRDBNet", **TINY_RRDBNET, "scale": 2}


@pytest.fixture
def generators() -> Generators:
    """(generator, EMA generator) with different weights."""
    return tiny_rrdbnet(scale=2, seed=0), tiny_rrdbnet(scale=2, seed=1)


@pytest.fixture
def ckpt(tmp_path: Path, generators: Generators) -> Path:
    """An sr_gan Lightning checkpoint with EMA, saved the way Lightning does (torch.save)."""
    generator, ema = generators
    state_dict = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    state_dict |= {f"generator_ema.{k}": v for k, v in ema.state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state_dict, "sr_gan": {"generator": CONFIG, "scale": 2}}, path)
    return path


@pytest.mark.parametrize("ema", [True, False])
def test_safetensors_round_trip(tmp_path: Path, ckpt: Path, generators: Generators, ema: bool) -> None:
    out = tmp_path / "generator.safetensors"
    export_safetensors(ckpt, out, prefer_ema=ema)
    with safe_open(out, framework="pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["sr_gan.generator"]) == CONFIG and metadata["sr_gan.scale"] == "2"
    assert metadata["sr_gan.ema"] == str(ema).lower()  # the file says which generator it holds
    loaded, info = load_generator(out)
    assert info == {"scale": 2, "config": CONFIG, "source": "safetensors", "ema": ema}
    assert torch.equal(upscale(loaded), upscale(generators[1] if ema else generators[0]))


def test_export_never_overwrites_its_input(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "generator.safetensors"
    export_safetensors(ckpt, out)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="is also an input"):
        export_safetensors(tmp_path / "." / "generator.safetensors", out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator.safetensors", "last.ckpt"]  # no temp files


def test_onnx_matches_pytorch_on_two_sizes(tmp_path: Path, generators: Generators) -> None:
    generator, other = generators
    path = tmp_path / "generator.onnx"
    export_onnx(generator, path, opset=17)
    assert check_onnx(generator, path) <= 1e-4  # ONNX_CHECK_SIZES: dynamic axes, an odd size padded
    with pytest.raises(ValueError, match="onnxruntime differs from PyTorch"):
        check_onnx(other, path)  # the check can fail
    # The graph declares the output's height and width apart from the input's (it is twice as large):
    # one name for both tells a runtime that trusts the declared shapes (buffer binding) a wrong size.
    graph = onnx.load(str(path)).graph
    assert dims(graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(graph.output[0]) == ["batch", 3, "sr_height", "sr_width"]


@pytest.mark.parametrize(("scale", "opset"), [(1, 10), (2, 17)])
def test_onnx_of_an_unshuffling_rrdbnet_takes_any_size(tmp_path: Path, scale: int, opset: int) -> None:
    """x1 / x2 RRDBNets pixel-unshuffle their input by 4 / 2: their graph failed in onnxruntime on
    sides that are not multiples of it (a Reshape of {1,3,17,1,16}), though it declares a dynamic
    height and width. It pads (replicate) and crops as `sr_tiles` does in PyTorch: equal to the
    tiled forward pass, which pads the same way, on odd sizes, and to the plain one on multiples
    of 4, down to the oldest opset allowed (10)."""
    generator, path = tiny_rrdbnet(scale=scale), tmp_path / "generator.onnx"
    export_onnx(generator, path, opset=opset)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in ((17, 15), (5, 3), (1, 1), (16, 12)):
        lr = torch.rand(1, 3, *size)  # (B, C, h, w)
        (sr,) = session.run(None, {"lr": lr.numpy()})  # (B, C, h·s, w·s)
        expected = tiled_forward(generator, lr, scale=scale, tile=0, overlap=0)
        torch.testing.assert_close(torch.from_numpy(sr), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(sr), generator(lr), rtol=0, atol=1e-5)  # 16 x 12: no padding


def dims(value: onnx.ValueInfoProto) -> list[str | int]:
    """The declared shape of an ONNX input or output: a name for a dynamic axis, else its size."""
    return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]


class Times(nn.Module):
    """x * factor; with `factor_for_one`, that factor for a batch of one image instead."""

    def __init__(self, factor: float, factor_for_one: float | None = None) -> None:
        super().__init__()
        self.factor, self.factor_for_one = factor, factor_for_one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one = self.factor_for_one is not None and x.shape[0] == 1  # (exported without it: no trace warning)
        return x * (self.factor_for_one if one else self.factor)


def test_the_onnx_check_fails_on_a_difference_at_any_of_its_sizes(tmp_path: Path) -> None:
    """check_onnx reports the worst of its sizes: a network that differs from the file only on the
    first size (a batch of one) fails it, as one that differs only on the last does."""
    path = tmp_path / "times3.onnx"
    export_onnx(Times(3.0), path)
    assert check_onnx(Times(3.0), path) == 0.0
    for network in (Times(3.0, factor_for_one=2.0), Times(2.0, factor_for_one=3.0)):
        with pytest.raises(ValueError, match="onnxruntime differs from PyTorch by"):
            check_onnx(network, path)


def test_a_full_disk_is_one_line_and_keeps_the_previous_export(tmp_path: Path, ckpt: Path) -> None:
    """The safetensors file is written beside its name and renamed over it: a write that runs out of
    space (here: this process's files may not grow past half the file) leaves the previous export
    whole and no temporary file, in one line (it was safetensors' SafetensorError traceback). The
    export gets a new file's permissions (safetensors 0.8 creates its own files 0600: weights
    no one else on the machine could read)."""
    out = tmp_path / "generator.safetensors"
    export_safetensors(ckpt, out)
    (tmp_path / "new_file").touch()
    assert out.stat().st_mode & 0o777 == (tmp_path / "new_file").stat().st_mode & 0o777
    (tmp_path / "new_file").unlink()
    before = out.read_bytes()
    with file_size_limit(len(before) // 2), pytest.raises(UserError) as info:
        export_safetensors(ckpt, out, prefer_ema=False)
    assert str(info.value) == (
        f"cannot write {out}: File too large; free space there or choose another out= "
        "(an earlier generator.safetensors is left as it was)"
    )
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator.safetensors", "last.ckpt"]


def test_a_full_disk_under_the_onnx_file_is_one_line_naming_the_file_written(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`onnx=` on a full disk (here: files may not grow past the safetensors export, which the ONNX
    graph, holding the same weights, outgrows) was torch's OSError traceback, exit 1, after the
    safetensors file had been written. Now one line that names the ONNX file and the fix, and says
    that the safetensors file was written (it is whole and loads on its own); no temporary file."""
    export_safetensors(ckpt, tmp_path / "first.safetensors")
    size = (tmp_path / "first.safetensors").stat().st_size
    out, onnx_file = tmp_path / "gen.safetensors", tmp_path / "full" / "gen.onnx"
    with file_size_limit(size), pytest.raises(SystemExit) as exited:
        main(tool_cfg("export", f"ckpt={ckpt}", f"out={out}", f"onnx={onnx_file}"))
    assert exited.value.code == 2 and capsys.readouterr().err == (
        f"error: cannot write {onnx_file}: File too large; free space there or choose another onnx= "
        f"(an earlier gen.onnx is left as it was); {out} was written and is whole\n"
    )
    assert load_generator(out)[1]["scale"] == 2 and not any((tmp_path / "full").iterdir())


@pytest.mark.slow
def test_cli_writes_only_the_requested_files(tmp_path: Path, ckpt: Path, generators: Generators) -> None:
    overrides = ["ckpt=last.ckpt", "out=gen.safetensors", "onnx=gen.onnx", "onnx_check=true"]
    proc = run_module("sr_gan.export", *overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "max abs diff" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.onnx", "gen.safetensors", "last.ckpt"]
    loaded, info = load_generator(tmp_path / "gen.safetensors")
    assert torch.equal(upscale(loaded), upscale(generators[1]))  # EMA by default


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["out=gen.safetensors"], "'ckpt' is not set: add ckpt="),
        (["ckpt=last.ckpt", "out=gen.pth"], "out=gen.pth must end in .safetensors"),
        (["ckpt=last.ckpt", "out=last.ckpt/gen.safetensors"], "out=last.ckpt/gen.safetensors: cannot write in"),
        # the output's new folder is not made by a refused command
        (["ckpt=last.ckpt", "out=new/gen.safetensors", "onnx=last.ckpt/g.onnx"], "onnx=last.ckpt/g.onnx: cannot write"),
        (["ckpt=last.ckpt", "out=gen.safetensors", "ema=abc"], "ema=abc is not allowed: ema must be true or false"),
        # checked before the safetensors file is written, not after
        (["ckpt=last.ckpt", "out=gen.safetensors", "onnx=g.onnx", "onnx_opset=3"], "onnx_opset must be an integer"),
        # 9 has no Slice of dynamic ends, which the graph of an x1 / x2 RRDBNet crops with
        (["ckpt=last.ckpt", "out=gen.safetensors", "onnx=g.onnx", "onnx_opset=9"], "must be an integer >= 10"),
        # a check without an ONNX file to check: no silent exit 0 with nothing checked
        (
            ["ckpt=last.ckpt", "out=gen.safetensors", "onnx_check=true"],
            "onnx_check=true checks an ONNX file: set onnx=",
        ),
    ],
)
def test_cli_bad_key_is_one_line_and_exit_2(tmp_path: Path, ckpt: Path, overrides: list[str], message: str) -> None:
    proc = run_module("sr_gan.export", *overrides, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_cli_refuses_a_folder_as_output(tmp_path: Path, ckpt: Path) -> None:
    (tmp_path / "gen.safetensors").mkdir()
    proc = run_module("sr_gan.export", "ckpt=last.ckpt", "out=gen.safetensors", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: out=gen.safetensors is a folder: pass a file name, e.g. out=generator.safetensors"
    )


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_onnx_without_its_package_is_refused_before_any_file_is_written(
    tmp_path: Path, ckpt: Path, missing: str
) -> None:
    """onnx= on an install without the optional onnx package (onnx_check=true: onnxruntime) was a
    traceback from torch's exporter (or the check) after gen.safetensors had been written."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / f"{missing}.py").write_text(f"raise ModuleNotFoundError({missing!r}, name={missing!r})\n")
    overrides = ["ckpt=last.ckpt", "out=gen.safetensors", "onnx=gen.onnx", "onnx_check=true"]
    proc = run_module("sr_gan.export", *overrides, cwd=tmp_path, env={"PYTHONPATH": str(blocker)})
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert f"needs the {missing} package, which is not installed: pip install {missing}" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "last.ckpt"]


def test_cli_a_crafted_file_whose_params_are_a_tensor_is_one_line(tmp_path: Path) -> None:
    torch.save({"params": torch.zeros(3)}, tmp_path / "crafted.pth")
    proc = run_module("sr_gan.export", "ckpt=crafted.pth", "out=gen.safetensors", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: crafted.pth: 'params' holds a Tensor, not a state dict (names to tensors): the file is damaged or "
        "not a weight file"
    )


def test_main_passes_ema_on_and_says_which_weights_it_wrote(
    tmp_path: Path, ckpt: Path, generators: Generators, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ema=false` reaches the loader (the live G is written), and the message says which weights the
    file gave, not which were asked for: a file without EMA gives non-EMA weights under `ema=true`."""
    live = tmp_path / "live.safetensors"
    main(tool_cfg("export", f"ckpt={ckpt}", f"out={live}", "ema=false"))
    assert torch.equal(upscale(load_generator(live)[0]), upscale(generators[0]))
    again = tmp_path / "again.safetensors"
    main(tool_cfg("export", f"ckpt={live}", f"out={again}"))  # ema=true (the default): the file has none
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {live}: sr_gan.archs.RRDBNet x2, non-EMA weights from a lightning file",
        f"wrote {again}: sr_gan.archs.RRDBNet x2, non-EMA weights from a safetensors file",
    ]


def test_the_generator_key_builds_a_plain_state_dict_of_another_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain state dict of an SRResNet: the loader cannot infer its config and says to pass
    `generator=...`; export had no such key (Hydra refused it). Now it takes it, as upscale and
    evaluate do, and the file it writes holds the same weights and stores that config."""
    torch.manual_seed(0)
    network = SRResNet(scale=4, num_blocks=2).eval()
    ckpt, out = tmp_path / "srresnet.pth", tmp_path / "srresnet.safetensors"
    torch.save(network.state_dict(), ckpt)
    with pytest.raises(SystemExit):
        main(tool_cfg("export", f"ckpt={ckpt}", f"out={out}"))
    assert "pass the network's config, e.g. 'generator={" in capsys.readouterr().err
    config = "{_target_:sr_gan.archs.SRResNet,scale:4,num_blocks:2}"
    main(tool_cfg("export", f"ckpt={ckpt}", f"out={out}", f"generator={config}"))
    loaded, info = load_generator(out)  # no generator= needed any more: the file stores it
    assert info["config"] == {"_target_": "sr_gan.archs.SRResNet", "scale": 4, "num_blocks": 2}
    assert all(torch.equal(value, network.state_dict()[key]) for key, value in loaded.state_dict().items())


def test_an_export_of_an_export_still_says_ema_and_a_plain_state_dict_says_it_does_not_know(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The safetensors file did not record whether it held the EMA generator: exporting it again
    (or any tool reading it) said "non-EMA" for EMA weights. It records it now; a plain state dict,
    which does not say, is no longer called non-EMA either."""
    first, again, plain = (tmp_path / f"{name}.safetensors" for name in ("first", "again", "plain"))
    main(tool_cfg("export", f"ckpt={ckpt}", f"out={first}"))  # the EMA, by default
    main(tool_cfg("export", f"ckpt={first}", f"out={again}"))
    torch.save(load_generator(first)[0].state_dict(), tmp_path / "plain.pth")
    main(tool_cfg("export", f"ckpt={tmp_path / 'plain.pth'}", f"out={plain}"))
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {first}: sr_gan.archs.RRDBNet x2, EMA weights from a lightning file",
        f"wrote {again}: sr_gan.archs.RRDBNet x2, EMA weights from a safetensors file",
        f"wrote {plain}: sr_gan.archs.RRDBNet x2, weights from a state_dict file "
        "(it does not say whether they are an EMA)",
    ]
    assert "sr_gan.ema" not in load_state_file(plain)["metadata"]


def test_main_exports_a_grey_generator_to_onnx_at_the_opset_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`export.main` takes the ONNX input's channels from the file's config (a 1-channel generator
    has a 1-channel graph; a 3-channel sample fails its export) and passes `onnx_opset` on."""
    config = {"_target_": "sr_gan.archs.RRDBNet", **TINY_RRDBNET, "scale": 2, "in_channels": 1, "out_channels": 1}
    torch.manual_seed(0)
    grey = RRDBNet(**{k: v for k, v in config.items() if k != "_target_"})
    save_generator_file(tmp_path / "grey.safetensors", grey.state_dict(), config=config, scale=2)
    onnx_file = tmp_path / "grey.onnx"
    overrides = [f"onnx={onnx_file}", "onnx_opset=13", "onnx_check=true"]
    main(tool_cfg("export", f"ckpt={tmp_path / 'grey.safetensors'}", f"out={tmp_path / 'out.safetensors'}", *overrides))
    model = onnx.load(str(onnx_file))
    assert dims(model.graph.input[0]) == ["batch", 1, "height", "width"]
    assert [opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")] == [13]
    assert "onnxruntime vs PyTorch: max abs diff" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ckpt=missing.ckpt"], "ckpt=missing.ckpt: no such file; pass an existing file, e.g. ckpt=last.ckpt"),
        # an ONNX file over the checkpoint it exports (a torch file named .onnx): refused, the file kept
        (["ckpt=last.onnx", "onnx=last.onnx"], "onnx=last.onnx is also an input: choose another output file"),
    ],
)
def test_main_refuses_in_one_line_and_writes_nothing(
    tmp_path: Path,
    ckpt: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt.rename("last.onnx")
    before = (tmp_path / "last.onnx").read_bytes()
    with pytest.raises(SystemExit) as exited:
        main(tool_cfg("export", "out=gen.safetensors", *overrides))
    assert exited.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.onnx"]
    assert (tmp_path / "last.onnx").read_bytes() == before
