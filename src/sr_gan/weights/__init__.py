"""Safe loading of generator checkpoints and weight files (paths or URLs), key conversion, safetensors writing."""

from sr_gan.weights.files import (
    UnsafeCheckpointError,
    load_state_file,
    non_finite_keys,
    refuse_overwrite,
    save_generator_file,
)
from sr_gan.weights.generator import (
    GeneratorWeights,
    as_generator_config,
    find_generator_weights,
    fit_problems,
    infer_rrdbnet_config,
    load_generator,
    load_generator_weights,
    with_defaults,
)
from sr_gan.weights.keys import esrgan_old_to_ours, ours_to_esrgan_old, ours_to_sequential, sequential_to_ours
from sr_gan.weights.remote import cached_download, is_url

__all__ = [
    "GeneratorWeights",
    "UnsafeCheckpointError",
    "as_generator_config",
    "cached_download",
    "esrgan_old_to_ours",
    "find_generator_weights",
    "fit_problems",
    "infer_rrdbnet_config",
    "is_url",
    "load_generator",
    "load_generator_weights",
    "load_state_file",
    "non_finite_keys",
    "ours_to_esrgan_old",
    "ours_to_sequential",
    "refuse_overwrite",
    "save_generator_file",
    "sequential_to_ours",
    "with_defaults",
]
