"""Edits that start from the photo (``ArtistConfig.strength`` < 1, SDEdit) instead of pure noise: the schedule covers
unshifted time [s, 0], the first latent is the photo's noised to the first sigma, the flow-matching draws of
DiffusionNFT stay in the times such a sampler visits, and stage III takes it as a setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spc_fast.artist.model import PhotoArtist, release_resize
from spc_fast.artist.sampler import pack_latents, schedule, start_latents
from spc_fast.config import ArtistConfig
from spc_fast.models.qwen_image import TINY_DIT_CONFIG, tiny_artist_components
from spc_fast.training.flow import draw_flow, shifted_timesteps
from spc_fast.training.joint_config import joint_config

SIZE = (64, 96)
TOKENS = (SIZE[0] // 16) * (SIZE[1] // 16)


@pytest.fixture(scope="module")
def artist() -> PhotoArtist:
    return PhotoArtist(*tiny_artist_components(0), ArtistConfig(steps=2, pixels=SIZE[0] * SIZE[1]))


@pytest.fixture(scope="module")
def images(photos) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(photos["chelsea"][:192, :288])).permute(2, 0, 1)[None]


def _conditioning() -> torch.Tensor:
    return torch.randn(1, 5, TINY_DIT_CONFIG["joint_attention_dim"], generator=torch.Generator().manual_seed(2))


def test_the_schedule_covers_time_strength_to_zero(artist):
    scheduler = artist.scheduler
    full, _ = schedule(scheduler, 4, TOKENS, torch.device("cpu"))
    torch.testing.assert_close(full, schedule(scheduler, 4, TOKENS, torch.device("cpu"), 1.0)[0])
    assert full[0] == 1.0
    part, timesteps = schedule(scheduler, 4, TOKENS, torch.device("cpu"), 0.3)
    assert 0.2 < part[0] < 0.4 and part[-1] == 0 and bool((part.diff() < 0).all())
    torch.testing.assert_close(timesteps, part[:-1] * 1000)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="strength must be in"):
            schedule(scheduler, 4, TOKENS, torch.device("cpu"), bad)


def test_the_config_names_a_strength_out_of_range():
    assert ArtistConfig().strength == 1.0
    for bad in (0.0, 1.01):
        with pytest.raises(ValueError, match="artist.strength must be in"):
            ArtistConfig(strength=bad)


def test_an_edit_starts_from_the_noised_photo(artist, images):
    h_c = _conditioning()
    generator = [torch.Generator().manual_seed(7)]
    out = artist.edit(images, h_c, size=SIZE, strength=0.3, return_trajectory=True, generator=generator)
    trajectory = out.trajectory
    noise = pack_latents(torch.randn((1, 1, 16, 8, 12), generator=torch.Generator().manual_seed(7))[:, 0])
    with torch.no_grad():
        clean = pack_latents(artist.encode(release_resize(images, SIZE, SIZE)))
    torch.testing.assert_close(trajectory.latents[0], start_latents(clean, noise, trajectory.sigmas[0]))
    # the config's strength is the default, and the same seed gives the same edit
    config = ArtistConfig(steps=2, pixels=SIZE[0] * SIZE[1], strength=0.3)
    configured = PhotoArtist(artist.transformer, artist.vae, artist.scheduler, config)
    again = configured.edit(images, h_c, size=SIZE, generator=[torch.Generator().manual_seed(7)])
    torch.testing.assert_close(again.images, out.images)


def test_a_small_strength_keeps_the_photo_and_a_full_one_redraws_it(artist, images):
    h_c = _conditioning()
    with torch.no_grad():
        round_trip = artist.decode(artist.encode(release_resize(images, SIZE, SIZE)))

    def distance(strength: float) -> float:
        edit = artist.edit(images, h_c, size=SIZE, strength=strength, generator=torch.Generator().manual_seed(1))
        return float((edit.images - round_trip).abs().mean())

    near, far = distance(0.05), distance(1.0)
    assert near < 0.2 * far, (near, far)


def test_nft_draws_stay_in_the_times_the_sampler_visits(artist):
    ids = [f"edit-{i}" for i in range(64)]
    full = draw_flow(0, 3, ids, (TOKENS, 64), TOKENS, artist.scheduler)
    torch.testing.assert_close(full.t, draw_flow(0, 3, ids, (TOKENS, 64), TOKENS, artist.scheduler, 1.0).t)
    part = draw_flow(0, 3, ids, (TOKENS, 64), TOKENS, artist.scheduler, 0.3)
    top = float(shifted_timesteps(torch.tensor([0.3]), TOKENS, artist.scheduler))
    assert float(part.t.max()) <= top < float(full.t.max())
    torch.testing.assert_close(part.noise, full.noise)  # only the times change


def test_stage_iii_rolls_out_from_noise_unless_told():
    assert joint_config("tiny").artist.strength == joint_config("release").artist.strength == 1.0
    assert joint_config("tiny", ["artist.strength=0.3"]).artist.strength == 0.3
