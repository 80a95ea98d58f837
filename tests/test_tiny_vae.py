"""The tiny VAE is a block-mean codec: through the artist's own encode/decode path a photo comes back as its 8x8 block
means, the normalised latents are those means at unit scale, and different photos give different latents."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLQwenImage

from spc_fast.models import tiny_artist
from spc_fast.models.qwen_image import TINY_VAE_CONFIG, tiny_artist_components
from spc_fast.models.tiny_vae import LATENT_SCALE, make_block_mean_codec_
from spc_fast.photometric import attributes

SIZES = [(64, 64), (128, 96)]
BLOCK = 8
# |decoded - block-averaged input| in attributes: exposure (mean L*), contrast (std L*), saturation (mean chroma),
# CCT (K). Measured: below 1e-4 for the first three and 0.006 K, float32 rounding; the bounds leave wide margin.
ATTRIBUTE_TOLERANCE = torch.tensor([0.01, 0.01, 0.01, 1.0])
MIN_PSNR_DB = 80.0  # measured 116-132 dB against the block-averaged input (the random VAE: 7-12 dB)
MIN_PSNR_BFLOAT16_DB = 45.0  # measured 52-58 dB: bfloat16 keeps 8 significant bits of each value
LATENT_TOLERANCE = 1e-4  # measured 3e-6 (normalised latent vs LATENT_SCALE * block mean of 2 * rgb - 1)


def centre_crops(photos: dict, height: int, width: int) -> torch.Tensor:
    """[B, 3, height, width] float32 in [0, 1], one centre crop per bundled photo."""
    crops = []
    for array in photos.values():
        top, left = (array.shape[0] - height) // 2, (array.shape[1] - width) // 2
        crops.append(torch.from_numpy(array[top : top + height, left : left + width]).permute(2, 0, 1))
    return torch.stack(crops).float() / 255


def block_means(images: torch.Tensor) -> torch.Tensor:
    """Each 8x8 block replaced by its mean colour, same size as ``images``."""
    return F.interpolate(F.avg_pool2d(images, BLOCK), scale_factor=BLOCK, mode="nearest")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / ((a - b) ** 2).mean(dim=(1, 2, 3)))


@pytest.fixture(scope="module")
def artist():
    return tiny_artist(0)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@torch.no_grad()
def test_round_trip_keeps_block_means(artist, photos, size):
    images = centre_crops(photos, *size)
    decoded = artist.decode(artist.encode(images))
    target = block_means(images)
    assert decoded.shape == images.shape
    assert (psnr(decoded, target) > MIN_PSNR_DB).all(), psnr(decoded, target)
    error = (attributes(decoded) - attributes(target)).abs()
    assert (error < ATTRIBUTE_TOLERANCE).all(), error


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@torch.no_grad()
def test_latents_are_block_means_at_unit_scale(artist, photos, size):
    images = centre_crops(photos, *size)
    latents = artist.encode(images)  # [B, 16, h/8, w/8]
    assert latents.shape == (len(photos), 16, size[0] // BLOCK, size[1] // BLOCK)
    expected = LATENT_SCALE * (2 * F.avg_pool2d(images, BLOCK) - 1)
    assert (latents[:, :3] - expected).abs().max() < LATENT_TOLERANCE
    assert latents[:, 3:].abs().max() < LATENT_TOLERANCE
    spread = latents[:, :3].std(dim=(0, 2, 3))
    assert ((spread > 0.5) & (spread < 2.0)).all(), spread  # the sampler's noise is N(0, 1)
    flat = latents.flatten(1)
    gaps = (flat[:, None] - flat[None]).abs().mean(-1)  # [B, B] mean |difference| between photos' latents
    off_diagonal = gaps[~torch.eye(len(photos), dtype=torch.bool)]
    assert (off_diagonal > 0.05).all(), gaps  # measured at least 0.14 (the random VAE: 0.01)


@torch.no_grad()
def test_codec_holds_in_bfloat16(photos):
    _, vae, _ = tiny_artist_components(0)
    vae = vae.to(torch.bfloat16)  # the dtype a CUDA device defaults to
    images = centre_crops(photos, 64, 64)
    latents = vae.encode((images * 2 - 1).to(torch.bfloat16).unsqueeze(2)).latent_dist.mode()
    decoded = (vae.decode(latents).sample[:, :, 0].float() / 2 + 0.5).clamp(0, 1)
    assert (psnr(decoded, block_means(images)) > MIN_PSNR_BFLOAT16_DB).all()


@torch.no_grad()
def test_sampling_equals_the_mode(photos):
    _, vae, _ = tiny_artist_components(0)
    x = (centre_crops(photos, 64, 64) * 2 - 1).unsqueeze(2)
    posterior = vae.encode(x).latent_dist
    generator = torch.Generator().manual_seed(0)
    assert (posterior.sample(generator) - posterior.mode()).abs().max() < 1e-4


@torch.no_grad()
def test_tiled_decode_equals_untiled(artist):
    latents = torch.rand(1, 16, 40, 48, generator=torch.Generator().manual_seed(0)) * 4 - 2  # 320x384 > 256 tiles
    saved = artist.tiled_decode_pixels
    try:
        artist.tiled_decode_pixels = 10**9
        whole = artist.decode(latents)
        artist.tiled_decode_pixels = 0
        tiled = artist.decode(latents)
    finally:
        artist.tiled_decode_pixels = saved
    assert (whole - tiled).abs().max() < 1e-5


def test_codec_is_the_same_for_every_seed_and_the_dit_is_not():
    dit_0, vae_0, _ = tiny_artist_components(0)
    dit_1, vae_1, _ = tiny_artist_components(1)
    for (name, a), b in zip(vae_0.state_dict().items(), vae_1.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not all(torch.equal(a, b) for a, b in zip(dit_0.parameters(), dit_1.parameters(), strict=True))


@pytest.mark.parametrize(
    "config, problem",
    [
        (dict(TINY_VAE_CONFIG, base_dim=4), "channels wide"),
        (dict(TINY_VAE_CONFIG, input_channels=4), "input_channels"),
        (dict(TINY_VAE_CONFIG, z_dim=2, latents_mean=[0, 0], latents_std=[1, 1]), "z_dim"),
    ],
)
def test_refuses_vaes_it_cannot_carry(config, problem):
    with pytest.raises(ValueError, match=problem):
        make_block_mean_codec_(AutoencoderKLQwenImage(**config))
