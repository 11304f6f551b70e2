"""Small parts shared by the networks: weight init, layer stacking, parameter count, size check."""

from collections.abc import Callable, Iterable

import torch
from torch import nn

from sr_gan.errors import UserError


@torch.no_grad()
def default_init_weights(modules: Iterable[nn.Module], scale: float = 1.0) -> None:
    """Kaiming-normal init (fan_in, ReLU gain) multiplied by `scale`, zero bias.

    ESRGAN (Wang et al. 2018, Sec. 3.1) initialises residual branches with kaiming normal x 0.1 so
    that each block starts close to the identity; `scale=0.1` reproduces that.
    """
    for module in modules:
        nn.init.kaiming_normal_(module.weight)
        module.weight.mul_(scale)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def make_layer(block: Callable[[], nn.Module], num_blocks: int) -> nn.Sequential:
    """Stack `num_blocks` fresh blocks; their state-dict keys are `{i}.<block keys>`."""
    return nn.Sequential(*(block() for _ in range(num_blocks)))


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of `module` (trainable or not), each shared tensor counted once."""
    return sum(p.numel() for p in module.parameters())


def check_input_size(network: str, input_size: int, x: torch.Tensor) -> None:
    """Raise a UserError (a ValueError) unless `x` is (B, C, input_size, input_size).

    Discriminators ending in a Linear layer only accept the patch size they were built for.
    """
    height, width = x.shape[-2:]
    if (height, width) != (input_size, input_size):
        raise UserError(
            f"{network} was built for {input_size}x{input_size} inputs but got {height}x{width}: "
            f"set discriminator.input_size to data.patch_size ({height})"
        )


def check_input_size_multiple(network: str, input_size: int, factor: int) -> None:
    """Raise a UserError (a ValueError) unless `input_size` is a positive multiple of `factor`."""
    if input_size <= 0 or input_size % factor:
        raise UserError(
            f"{network}: input_size={input_size} must be a positive multiple of {factor} (the network "
            f"downsamples by {factor}): set data.patch_size to a multiple of {factor}"
        )
