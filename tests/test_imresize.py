"""imresize against a numpy transcription of MATLAB's imresize.m (bicubic) and known properties."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from sr_gan.ops import imresize


# --- MATLAB's imresize.m, transcribed to numpy (float64, gather per output pixel) -------------
def _matlab_cubic(x: np.ndarray) -> np.ndarray:
    absx = np.abs(x)
    absx2, absx3 = absx**2, absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * (
        (1 < absx) & (absx <= 2)
    )


def _matlab_contributions(in_length, out_length, scale, antialiasing):
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        kernel = lambda d: scale * _matlab_cubic(scale * d)  # noqa: E731
        kernel_width = kernel_width / scale
    else:
        kernel = _matlab_cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = math.ceil(kernel_width) + 2
    indices = left + np.arange(p)[None, :]
    weights = kernel(u - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_length + 1), np.arange(in_length, 0, -1)])
    indices = aux[np.mod(indices - 1, len(aux)).astype(np.int64)]
    keep = np.any(weights, axis=0)
    return weights[:, keep], indices[:, keep]


def _matlab_resize_along_dim(image, dim, weights, indices):
    moved = np.moveaxis(image, dim, 0)
    out = np.zeros((weights.shape[0],) + moved.shape[1:])
    for i in range(weights.shape[0]):
        for w, k in zip(weights[i], indices[i]):
            out[i] += w * moved[k - 1]
    return np.moveaxis(out, 0, dim)


def matlab_imresize(image, scale=None, size=None, antialiasing=True):
    """imresize(image, scale or [h w], 'bicubic') for an (H, W, C) float64 array."""
    in_size = image.shape[:2]
    if size is None:
        scales = (scale, scale)
        size = tuple(math.ceil(n * scale) for n in in_size)
    else:
        scales = tuple(o / n for o, n in zip(size, in_size))
    out = image
    for dim in np.argsort(scales, kind="stable"):  # MATLAB: smallest scale first
        weights, indices = _matlab_contributions(in_size[dim], size[dim], scales[dim], antialiasing)
        out = _matlab_resize_along_dim(out, dim, weights, indices)
    return out


# --- helpers -----------------------------------------------------------------------------------
def _to_tensor(image: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].to(dtype)  # (1, C, H, W)


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).double().numpy()  # (H, W, C)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()[100:197, 150:274].astype(np.float64) / 255  # 97 x 124: not mod 2, 3, 4


SCALES = [1 / 2, 1 / 3, 1 / 4, 2, 4]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", [(37, 50), (48, 36), (5, 7)])
def test_matches_matlab_on_random_images(scale, shape):
    rng = np.random.default_rng(0)
    image = rng.random(shape + (3,))
    expected = matlab_imresize(image, scale)
    got32 = imresize(_to_tensor(image, torch.float32), scale)
    got64 = imresize(_to_tensor(image, torch.float64), scale)
    assert got64.shape[-2:] == expected.shape[:2] == tuple(math.ceil(n * scale) for n in shape)
    np.testing.assert_allclose(_to_numpy(got64), expected, atol=1e-12)
    np.testing.assert_allclose(_to_numpy(got32), expected, atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_matches_matlab_on_photo(astronaut, scale):
    expected = matlab_imresize(astronaut, scale)
    got32 = imresize(_to_tensor(astronaut), scale)
    np.testing.assert_allclose(_to_numpy(got32), expected, atol=1e-5)
    got64 = imresize(_to_tensor(astronaut, torch.float64), scale)
    np.testing.assert_allclose(_to_numpy(got64), expected, atol=1e-12)


@pytest.mark.parametrize("antialiasing", [True, False])
def test_size_argument_and_no_antialiasing_match_matlab(astronaut, antialiasing):
    size = (40, 77)  # anisotropic: H by 40/97, W by 77/124
    expected = matlab_imresize(astronaut, size=size, antialiasing=antialiasing)
    x = _to_tensor(astronaut, torch.float64)
    got = imresize(x, size=size, antialiasing=antialiasing)
    np.testing.assert_allclose(_to_numpy(got), expected, atol=1e-12)


def test_coordinate_convention_reproduces_a_ramp():
    # The cubic kernel reproduces linear functions, so away from the border the output of the
    # 1-based ramp 1..n is MATLAB's sampling position u = x / scale + (1 - 1 / scale) / 2.
    ramp = torch.arange(1, 49, dtype=torch.float64).expand(1, 1, 8, 48)
    for scale in (1 / 2, 1 / 4, 2):
        out = imresize(ramp, scale)[0, 0, 0]
        x = torch.arange(1, out.numel() + 1, dtype=torch.float64)
        u = x / scale + 0.5 * (1 - 1 / scale)
        interior = slice(int(4 * scale) + 2, -int(4 * scale) - 2)
        torch.testing.assert_close(out[interior], u[interior], atol=1e-12, rtol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_interior_equals_torch_antialias_border_differs(scale):
    # torch's antialiased bicubic uses the same a = -0.5 widened kernel, but renormalizes at the
    # border instead of mirroring: identical inside, different on the outer pixels.
    image = torch.from_numpy(data.astronaut()[:96, :120]).permute(2, 0, 1)[None].double() / 255
    ours = imresize(image, 1 / scale)
    theirs = F.interpolate(image, scale_factor=1 / scale, mode="bicubic", antialias=True)
    torch.testing.assert_close(ours[..., 3:-3, 3:-3], theirs[..., 3:-3, 3:-3], atol=1e-12, rtol=0)
    assert (ours - theirs).abs().max() > 1e-3


def test_batched_equals_per_image_and_chw_input():
    x = torch.rand(3, 3, 20, 26)
    batched = imresize(x, 1 / 2)
    assert batched.shape == (3, 3, 10, 13)
    for i in range(3):
        torch.testing.assert_close(batched[i], imresize(x[i], 1 / 2))  # (C, H, W) in, out
        torch.testing.assert_close(batched[i : i + 1], imresize(x[i : i + 1], 1 / 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved_no_grad_and_autograd(dtype):
    x = torch.rand(2, 3, 16, 12, dtype=dtype, requires_grad=True)
    with torch.no_grad():
        y_no_grad = imresize(x, 1 / 4)
    assert y_no_grad.dtype == dtype and not y_no_grad.requires_grad
    y = imresize(x, 1 / 4)
    assert y.dtype == dtype
    torch.testing.assert_close(y.detach(), y_no_grad)
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    # The weights of every output pixel sum to 1, so the gradient of the sum is
    # (column sums of W_h) x (column sums of W_w), which sum to out_h * out_w per image channel.
    torch.testing.assert_close(x.grad.sum(dim=(-2, -1)), torch.full((2, 3), 4.0 * 3, dtype=dtype))
    if dtype is torch.float64:
        small = x[:1, :1, :6, :6].detach().requires_grad_()
        assert torch.autograd.gradcheck(lambda t: imresize(t, 1 / 2), (small,))


def test_constant_image_stays_constant_and_rejects_bad_input():
    x = torch.full((1, 3, 9, 11), 0.3, dtype=torch.float64)
    torch.testing.assert_close(imresize(x, 3), torch.full((1, 3, 27, 33), 0.3, dtype=torch.float64))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x, 2, size=(4, 4))
    with pytest.raises(TypeError, match="float"):
        imresize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 1 / 2)


def test_matrix_cached_under_inference_mode_still_trains():
    """Validation (inference mode) fills the cache first; a later training call must backpropagate."""
    from sr_gan.ops.imresize import _CACHE_SIZE, _resize_matrix

    _resize_matrix.cache_clear()
    x = torch.rand(2, 3, 24, 20)
    with torch.inference_mode():
        validated = imresize(x, 1 / 4)  # fills the cache with this shape's matrices
    assert _resize_matrix.cache_info().currsize == 2
    trained = x.clone().requires_grad_()
    out = imresize(trained, 1 / 4)  # cache hit: the matrices must not be inference tensors
    assert _resize_matrix.cache_info().hits == 2
    out.square().sum().backward()
    assert trained.grad is not None and trained.grad.abs().sum() > 0
    assert torch.equal(out.detach(), validated)  # same matrices, bitwise the same result
    for size in range(8, 8 + _CACHE_SIZE):  # bounded: old shapes are evicted
        imresize(torch.rand(1, 1, size, size), 1 / 2)
    assert _resize_matrix.cache_info().currsize == _CACHE_SIZE
