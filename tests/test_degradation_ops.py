"""The Real-ESRGAN degradation ops, each against an independent computation or a measured statistic."""

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d, get_gaussian_kernel2d
from PIL import Image
from scipy import ndimage
from skimage import data

from sr_gan.ops.draws import categorical, host_rng
from sr_gan.ops.jpeg import jpeg_compress
from sr_gan.ops.kernels import GRID, anisotropic_kernels, pulse_kernels, sinc_kernels
from sr_gan.ops.noise import _shot_noise, gaussian_noise, poisson_noise
from sr_gan.ops.resize import RESIZE_MODES, resize_per_sample_mode
from sr_gan.ops.sharpen import usm_sharpen
from tests.helpers import reference_kernel, reference_sinc


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()[:256, 128:384]  # (256, 256, 3) uint8: face, helmet, flag


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)


# --- JPEG ----------------------------------------------------------------------------------------


def pillow_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)  # libjpeg, 4:2:0 like Kornia's codec
    return np.asarray(Image.open(buffer))


def rmse_255(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) * 255).square().mean().sqrt())


def test_jpeg_equals_kornias_public_codec_bitwise() -> None:
    torch.manual_seed(0)
    x, quality = torch.rand(3, 3, 37, 50), torch.tensor([30.0, 61.5, 95.0])  # odd sizes: padding and crop
    assert torch.equal(jpeg_compress(x, quality), jpeg_codec_differentiable(x, quality))


def test_jpeg_is_close_to_pillow_at_the_same_quality(photo: np.ndarray) -> None:
    """Tolerance (measured on this photo, 256 px): our JPEG is within 2.5 8-bit levels RMSE of Pillow's
    at qualities 30-95 (measured 2.1 at 30, 1.2 at 95), and its error against the original is within
    15% of Pillow's (measured 7-9% smaller: Kornia's differentiable rounding r + (x - r)^3)."""
    qualities = (30, 50, 75, 95)
    x = to_tensor(photo).expand(len(qualities), -1, -1, -1)
    ours = (jpeg_compress(x, torch.tensor(qualities, dtype=torch.float32)) * 255).round() / 255
    pillow = {q: to_tensor(pillow_jpeg(photo, q)) for q in qualities}
    for i, q in enumerate(qualities):
        assert rmse_255(ours[i], pillow[q][0]) < 2.5, q
        ours_error, pillow_error = rmse_255(ours[i], x[i]), rmse_255(pillow[q][0], x[i])
        assert abs(ours_error / pillow_error - 1) < 0.15, (q, ours_error, pillow_error)
        # the quality means the same thing: Pillow's nearest output is the one at the same quality
        assert min(qualities, key=lambda p: rmse_255(ours[i], pillow[p][0])) == q


# --- blur kernels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "k", "sx", "sy", "theta", "beta"),
    [
        ("gaussian", 21, 2.0, 2.0, 0.0, 1.0),
        ("gaussian", 15, 3.0, 0.7, 0.6, 1.0),
        ("gaussian", 9, 0.4, 2.5, -2.2, 1.0),
        ("generalized", 17, 1.5, 2.8, 1.1, 0.6),
        ("generalized", 21, 2.2, 1.0, -0.4, 3.5),
        ("plateau", 13, 1.2, 2.0, 2.9, 1.7),
        ("plateau", 7, 0.8, 0.8, 0.0, 1.0),
    ],
)
def test_kernels_match_the_reference_formulas(kind: str, k: int, sx: float, sy: float, theta: float, beta: float):
    def t(v: float) -> torch.Tensor:
        return torch.tensor([v], dtype=torch.float64)

    size = torch.tensor([k])
    ours = anisotropic_kernels(size, t(sx), t(sy), t(theta), t(beta), torch.tensor([kind == "plateau"]))[0]
    np.testing.assert_allclose(ours.numpy(), reference_kernel(kind, k, sx, sy, theta, beta), rtol=1e-9, atol=1e-12)


def test_kernels_sum_to_one_and_isotropic_ones_are_symmetric() -> None:
    torch.manual_seed(0)
    n = 64
    size = 2 * torch.randint(3, 11, (n,)) + 1
    sigma = 0.2 + 2.8 * torch.rand(n)
    kernels = anisotropic_kernels(size, sigma, sigma, torch.zeros(n), 0.5 + 3 * torch.rand(n), torch.rand(n) < 0.5)
    torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(n))
    for symmetric in (kernels.flip(-1), kernels.flip(-2), kernels.transpose(-2, -1)):
        torch.testing.assert_close(symmetric, kernels)
    # every family is point-symmetric (Q(p) = Q(-p)), rotated or not: blurring moves no edge or spot
    rotated = anisotropic_kernels(size, sigma, sigma.flip(0), torch.rand(n) * 6.28, torch.ones(n), torch.rand(n) < 0.5)
    torch.testing.assert_close(rotated.flip(-2, -1), rotated)
    assert not torch.allclose(rotated.transpose(-2, -1), rotated)  # ... but not mirror-symmetric
    outside = torch.arange(GRID)[None, :].sub(GRID // 2).abs() > (size[:, None] // 2)  # (n, G) columns
    assert (kernels.masked_select(outside[:, None, :]) == 0).all()  # zero beyond each kernel's size
    # an isotropic Gaussian equals Kornia's on its support
    kornia_kernel = get_gaussian_kernel2d((9, 9), (1.3, 1.3))[0]
    ours = anisotropic_kernels(
        torch.tensor([9]), *(torch.tensor([v]) for v in (1.3, 1.3, 0.0, 1.0)), torch.tensor([False])
    )
    torch.testing.assert_close(ours[0, 6:15, 6:15], kornia_kernel)
    # an anisotropic one spreads along its long axis: sigma_x > sigma_y at theta = 0 → wider in x
    wide = anisotropic_kernels(*(torch.tensor([v]) for v in (21, 3.0, 1.0, 0.0, 1.0)), torch.tensor([False]))[0]
    offsets = torch.arange(GRID) - GRID // 2.0
    assert (wide.sum(0) * offsets**2).sum() > 5 * (wide.sum(1) * offsets**2).sum()


def test_sinc_kernel_matches_the_reference_formula() -> None:
    cutoff, k = math.pi / 2, 21
    kernel = sinc_kernels(torch.tensor([k]), torch.tensor([cutoff], dtype=torch.float64))[0]
    np.testing.assert_allclose(kernel.numpy(), reference_sinc(cutoff, k), rtol=0, atol=1e-7)  # torch's J1: ~1e-5 rel.


@pytest.mark.parametrize("cutoff", [math.pi / 3, math.pi / 2, 2.5])
def test_sinc_filter_cuts_the_frequencies_above_its_cutoff(cutoff: float) -> None:
    """Zero-padded FFT of a 21x21 sinc kernel: gain ~1 below the cut-off, ~0 above, 1/2 at it.

    Truncating the ideal response to a square leaves Gibbs ripples (measured: passband mean 0.94-1.03,
    minimum 0.84; stopband mean 0.01-0.03, peak 0.08-0.11). A Gaussian blur with the same half-gain
    frequency fails both bands (passband mean 0.81-0.86, stopband peak 0.37-0.65).
    """
    kernel = sinc_kernels(torch.tensor([21]), torch.tensor([cutoff], dtype=torch.float64))[0]
    response = torch.fft.fft2(kernel, s=(128, 128)).abs()
    freq = torch.fft.fftfreq(128, dtype=torch.float64) * 2 * math.pi  # radians per pixel
    radius = torch.hypot(*torch.meshgrid(freq, freq, indexing="ij"))
    passband, stopband = response[radius < 0.8 * cutoff], response[(radius > 1.2 * cutoff) & (radius < math.pi)]
    assert passband.mean() > 0.9 and passband.min() > 0.8
    assert stopband.mean() < 0.04 and stopband.max() < 0.15
    assert response[(radius > 0.95 * cutoff) & (radius < 1.05 * cutoff)].mean() == pytest.approx(0.5, abs=0.06)


def test_filter2d_applies_each_samples_own_kernel() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 30, 30)
    kernels = torch.stack([pulse_kernels(1)[0], torch.full((GRID, GRID), 1 / GRID**2), torch.rand(GRID, GRID)])
    out = filter2d(x, kernels, border_type="reflect")
    for i in range(3):
        padded = F.pad(x[i : i + 1], (10, 10, 10, 10), mode="reflect")
        expected = F.conv2d(padded, kernels[i].expand(3, 1, GRID, GRID), groups=3)
        torch.testing.assert_close(out[i : i + 1], expected)
    assert torch.equal(out[0], x[0])  # the pulse is the identity


# --- noise ---------------------------------------------------------------------------------------


def test_gaussian_noise_has_the_drawn_std_and_grey_noise_is_shared() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.full((4, 3, 128, 128), 0.5)
    sigma = torch.tensor([5.0, 20.0, 5.0, 20.0]) / 255
    grey = torch.tensor([False, False, True, True])
    noise = gaussian_noise(img, sigma, grey, generator=g)
    # 49,152 values per sample: the std of the measured std is ~0.3%; tolerance 2%
    torch.testing.assert_close(noise.std(dim=(1, 2, 3)), sigma, rtol=0.02, atol=0)
    assert noise.mean(dim=(1, 2, 3)).abs().max() < 0.02 * sigma.min()
    assert torch.equal(noise[2, 0], noise[2, 1]) and torch.equal(noise[3, 1], noise[3, 2])
    correlation = torch.corrcoef(noise[1].flatten(1))  # colour noise: independent channels
    assert (correlation - torch.eye(3)).abs().max() < 0.03


def test_poisson_noise_variance_follows_the_level_count() -> None:
    """Var = value / L with L = 2^ceil(log2(#distinct 8-bit values)) per sample, times scale²."""
    g = torch.Generator().manual_seed(0)
    all_levels = (torch.arange(256.0) / 255).repeat(3, 64, 1)  # (3, 64, 256): 256 distinct values → L = 256
    hundred = (torch.arange(256) % 100 / 255.0).repeat(3, 64, 1)  # 100 distinct values → L = 128
    img = torch.stack([all_levels, hundred])
    noise = _shot_noise(img, g)
    for i, photons in enumerate((256, 128)):
        expected = img[i].mean() / photons  # mean of value / L over the pixels
        assert noise[i].square().mean().item() == pytest.approx(expected.item(), rel=0.03)
    scaled = poisson_noise(img, torch.tensor([2.0, 0.5]), torch.tensor([False, True]), generator=g)
    assert scaled[0].square().mean().item() == pytest.approx(4 * img[0].mean().item() / 256, rel=0.03)
    assert torch.equal(scaled[1, 0], scaled[1, 2])  # grey: one field for the three channels
    # grey noise on a colour image follows its BT.601 grey image (levels and count), not a channel
    red, green = torch.arange(256.0).repeat(64, 1) % 64, 128 + torch.arange(256.0).repeat(64, 1) % 128
    colour = torch.stack([red, green, torch.full_like(red, 200)])[None] / 255  # (1, 3, 64, 256)
    grey = np.round(255 * (0.299 * colour[0, 0] + 0.587 * colour[0, 1] + 0.114 * colour[0, 2]).numpy())
    photons = 2 ** math.ceil(math.log2(len(np.unique(grey))))
    noise = poisson_noise(colour.expand(4, -1, -1, -1), torch.ones(4), torch.ones(4, dtype=torch.bool), generator=g)
    assert noise.square().mean().item() == pytest.approx(grey.mean() / 255 / photons, rel=0.03)


# --- resize, USM, draws --------------------------------------------------------------------------


def test_resize_uses_each_samples_mode() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 40, 40)
    out = resize_per_sample_mode(x, (17, 23), torch.tensor([2, 0, 1]))
    for i, mode in enumerate((2, 0, 1)):
        name = RESIZE_MODES[mode]
        extra = {} if name == "area" else {"align_corners": False}
        torch.testing.assert_close(out[i : i + 1], F.interpolate(x[i : i + 1], size=(17, 23), mode=name, **extra))
    assert resize_per_sample_mode(x, (40, 40), torch.tensor([0, 1, 2])) is x


def test_usm_matches_an_independent_transcription(photo: np.ndarray) -> None:
    """BasicSR USMSharp (radius 51, OpenCV sigma 8, weight 0.5, threshold 10) with scipy's filters."""
    x = to_tensor(photo)
    image = x[0].double().numpy()
    taps = np.exp(-0.5 * (np.arange(51) - 25.0) ** 2 / 8.0**2)
    taps /= taps.sum()

    def blur(a: np.ndarray) -> np.ndarray:  # torch's "reflect" padding is scipy's "mirror"
        return ndimage.correlate1d(ndimage.correlate1d(a, taps, axis=-1, mode="mirror"), taps, axis=-2, mode="mirror")

    residual = image - blur(image)
    soft = blur((np.abs(residual) * 255 > 10).astype(np.float64))
    expected = soft * np.clip(image + 0.5 * residual, 0, 1) + (1 - soft) * image
    np.testing.assert_allclose(usm_sharpen(x)[0].numpy(), expected, atol=2e-5)
    flat = torch.full((1, 3, 40, 40), 0.3)
    torch.testing.assert_close(usm_sharpen(flat), flat)  # nothing to sharpen
    row = x[..., :1, :40]  # (1, 3, 1, 40): a side of one pixel reflects onto itself
    torch.testing.assert_close(usm_sharpen(row), usm_sharpen(row.expand(1, 3, 40, 40).contiguous())[..., :1, :])


def test_categorical_draws_follow_their_probabilities() -> None:
    g = torch.Generator().manual_seed(0)
    probs = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    counts = torch.bincount(categorical(probs, 20000, generator=g, device=torch.device("cpu")), minlength=6)
    for count, p in zip(counts.tolist(), probs):
        assert abs(count / 20000 - p) < 4 * math.sqrt(p * (1 - p) / 20000)


def test_host_stream_follows_the_generator_state() -> None:
    g = torch.Generator().manual_seed(3)
    first = host_rng(g).random()
    assert host_rng(torch.Generator().manual_seed(3)).random() == first  # same state, same stream
    torch.rand(1, generator=g)  # a batch's device draws advance the state
    assert host_rng(g).random() != first
