"""Network interpolation (Wang et al. 2018, ESRGAN Sec. 3.4).

    theta_interp = (1 - alpha) * theta_PSNR + alpha * theta_GAN

A smooth trade-off between the PSNR-oriented generator and the GAN generator fine-tuned from it,
without retraining:

    python -m sr_gan.interpolate psnr=PATH gan=PATH alpha=0.8 out=interpolated.safetensors [generator={...}]
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from sr_gan.cli import hydra_command
from sr_gan.config import path_arg
from sr_gan.errors import UserError, exit_on_user_error
from sr_gan.schema import INTERPOLATE, validate
from sr_gan.weights import as_generator_config, load_generator, refuse_overwrite, save_generator_file, with_defaults

StateDict = dict[str, torch.Tensor]


def interpolate_state_dicts(psnr: StateDict, gan: StateDict, alpha: float) -> StateDict:
    """theta = (1 - alpha) * theta_PSNR + alpha * theta_GAN for every floating-point tensor.

    Computed with `torch.lerp`, which returns its end points exactly at alpha = 0 and 1. Integer
    buffers (BatchNorm's num_batches_tracked) are counters, not weights: they are taken from the
    nearer end point (PSNR for alpha < 0.5, GAN otherwise).
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha={alpha} is outside [0, 1]: 0 gives the PSNR model, 1 the GAN model")
    if psnr.keys() != gan.keys():
        only_psnr, only_gan = sorted(psnr.keys() - gan.keys()), sorted(gan.keys() - psnr.keys())
        raise UserError(
            f"the state dicts have different keys (only PSNR: {only_psnr[:5]}, only GAN: {only_gan[:5]}): "
            "interpolate two generators of one architecture"
        )
    interpolated = {}
    for key, start in psnr.items():
        end = gan[key]
        if start.shape != end.shape or start.dtype != end.dtype:
            raise UserError(
                f"'{key}' is {start.dtype} {tuple(start.shape)} in PSNR but {end.dtype} {tuple(end.shape)} in GAN: "
                "interpolate two generators of one architecture"
            )
        if start.is_floating_point():
            interpolated[key] = torch.lerp(start, end, alpha)
        else:
            interpolated[key] = (start if alpha < 0.5 else end).clone()
    return interpolated


def interpolate_files(
    psnr: str | Path,
    gan: str | Path,
    out: str | Path,
    *,
    alpha: float,
    prefer_ema: bool = True,
    generator_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Interpolate the generators of two files and write the result to `out` (safetensors).

    Both files must hold the same generator config and scale; returns `{"config", "scale"}`.
    `generator_config` (the `generator` key) builds both instead of the configs stored in the files,
    as in `load_generator`.
    """
    refuse_overwrite(out, psnr, gan)
    psnr_generator, psnr_info = load_generator(psnr, prefer_ema=prefer_ema, generator_config=generator_config)
    gan_generator, gan_info = load_generator(gan, prefer_ema=prefer_ema, generator_config=generator_config)
    config = psnr_info["config"]
    psnr_config, gan_config = with_defaults(config), with_defaults(gan_info["config"])
    if psnr_config != gan_config or psnr_info["scale"] != gan_info["scale"]:
        differ = sorted(k for k in psnr_config.keys() | gan_config.keys() if psnr_config.get(k) != gan_config.get(k))
        raise UserError(
            f"psnr={psnr} and gan={gan} hold different generators (config keys {differ}, scales "
            f"{psnr_info['scale']} / {gan_info['scale']}): interpolate a GAN model with the PSNR model "
            "it was fine-tuned from"
        )
    state = interpolate_state_dicts(psnr_generator.state_dict(), gan_generator.state_dict(), alpha)
    save_generator_file(out, state, config=config, scale=psnr_info["scale"])  # no EMA flag: a blend of two
    return {"config": config, "scale": psnr_info["scale"]}


@hydra_command("interpolate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    validate(cfg, INTERPOLATE)
    generator_config = as_generator_config(cfg.generator)
    psnr = path_arg(cfg, "psnr", example="psnr.ckpt", must_exist=True, url=True)
    gan = path_arg(cfg, "gan", example="gan.ckpt", must_exist=True, url=True)
    out = path_arg(cfg, "out", example="interpolated.safetensors", suffix=".safetensors", output=True)
    info = interpolate_files(
        psnr, gan, out, alpha=float(cfg.alpha), prefer_ema=cfg.ema, generator_config=generator_config
    )
    print(f"wrote {out}: {info['config']['_target_']} x{info['scale']}, alpha={cfg.alpha}")


if __name__ == "__main__":
    main()
