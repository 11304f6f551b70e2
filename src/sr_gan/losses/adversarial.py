"""Adversarial losses on raw discriminator logits: GAN (SRGAN), RaGAN (ESRGAN), LSGAN, hinge.

All share one interface so the GAN module never branches on the loss type:

- ``discriminator_loss(real_logits, fake_logits) -> (l_d_real, l_d_fake)``; the D objective is
  their sum, and ``fake_logits = D(G(x).detach())``.
- ``generator_loss(real_logits, fake_logits) -> l_g``; ``real_logits`` is only read (and only
  needs computing) when ``needs_real_logits_for_generator`` is True.

Logits may be per image ``(B, 1)`` or per pixel ``(B, 1, H, W)`` (U-Net D); every expectation is a
mean over all elements. The losses are unweighted: the GAN module applies the papers' weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _bce(logits: Tensor, target: float) -> Tensor:
    """Mean of ``-[t log sigma(x) + (1 - t) log(1 - sigma(x))]``, stable for large ``|x|``."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class AdversarialLoss(nn.Module, ABC):
    """Common interface of the adversarial losses (see the module docstring)."""

    needs_real_logits_for_generator: bool = False

    @abstractmethod
    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(l_d_real, l_d_fake)``: the discriminator minimises their sum."""

    @abstractmethod
    def generator_loss(self, real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
        """The generator's adversarial term (``fake_logits = D(G(x))`` with gradient to G)."""


class VanillaGANLoss(AdversarialLoss):
    """The standard GAN loss of SRGAN (Ledig et al. 2017, Eq. 2 and Eq. 6), with D(x) = sigma(C(x)).

    L_D = E_xr[-log D(x_r)] + E_xf[-log(1 - D(x_f))]
    L_G = E_xf[-log D(x_f)]       (non-saturating form: strong gradient while D rejects G(z))

    Written with BCE-with-logits on the raw logits C(x), which is numerically stable.
    """

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        return _bce(real_logits, 1.0), _bce(fake_logits, 0.0)

    def generator_loss(self, real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
        return _bce(fake_logits, 1.0)


class RelativisticGANLoss(AdversarialLoss):
    """Relativistic average GAN of ESRGAN (Wang et al. 2018, Eq. 1-2; Jolicoeur-Martineau 2018).

    With C(x) the raw logit: D_Ra(x_r, x_f) = sigma(C(x_r) - E_xf[C(x_f)]),
    D_Ra(x_f, x_r) = sigma(C(x_f) - E_xr[C(x_r)]), and

    L_D^Ra = -E_xr[log D_Ra(x_r, x_f)] - E_xf[log(1 - D_Ra(x_f, x_r))]
    L_G^Ra = -E_xr[log(1 - D_Ra(x_r, x_f))] - E_xf[log D_Ra(x_f, x_r)]

    The paper writes sums; the authors' code (BasicSR ``SRGAN_model.py``, 2018) averages the two
    terms, ``l_d_total = (l_d_real + l_d_fake) / 2`` and ``l_g_gan = (... + ...) / 2``, and its
    lambda = 5e-3 was tuned with that average, so we return ``0.5 * L^Ra``:
    ``l_d_real = 0.5 * BCE(C(x_r) - E[C(x_f)], 1)``, ``l_d_fake = 0.5 * BCE(C(x_f) - E[C(x_r)], 0)``.

    In L_D the other side's mean is *not* detached (the paper's gradient, and the original code;
    later BasicSR detaches it to dodge a DDP in-place BatchNorm error, which changes the gradient).
    In L_G the real logits are detached (as in the original code): the G step never trains D, and
    G still gets gradient from both terms, through E[C(x_f)] in the first one.
    """

    needs_real_logits_for_generator = True

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        l_d_real = 0.5 * _bce(real_logits - fake_logits.mean(), 1.0)
        l_d_fake = 0.5 * _bce(fake_logits - real_logits.mean(), 0.0)
        return l_d_real, l_d_fake

    def generator_loss(self, real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
        if real_logits is None:
            raise ValueError(
                "RelativisticGANLoss.generator_loss needs real_logits = D(HR): the G step must "
                "compute them when needs_real_logits_for_generator is True"
            )
        real_logits = real_logits.detach()
        return 0.5 * (_bce(real_logits - fake_logits.mean(), 0.0) + _bce(fake_logits - real_logits.mean(), 1.0))


class LSGANLoss(AdversarialLoss):
    """Least-squares GAN (Mao et al. 2017, Eq. 2 with a = 0, b = c = 1) on raw outputs C(x).

    L_D = 1/2 E_xr[(C(x_r) - 1)^2] + 1/2 E_xf[C(x_f)^2]
    L_G = 1/2 E_xf[(C(x_f) - 1)^2]
    """

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        return 0.5 * (real_logits - 1.0).square().mean(), 0.5 * fake_logits.square().mean()

    def generator_loss(self, real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
        return 0.5 * (fake_logits - 1.0).square().mean()


class HingeGANLoss(AdversarialLoss):
    """Hinge GAN loss (Lim & Ye 2017; Miyato et al. 2018, SN-GAN) on raw outputs C(x).

    L_D = E_xr[max(0, 1 - C(x_r))] + E_xf[max(0, 1 + C(x_f))]
    L_G = -E_xf[C(x_f)]
    """

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        return F.relu(1.0 - real_logits).mean(), F.relu(1.0 + fake_logits).mean()

    def generator_loss(self, real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()
