"""Tiled inference equals the untiled forward pass when the overlap covers the receptive field."""

import pytest
import torch

from sr_gan.archs import RRDBNet, SRResNet
from sr_gan.errors import UserError
from sr_gan.tiling import _windows, sr_tiles, tiled_forward

# Receptive-field radius in LR pixels of SRResNet(num_blocks=1, scale=2): conv9 (4) + block (2)
# + conv_body (1) + upsampling conv (1) + conv9 at HR (4 HR px = 2 LR px) = 10.
SRRESNET_RADIUS = 10


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _srresnet() -> SRResNet:
    return SRResNet(num_features=8, num_blocks=1, scale=2, norm_layer=None).eval()


@pytest.mark.parametrize("batch_size", [1, 5])
def test_tiles_match_untiled_on_non_divisible_size(batch_size: int) -> None:
    net = _srresnet()
    lr = torch.rand(2, 3, 64, 80)  # neither side a multiple of 24: the edge cores are shifted
    with torch.no_grad():
        expected = net(lr)
    tiled = tiled_forward(net, lr, scale=2, tile=24, overlap=SRRESNET_RADIUS, batch_size=batch_size)
    assert tiled.shape == expected.shape == (2, 3, 128, 160)
    assert (tiled - expected).abs().max() < 1e-5  # exact up to float rounding, far under 1/255


def test_small_overlap_leaves_seams() -> None:
    """The overlap is what removes the seams: without it the tiles differ from the whole image."""
    net = _srresnet()
    lr = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        expected = net(lr)
    assert (tiled_forward(net, lr, scale=2, tile=24, overlap=0) - expected).abs().max() > 1e-3


def test_unshuffling_network_gets_aligned_tiles() -> None:
    """RRDBNet x2 pixel-unshuffles its input: an odd tile is rounded so window phases match."""
    net = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=2).eval()
    lr = torch.rand(1, 3, 130, 144)
    with torch.no_grad():
        expected = net(lr)
    # radius: 1 + 3 RDBs x 5 convs + conv_body at half resolution (2 px each) + 4 convs after = 38
    tiled = tiled_forward(net, lr, scale=2, tile=27, overlap=39)
    assert (tiled - expected).abs().max() < 1e-5


def test_tile_zero_or_larger_than_image_is_one_forward() -> None:
    net = _srresnet()
    lr = torch.rand(1, 3, 20, 18)
    with torch.no_grad():
        expected = net(lr)
    assert torch.equal(tiled_forward(net, lr, scale=2, tile=0, overlap=8), expected)
    assert torch.equal(tiled_forward(net, lr, scale=2, tile=32, overlap=8), expected)


def test_a_strip_narrower_than_a_tile_is_tiled_along_its_length() -> None:
    """A 12 x 100 LR strip with tile=24: one side fits in a tile, the other does not. The windows stay
    within tile + 2 x overlap along the long side (the strip went through whole, the memory `tile`
    bounds unbounded) and span the short side; stitched, they are the untiled forward pass."""
    net = _srresnet()
    lr = torch.rand(1, 3, 12, 100)
    with torch.no_grad():
        expected = net(lr)
    windows: list[tuple[int, int]] = []
    net.register_forward_pre_hook(lambda module, args: windows.append(tuple(args[0].shape[-2:])))
    tiled = tiled_forward(net, lr, scale=2, tile=24, overlap=SRRESNET_RADIUS)
    assert len(windows) == 5 and set(windows) == {(12, 24 + 2 * SRRESNET_RADIUS)}  # cores at 0, 24, 48, 72, 76
    assert (tiled - expected).abs().max() < 1e-5


def test_windows_cover_the_axis_with_equal_sizes() -> None:
    core, windows = _windows(50, 16, 4)
    assert core == 16
    covered = set()
    for core_start, window_start in windows:
        assert 0 <= window_start <= core_start - min(4, core_start)  # context above the core
        assert core_start + core + min(4, 50 - core_start - core) <= window_start + 24  # and below
        covered.update(range(core_start, core_start + core))
    assert covered == set(range(50))
    assert _windows(10, 16, 4) == (10, [(0, 0)])  # a tile larger than the side is the whole side


def test_wrong_scale_and_bad_arguments_are_user_errors() -> None:
    net = _srresnet()
    with pytest.raises(UserError, match=r"maps 24x24 to 48x48, not x4: the network is of another scale .*generator="):
        tiled_forward(net, torch.rand(1, 3, 40, 40), scale=4, tile=16, overlap=4)
    with pytest.raises(UserError, match="tile"):
        tiled_forward(net, torch.rand(1, 3, 40, 40), scale=2, tile=-1, overlap=4)


def test_odd_sizes_are_padded_for_unshuffling_networks() -> None:
    """RRDBNet x2 needs even sides: an odd image is edge-padded and the output cropped back."""
    net = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=2).eval()
    lr = torch.rand(1, 3, 21, 17)
    with torch.no_grad():
        expected = net(torch.nn.functional.pad(lr, (0, 1, 0, 1), mode="replicate"))[..., :42, :34]
    sr = tiled_forward(net, lr, scale=2, tile=0, overlap=0)
    assert sr.shape == (1, 3, 42, 34)
    assert torch.equal(sr, expected)


@pytest.mark.parametrize("scale", [2, 4])
def test_streamed_cores_cover_the_output(scale: int) -> None:
    """sr_tiles' cores cover the output (padding of unshuffling networks cropped away); written in
    the order they come, they give what tiled_forward assembles."""
    net = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=scale).eval()  # x2 pads odd sides
    lr = torch.rand(1, 3, 37, 51)
    out = torch.full((1, 3, 37 * scale, 51 * scale), float("nan"))
    for top, left, core in sr_tiles(net, lr, scale=scale, tile=16, overlap=6):
        out[..., top : top + core.shape[-2], left : left + core.shape[-1]] = core
    assert torch.equal(out, tiled_forward(net, lr, scale=scale, tile=16, overlap=6))  # no NaN left
