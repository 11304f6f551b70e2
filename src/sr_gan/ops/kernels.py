"""Blur kernel families of Real-ESRGAN (Wang et al. 2021, Sec. 3.1), one kernel per sample, batched.

Hand-written: Kornia's kernel makers (`get_gaussian_kernel2d`) give axis-aligned Gaussians only;
the paper also needs rotated anisotropic Gaussians, generalised Gaussians, plateau kernels and the
2-D sinc (circular low-pass) filter. Every function takes per-sample parameters as (B,) tensors and
returns (B, G, G) kernels on one fixed G x G grid (G = 21, the reference's largest size): a kernel of
odd size k < G is computed on its k x k support and zero-padded to G, as the reference pads its
kernels to 21. No shape depends on a drawn value, so a batch of mixed sizes is one tensor.

With p = (x, y) the pixel offset from the centre and the covariance
Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T, let Q = p^T Sigma^-1 p. Then (Eq. 2 and
Sec. 3.1 of the paper; reference: BasicSR `basicsr/data/degradations.py`)

    Gaussian              k(p) ∝ exp(-Q / 2)
    generalised Gaussian  k(p) ∝ exp(-Q^beta / 2)     (beta = 1 is the Gaussian)
    plateau               k(p) ∝ 1 / (1 + Q^beta)
    sinc (circular)       k(r) ∝ omega_c J1(omega_c r) / (2 pi r),   k(0) = omega_c^2 / (4 pi)

each normalised to sum 1 over its support.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

GRID = 21  # the reference's largest kernel size; every kernel lives on this grid


def _offsets(grid: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(y, x) offsets from the centre of a grid x grid kernel, each (1, G, G)."""
    axis = torch.arange(grid, device=device, dtype=dtype) - (grid - 1) / 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return y[None], x[None]


def _support(size: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """(B, G, G) mask of the size x size square around the centre, per sample."""
    half = ((size - 1) // 2).to(x.dtype)[:, None, None]  # (B, 1, 1)
    return (y.abs() <= half) & (x.abs() <= half)


def _normalise(kernel: Tensor) -> Tensor:
    return kernel / kernel.sum(dim=(-2, -1), keepdim=True)


def anisotropic_kernels(
    size: Tensor,
    sigma_x: Tensor,
    sigma_y: Tensor,
    theta: Tensor,
    beta: Tensor,
    plateau: Tensor,
    *,
    grid: int = GRID,
) -> Tensor:
    """Gaussian / generalised Gaussian (``plateau`` False) or plateau (True) kernels, (B, G, G).

    Args:
        size: odd kernel sizes <= grid, (B,) integer.
        sigma_x, sigma_y: standard deviations along the rotated axes, (B,); sigma_y = sigma_x and
            theta = 0 give the isotropic kernels.
        theta: rotation in radians, (B,).
        beta: shape exponent, (B,); 1 for the plain Gaussian.
        plateau: (B,) bool, the plateau family instead of the (generalised) Gaussian.
    """
    y, x = _offsets(grid, sigma_x.device, sigma_x.dtype)  # (1, G, G)
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]  # (B, 1, 1)
    u = cos * x + sin * y  # coordinates along the kernel's own axes: R^T p
    v = -sin * x + cos * y
    quad = (u / sigma_x[:, None, None]) ** 2 + (v / sigma_y[:, None, None]) ** 2  # Q = p^T Sigma^-1 p, (B, G, G)
    powered = quad ** beta[:, None, None]
    kernel = torch.where(plateau[:, None, None], 1 / (1 + powered), torch.exp(-0.5 * powered))
    return _normalise(kernel * _support(size, y, x))


def sinc_kernels(size: Tensor, cutoff: Tensor, *, grid: int = GRID) -> Tensor:
    """Circular low-pass (2-D sinc) kernels with cut-off `cutoff` (radians, pi = Nyquist), (B, G, G).

    The ideal filter's impulse response omega_c J1(omega_c r) / (2 pi r) truncated to the size x size
    square, which rings: the paper uses it to synthesise ringing and overshoot artifacts (Sec. 3.3).
    """
    y, x = _offsets(grid, cutoff.device, cutoff.dtype)
    radius = torch.sqrt(x**2 + y**2)  # (1, G, G)
    omega = cutoff[:, None, None]  # (B, 1, 1)
    centre = omega**2 / (4 * math.pi)  # the limit of the formula at r = 0
    safe_radius = torch.where(radius > 0, radius, torch.ones_like(radius))
    kernel = torch.where(
        radius > 0, omega * torch.special.bessel_j1(omega * safe_radius) / (2 * math.pi * safe_radius), centre
    )
    return _normalise(kernel * _support(size, y, x))


def pulse_kernels(
    batch: int, *, grid: int = GRID, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Identity kernels (a 1 at the centre), (B, G, G): filtering with them changes nothing."""
    y, x = _offsets(grid, device, dtype)
    return ((y == 0) & (x == 0)).to(dtype).expand(batch, grid, grid)  # made on the device, no host literal
