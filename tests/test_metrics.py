"""The SR evaluation protocol against an independent BasicSR-style numpy implementation."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.signal import convolve2d
from skimage import data

from sr_gan.metrics import crop_border, psnr, quantize, rgb_to_y, ssim


# --- reference: BasicSR's calculate_psnr / calculate_ssim, float64 numpy on (H, W, C) ------------
def _ref_prepare(image: np.ndarray, crop: int, test_y: bool) -> np.ndarray:
    img = np.round(np.clip(image.astype(np.float64), 0, 1) * 255)  # tensor2img: uint8 levels
    if crop:
        img = img[crop:-crop, crop:-crop]
    if test_y:
        img = (16 + img @ np.array([65.481, 128.553, 24.966]) / 255)[..., None]
    return img


def ref_psnr(sr, hr, crop, test_y):
    sr, hr = _ref_prepare(sr, crop, test_y), _ref_prepare(hr, crop, test_y)
    return 10 * np.log10(255**2 / np.mean((sr - hr) ** 2))


def _ref_ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))  # cv2.getGaussianKernel(11, 1.5)
    window = np.outer(g / g.sum(), g / g.sum())
    filt = lambda x: convolve2d(x, window, mode="valid")  # noqa: E731
    mu1, mu2 = filt(a), filt(b)
    sigma1_sq = filt(a * a) - mu1**2
    sigma2_sq = filt(b * b) - mu2**2
    sigma12 = filt(a * b) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * sigma12 + c2)) / ((mu1**2 + mu2**2 + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean()


def ref_ssim(sr, hr, crop, test_y):
    sr, hr = _ref_prepare(sr, crop, test_y), _ref_prepare(hr, crop, test_y)
    return np.mean([_ref_ssim_channel(sr[..., c], hr[..., c]) for c in range(sr.shape[-1])])


# --- test images: real photos, HR exact uint8 levels, "SR" = noisy / blurred, unclamped -----------
def _photo_pair(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    hr = getattr(data, name)()[:130, :170].astype(np.float64) / 255  # non-square
    rng = np.random.default_rng(seed)
    blurred = gaussian_filter(hr, sigma=(0.8 * seed, 0.8 * seed, 0))
    sr = 1.25 * blurred - 0.1 + rng.normal(0, 0.03, hr.shape)  # contrast shift, noise
    return sr.astype(np.float32), hr.astype(np.float32)  # sr leaves [0, 1] a little


def _to_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # (B, 3, H, W)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
@pytest.mark.parametrize(("crop", "test_y"), [(4, True), (3, False), (0, True)])
def test_psnr_ssim_match_reference_on_photos(name, crop, test_y):
    pairs = [_photo_pair(name, seed) for seed in (1, 2)]
    sr, hr = _to_batch(*(p[0] for p in pairs)), _to_batch(*(p[1] for p in pairs))
    assert sr.min() < 0 and sr.max() > 1  # the clamp is exercised
    got_psnr = psnr(sr, hr, crop_border=crop, test_y_channel=test_y)
    got_ssim = ssim(sr, hr, crop_border=crop, test_y_channel=test_y)
    assert got_psnr.shape == got_ssim.shape == (2,)
    assert got_psnr.dtype == got_ssim.dtype == torch.float64
    for i, (sr_i, hr_i) in enumerate(pairs):
        assert abs(got_psnr[i].item() - ref_psnr(sr_i, hr_i, crop, test_y)) < 1e-6
        assert abs(got_ssim[i].item() - ref_ssim(sr_i, hr_i, crop, test_y)) < 1e-6
    assert got_psnr[0] > got_psnr[1] and got_ssim[0] > got_ssim[1]  # more blur, lower scores


def test_y_and_rgb_psnr_differ():
    sr, hr = _photo_pair("astronaut", 1)
    sr, hr = _to_batch(sr), _to_batch(hr)
    y_psnr = psnr(sr, hr, crop_border=4)
    assert abs(y_psnr - psnr(sr, hr, crop_border=4, test_y_channel=False)) > 0.1


def test_identical_images_give_inf_psnr_and_unit_ssim():
    hr = _to_batch(_photo_pair("chelsea", 1)[1])
    assert torch.isinf(psnr(hr, hr, crop_border=2)).all()
    torch.testing.assert_close(ssim(hr, hr, crop_border=2), torch.ones(1, dtype=torch.float64))


def test_crop_border_ignores_differences_in_the_border():
    hr = _to_batch(_photo_pair("coffee", 1)[1])
    sr = hr.clone()
    sr[..., :4, :] = 1 - sr[..., :4, :]  # top rows
    sr[..., :, -4:] = 0  # right columns
    assert torch.isinf(psnr(sr, hr, crop_border=4)).all()
    assert torch.isfinite(psnr(sr, hr, crop_border=3)).all()
    assert crop_border(hr, 4).shape == (1, 3, 122, 162)
    assert crop_border(hr, 0) is hr


def test_rgb_to_y_known_values():
    colours = torch.tensor([[255.0, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]])
    y = rgb_to_y(colours.T.reshape(1, 3, 1, 5)).flatten()
    expected = torch.tensor([235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966])
    torch.testing.assert_close(y, expected)


def test_quantize_rounds_like_a_saved_png():
    levels = torch.arange(256, dtype=torch.float32)
    torch.testing.assert_close(quantize(levels / 255), levels)  # uint8 / 255 round-trips exactly
    clamped = quantize(torch.tensor([-0.3, 1.7, 0.3]))
    torch.testing.assert_close(clamped, torch.tensor([0.0, 255, 76]))


def test_rejects_mismatched_or_too_small_images():
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="mod-crop"):
        psnr(x, x[..., :30, :30], crop_border=2)
    with pytest.raises(ValueError, match="crop_border=11"):
        ssim(x, x, crop_border=11)
