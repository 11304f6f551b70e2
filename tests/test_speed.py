"""Speed switches change the speed, not the result (within the stated tolerances)."""

from __future__ import annotations

import pytest
import torch

from sr_gan.archs import RRDBNet
from sr_gan.train import train
from tests.test_train import _fit


def _generator_after(make_cfg, *overrides: str) -> list[torch.Tensor]:
    """G's weights after a short fit from the same initial weights."""
    torch.manual_seed(0)
    module, _ = _fit(make_cfg("model.ema_decay=null", *overrides))
    return [p.detach().clone() for p in module.generator.parameters()]


def _assert_close(a: list[torch.Tensor], b: list[torch.Tensor], **tolerance: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, **tolerance)


def test_accumulating_two_batches_of_8_equals_one_of_16(make_cfg) -> None:
    """L1 and a BN-free RRDBNet: both see patches 0-15 of the stream, the gradients are averaged."""
    whole = _generator_after(make_cfg, "data.batch_size=16", "trainer.max_steps=2")
    halves = _generator_after(make_cfg, "data.batch_size=8", "optim.accumulate_batches=2", "trainer.max_steps=2")
    single = _generator_after(make_cfg, "data.batch_size=8", "trainer.max_steps=2")
    _assert_close(whole, halves, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(w, s, rtol=1e-3, atol=1e-5) for w, s in zip(whole, single))  # not a no-op


def test_accumulation_counts_iterations_for_the_gan_schedule(make_cfg) -> None:
    module, trainer = _fit(
        make_cfg("loss=ragan", "optim.accumulate_batches=2", "trainer.max_steps=3", "optim.scheduler.milestones=[2]")
    )
    assert module.batches_done == 6 and module.iterations_done == 3
    assert trainer.global_step == 6  # G and D stepped once per iteration each
    assert [
        s.last_epoch for s in trainer.lr_scheduler_configs and [c.scheduler for c in trainer.lr_scheduler_configs]
    ] == [3, 3]


@pytest.mark.parametrize(
    ("switch", "tolerance"),
    [
        ("model.channels_last=true", {"rtol": 1e-4, "atol": 1e-6}),
        ("optim.generator.fused=true", {"rtol": 1e-4, "atol": 1e-6}),
        ("model.compile=eager", {"rtol": 0.0, "atol": 0.0}),  # dynamo tracing only: the same kernels
    ],
)
def test_a_speed_switch_keeps_the_result(make_cfg, switch: str, tolerance: dict[str, float]) -> None:
    base = _generator_after(make_cfg, "trainer.max_steps=2")
    _assert_close(base, _generator_after(make_cfg, "trainer.max_steps=2", switch), **tolerance)


def test_a_job_that_compiled_leaves_no_compiled_code_behind(make_cfg) -> None:
    """A sweep's jobs share one process (Hydra's basic launcher, an Optuna search): dynamo kept every
    job's compiled networks and compiled each new architecture beside them, so from the 9th value of
    a sweep over model.generator.num_blocks G trained uncompiled (dynamo's recompile_limit, 8; measured
    on a 10-job sweep), with one warning among the logs. A job that compiled resets dynamo as it ends."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    torch._dynamo.reset()
    train(make_cfg("model.ema_decay=null", "trainer.max_steps=1", "model.compile=eager", "test=false"))
    assert _debug_get_cache_entry_list(RRDBNet.forward.__code__) == []


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(make_cfg) -> None:
    from torch._dynamo import register_backend

    @register_backend(name="sr_gan_test_broken")
    def broken(graph_module, example_inputs):  # noqa: ANN001, ANN202
        raise RuntimeError("no C compiler here")

    base = _generator_after(make_cfg, "trainer.max_steps=2")
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="model.compile=sr_gan_test_broken"):
        module, _ = _fit(make_cfg("model.ema_decay=null", "trainer.max_steps=2", "model.compile=sr_gan_test_broken"))
    _assert_close(base, [p.detach() for p in module.generator.parameters()], rtol=0.0, atol=0.0)


def test_validation_scores_in_float32_under_bf16_autocast(make_cfg, tmp_path) -> None:
    """Under bf16-mixed the bicubic baseline moved by up to 0.007 dB: metrics must be float32 whatever
    the training precision."""
    import lightning as L
    from hydra.utils import instantiate

    from sr_gan.metrics import psnr
    from sr_gan.ops import imresize

    cfg = make_cfg("model.ema_decay=null")
    scores = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        module, datamodule = instantiate(cfg.module), instantiate(cfg.data)
        trainer = L.Trainer(
            accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False, default_root_dir=tmp_path
        )
        (scores[precision],) = trainer.validate(module, datamodule=datamodule, verbose=False)
    datamodule.setup("validate")
    expected = []
    for item in datamodule.val_set:
        hr = item["hr"][None].float() / 255
        lr = datamodule.on_after_batch_transfer(
            datamodule.on_before_batch_transfer(
                {**item, "hr": item["hr"][None], "index": torch.tensor([item["index"]])}, 0
            ),
            0,
        )["lr"]
        expected.append(psnr(imresize(lr, 4), hr, crop_border=4))
    reference = float(torch.cat(expected).mean())
    for precision, score in scores.items():
        assert score["val/psnr_bicubic"] == pytest.approx(reference, abs=1e-6), precision
    assert scores["bf16-mixed"]["val/psnr"] == pytest.approx(scores["32-true"]["val/psnr"], abs=1e-6)


def test_compile_mode_reaches_inductor_and_keeps_the_result(make_cfg, monkeypatch) -> None:
    """model.compile_mode is inductor's mode (reduce-overhead: CUDA graphs on a GPU; on a CPU inductor
    compiles the same graphs without them); each batch marks a new CUDA-graph step."""
    marks = []
    mark = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1) or mark())
    base = _generator_after(make_cfg, "trainer.max_steps=2")
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="model.compile=inductor, mode reduce-overhead"):
        graphs = ("model.compile=true", "model.compile_mode=reduce-overhead")
        module, _ = _fit(make_cfg("model.ema_decay=null", "trainer.max_steps=2", *graphs))
    assert len(marks) == 2
    _assert_close(base, [p.detach() for p in module.generator.parameters()], rtol=1e-4, atol=1e-6)


def test_a_compiled_generator_validates_eagerly(make_cfg, tmp_path) -> None:
    """Validation images differ in size: a compiled G (no EMA copy, so validation uses it) would
    recompile, and in a CUDA-graph mode record a graph, for each. It runs eagerly there, and
    compiled again afterwards."""
    import lightning as L
    from hydra.utils import instantiate
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # graphs of earlier tests (same forward code) would serve the shapes below
    cfg = make_cfg("model.ema_decay=null", "trainer.max_steps=1", "model.compile=eager")
    module, _ = _fit(cfg)
    graphs = lambda: counters["stats"]["unique_graphs"]  # noqa: E731
    before = graphs()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.validate(module, datamodule=instantiate(cfg.data), verbose=False)
    assert "val/psnr" in trainer.callback_metrics and graphs() == before  # validated, compiling nothing
    module.generator(torch.rand(1, 3, 11, 13))  # a shape validation did not see: compiled again
    assert graphs() > before


def test_a_compile_mode_it_cannot_honour_is_one_line(make_cfg, capsys) -> None:
    from hydra.utils import instantiate

    from sr_gan.errors import exit_on_user_error

    cases = [("model.compile=false",), ("model.compile=eager",), ("model.compile=true", "optim.accumulate_batches=2")]
    for overrides in cases:
        cfg = make_cfg(*overrides, "model.compile_mode=reduce-overhead")
        with pytest.raises(SystemExit):
            exit_on_user_error(instantiate)(cfg.module)
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error: model.compile_mode=reduce-overhead") and line.endswith("model.compile_mode=null")


def test_compiling_keeps_the_result_of_a_gan_step(make_cfg) -> None:
    """ESRGAN's losses (L1, the VGG19 perceptual loss, RaGAN with the VGG-style D): model.compile
    reaches the perceptual loss's network too, and G trains exactly as without it."""
    base = _generator_after(make_cfg, "loss=ragan", "trainer.max_steps=2")
    torch.manual_seed(0)
    module, _ = _fit(make_cfg("model.ema_decay=null", "loss=ragan", "trainer.max_steps=2", "model.compile=eager"))
    _assert_close(base, [p.detach() for p in module.generator.parameters()], rtol=0.0, atol=0.0)
    compiled = [n for n in ("generator", "discriminator", "perceptual_loss") if getattr(module, n)._compiled_call_impl]
    assert compiled == ["generator", "discriminator", "perceptual_loss"]


def test_channels_last_keeps_the_losses_and_gradients_of_a_gan_step(make_cfg) -> None:
    """One ESRGAN G step's terms (L1, VGG19 perceptual, RaGAN) and G's gradients in NHWC equal the
    NCHW ones, up to float rounding. (Weights after a few Adam steps are no test: Adam turns the
    last-bit differences of near-zero gradients into steps of the learning rate's size.)"""
    from hydra.utils import instantiate

    from sr_gan.lit import SRGANModule

    cfg = make_cfg("loss=ragan")
    found = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        module = SRGANModule(**instantiate(cfg.module, _target_="builtins.dict", channels_last=channels_last))
        module.configure_model()
        torch.manual_seed(1)
        lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)  # (B, 3, h, w), (B, 3, 4h, 4w)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        sr = module.generator(lr.contiguous(memory_format=layout))
        terms = module.generator_losses(sr, hr.contiguous(memory_format=layout))
        torch.stack(list(terms.values())).sum().backward()
        found.append((terms, [p.grad for p in module.generator.parameters()]))
    (nchw, nchw_grads), (nhwc, nhwc_grads) = found
    assert nchw.keys() == {"pix", "percep", "gan"}
    _assert_close([*nchw.values()], [*nhwc.values()], rtol=1e-5, atol=1e-7)
    for a, b in zip(nchw_grads, nhwc_grads, strict=True):  # each gradient as a whole: measured <= 2e-3 of its
        # norm, from the GAN term (through D's BatchNorm; the perceptual term 3e-4, L1 2e-7): another order of
        # sums, grown by deep random networks. A layout mistake (channels mixed up) is off by the whole norm.
        assert torch.linalg.vector_norm(a - b) <= 1e-2 * torch.linalg.vector_norm(a)


def test_channels_last_reaches_every_convolution_of_a_gan_step(make_cfg) -> None:
    """model.channels_last=true: every convolution of an ESRGAN step (G, D and the perceptual loss's
    VGG19) sees NHWC weights and input and gives NHWC output. A network left in NCHW converts its
    weights at each call, one more kernel per convolution on a GPU (the VGG did)."""
    from torch import nn

    seen: dict[str, list[bool]] = {"generator": [], "discriminator": [], "perceptual_loss": []}

    def watch(module) -> None:  # noqa: ANN001
        for name, calls in seen.items():
            for conv in (m for m in getattr(module, name).modules() if isinstance(m, nn.Conv2d)):
                conv.register_forward_hook(
                    lambda conv, args, out, calls=calls: calls.append(
                        all(t.is_contiguous(memory_format=torch.channels_last) for t in (args[0], conv.weight, out))
                    )
                )

    _fit(make_cfg("loss=ragan", "model.channels_last=true", "trainer.max_steps=1"), prepare=watch)
    assert all(calls and all(calls) for calls in seen.values()), {k: (len(v), sum(v)) for k, v in seen.items()}
