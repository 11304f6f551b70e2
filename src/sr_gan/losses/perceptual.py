"""VGG19 perceptual loss: SRGAN's VGG loss (after ReLU) and ESRGAN's loss before activation.

Layer names follow the VGG papers: ``conv{i}_{j}`` is the j-th conv of block i *before* its ReLU,
``relu{i}_{j}`` the same map after the ReLU, ``pool{i}`` the block's max-pool. SRGAN's phi_{5,4}
("VGG54") is ``relu5_4`` and VGG22 is ``relu2_2``; ESRGAN uses ``conv5_4`` (torchvision
``vgg19().features[:35]``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import torch
from torch import Tensor, nn
from torchvision.models import VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

from sr_gan.errors import InputWarning, UserError
from sr_gan.weights.files import is_safetensors, load_state_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_VGG19_CFG = cfgs["E"]  # torchvision's VGG19 layout: conv widths, "M" = max-pool

RANDOM_VGG_WARNING = (
    "perceptual loss uses a RANDOM VGG19: the loss is not perceptual; "
    "set loss.perceptual.weights=/path/vgg19.pth or connect to the internet"
)


def _vgg19_layer_index() -> dict[str, int]:
    """``{"conv1_1": 0, "relu1_1": 1, ..., "conv5_4": 34, "relu5_4": 35, "pool5": 36}``."""
    index: dict[str, int] = {}
    position, block, conv = 0, 1, 1
    for width in _VGG19_CFG:
        if width == "M":
            index[f"pool{block}"] = position
            position, block, conv = position + 1, block + 1, 1
        else:
            index[f"conv{block}_{conv}"] = position
            index[f"relu{block}_{conv}"] = position + 1
            position, conv = position + 2, conv + 1
    return index


VGG19_LAYER_INDEX: Mapping[str, int] = MappingProxyType(_vgg19_layer_index())
"""VGG19 layer name → index in torchvision's ``vgg19().features``."""


def _load_features(state: Mapping[str, Tensor]) -> nn.Sequential:
    """``vgg19().features`` built alone (no 120 M-parameter classifier) and loaded from a
    torchvision VGG19 state_dict, whole model or features only; strict, so a foreign file raises."""
    features = make_layers(_VGG19_CFG)
    features.load_state_dict(
        {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    )
    return features


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a torchvision VGG19 state_dict file (.pth or .safetensors)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG19 weights file not found: {path} (set loss.perceptual.weights to an existing "
            ".pth/.safetensors torchvision vgg19 state_dict)"
        )
    loaded = load_state_file(path)
    return loaded["tensors"] if is_safetensors(loaded) else loaded


def _warn_random_vgg() -> None:
    # One warning; sr_gan.train routes warnings into train.log and records it in config.yaml and W&B.
    warnings.warn(RANDOM_VGG_WARNING, InputWarning, stacklevel=4)


def _vgg19_features(*, pretrained: bool, weights: str | None, allow_random: bool) -> tuple[nn.Sequential, bool]:
    """``vgg19().features`` with weights from a file, torchvision's ImageNet download, or random;
    and whether they are random (what actually runs, which the run records)."""
    if weights is not None:
        path = Path(weights).expanduser()
        try:
            return _load_features(_read_state_dict(path)), False
        except RuntimeError as err:
            first_line = str(err).splitlines()[0]
            raise UserError(
                f"loss.perceptual.weights={path} is not a torchvision vgg19 state_dict ({first_line})"
            ) from None
    if pretrained:
        try:  # what vgg19(weights=IMAGENET1K_V1) downloads, hash checked
            state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
        except (OSError, RuntimeError) as err:  # offline (URLError is an OSError) or a bad download
            if not allow_random:
                raise UserError(
                    f"could not get the ImageNet VGG19 weights ({err}): set "
                    "loss.perceptual.weights=/path/vgg19.pth (torchvision vgg19-dcbb9e9d.pth) or "
                    "connect to the internet (allow_random_vgg=true trains with a random VGG)"
                ) from err
        else:
            return _load_features(state), False
    _warn_random_vgg()
    return _random_features(), True


def _random_features() -> nn.Sequential:
    """``vgg19().features`` with torchvision's initialisation of its convs, built without the
    120 M-parameter classifier that ``vgg19()`` would create and initialise first (about 4 s on a CPU).

    Same distribution as torchvision's random VGG19, not the same draws (the classifier's are skipped).
    """
    features = make_layers(_VGG19_CFG)
    for layer in features:
        if isinstance(layer, nn.Conv2d):  # as torchvision's VGG.__init__(init_weights=True)
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)
    return features


class PerceptualLoss(nn.Module):
    """Distance between VGG19 feature maps of SR and HR images (SRGAN Eq. 5, ESRGAN Sec. 3.3).

    L_percep = sum_l w_l * criterion(s * phi_l(SR), s * phi_l(HR))

    with phi_l the VGG19 map named ``l`` of the ImageNet-normalised RGB input, w_l its weight and
    s = ``feature_scale``. ESRGAN: ``layers=["conv5_4"]`` with L1 and s = 1. SRGAN: ``["relu5_4"]``
    (or ``["relu2_2"]``) with MSE and s = 1/12.75 (Ledig et al. 2017, Sec. 3.2: the feature maps are
    rescaled by 1/12.75, "equivalent to multiplying Eq. 5 with a rescaling factor of ~0.006" =
    1/12.75^2 for MSE). The value is unweighted; the GAN module applies the objective's weight.

    The VGG is truncated after the deepest requested layer, run once per image batch, frozen, kept
    in eval mode, and run in float32 even under autocast. HR features are computed without grad.

    Args:
        layers: VGG19 layer names (:data:`VGG19_LAYER_INDEX`). Lists rather than a mapping so that
            a Hydra override replaces the set (``loss.perceptual.layers=[conv2_2,conv3_4]``):
            Hydra merges mappings key by key, which would keep the config's layer beside the new.
        layer_weights: one weight per layer; ``None`` → 1 each.
        criterion: distance between feature maps; ``None`` → ``nn.L1Loss()`` (ESRGAN).
        feature_scale: factor applied to both feature maps before the criterion.
        use_input_norm: normalise [0, 1] RGB input with the ImageNet mean / std.
        pretrained: ImageNet weights from torchvision (download / cache); False → random VGG.
        weights: a local torchvision vgg19 state_dict (.pth or .safetensors, the whole model or
            the ``features.*`` part); takes precedence over ``pretrained``.
        allow_random: if the download fails, fall back to a random VGG (with a loud warning)
            instead of raising.
    """

    def __init__(
        self,
        *,
        layers: Sequence[str] = ("conv5_4",),
        layer_weights: Sequence[float] | None = None,
        criterion: nn.Module | None = None,
        feature_scale: float = 1.0,
        use_input_norm: bool = True,
        pretrained: bool = True,
        weights: str | None = None,
        allow_random: bool = False,
    ) -> None:
        super().__init__()
        if not layers:
            raise UserError("loss.perceptual.layers is empty: give at least one, e.g. [conv5_4]")
        unknown = [name for name in layers if name not in VGG19_LAYER_INDEX]
        if unknown:
            raise UserError(
                f"loss.perceptual.layers: unknown VGG19 layer(s) {unknown}; valid names: {', '.join(VGG19_LAYER_INDEX)}"
            )
        weights_per_layer = [1.0] * len(layers) if layer_weights is None else list(layer_weights)
        if len(weights_per_layer) != len(layers):
            raise UserError(
                f"loss.perceptual.layer_weights has {len(weights_per_layer)} values for {len(layers)} "
                "loss.perceptual.layers: give one weight per layer"
            )
        self.layer_weights = dict(zip(layers, weights_per_layer, strict=True))  # name -> weight
        self._layer_at = {VGG19_LAYER_INDEX[name]: name for name in self.layer_weights}
        self.criterion = nn.L1Loss() if criterion is None else criterion
        self.feature_scale = feature_scale

        # random_weights: what actually runs (a failed download with allow_random falls back to random)
        features, self.random_weights = _vgg19_features(
            pretrained=pretrained, weights=weights, allow_random=allow_random
        )
        self.vgg = features[: max(self._layer_at) + 1].requires_grad_(False).eval()
        for layer in self.vgg:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False  # an in-place ReLU would overwrite a collected conv{i}_{j} map

        # Buffers, not torchvision's Normalize: that one copies mean/std to the device every call.
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if use_input_norm else ((0.0,) * 3, (1.0,) * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The VGG stays in eval mode whatever the parent module does."""
        return super().train(False)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """The requested VGG19 maps of RGB ``x`` in [0, 1], in float32, from one pass."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = (x.float() - self.mean) / self.std  # (B, 3, H, W)
            maps: dict[str, Tensor] = {}
            for position, layer in enumerate(self.vgg):
                x = layer(x)  # (B, C_l, H_l, W_l)
                if position in self._layer_at:
                    maps[self._layer_at[position]] = x
            return maps

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        """Unweighted perceptual loss of SR ``(B, 3, H, W)`` against HR ``(B, 3, H, W)``."""
        s = self.feature_scale
        with torch.autocast(device_type=sr.device.type, enabled=False):
            sr_maps = self.features(sr)
            with torch.no_grad():
                hr_maps = self.features(hr)
            terms = [
                weight * self.criterion(s * sr_maps[name], s * hr_maps[name])
                for name, weight in self.layer_weights.items()
            ]
            return torch.stack(terms).sum()
