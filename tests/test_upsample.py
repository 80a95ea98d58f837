"""Full-resolution output: ``spc_fast.artist.upsample_edit`` (bilateral guided upsampling of a working-size edit)
against the truth of a retouch applied at full size, and the diffusion artist's choice of method."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("diffusers")

from spc_fast import cli, retouch  # noqa: E402
from spc_fast.artist import upsample_edit  # noqa: E402
from spc_fast.artists import DiffusionArtist, full_res_method  # noqa: E402
from spc_fast.config import PRESETS, TINY, ArtistConfig  # noqa: E402
from spc_fast.critic.vocabulary import CriticOutput, Suggestion  # noqa: E402
from spc_fast.kernels import dispatch  # noqa: E402
from spc_fast.models import tiny_artist, tiny_critic  # noqa: E402

RETOUCH = {"exposure": 0.5, "contrast": 1.2, "saturation": 1.3, "temperature": 20.0}


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _retouch(images: torch.Tensor, **params: float) -> torch.Tensor:
    with dispatch.torch_fallback():  # the interpreted Triton kernel is slow on the CPU; the retouch is not tested here
        return retouch.apply(images, **params)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a.float() - b.float()) ** 2).mean()))


@pytest.fixture
def pair(photos):
    """A full-size photo (coffee, 400 x 600) and its half-size working copy, float32 [1, 3, H, W]."""
    full = torch.from_numpy(photos["coffee"]).permute(2, 0, 1)[None].float() / 255
    return full, _resize(full, (200, 304))


def test_identity_edit_gives_the_source_back(pair):
    full, small = pair
    torch.testing.assert_close(upsample_edit(full, small, small), full, atol=2e-5, rtol=0)


def test_a_global_affine_colour_edit_is_reproduced(pair):
    full, small = pair
    matrix = torch.tensor([[0.8, 0.1, 0.0], [0.05, 0.7, 0.1], [0.0, 0.15, 0.6]])
    offset = torch.tensor([0.05, 0.1, 0.12])
    edit = lambda x: torch.einsum("ij,bjhw->bihw", matrix, x) + offset[:, None, None]  # noqa: E731 - stays in [0, 1]
    torch.testing.assert_close(upsample_edit(full, small, edit(small)), edit(full), atol=2e-4, rtol=0)


def test_a_retouch_beats_the_resized_edit(pair):
    full, small = pair
    truth = _retouch(full, **RETOUCH)
    edited_small = _retouch(small, **RETOUCH)
    transfer = _psnr(upsample_edit(full, small, edited_small), truth)
    resized = _psnr(_resize(edited_small, full.shape[-2:]), truth)
    assert transfer > 38 and transfer > resized + 8, (transfer, resized)


def test_dtype_shape_and_batch(pair):
    full, small = pair
    edit = _retouch(small, **RETOUCH)
    alone = upsample_edit(full, small, edit)
    full_u8 = (full * 255).round().to(torch.uint8)
    out_u8 = upsample_edit(full_u8, small, edit)
    assert out_u8.dtype == torch.uint8 and out_u8.shape == full.shape
    assert (out_u8.float() - alone * 255).abs().max() <= 1.01  # the uint8 source differs by its rounding
    unbatched = upsample_edit(full[0], (small[0] * 255).round().to(torch.uint8), edit[0])
    assert unbatched.shape == full.shape[1:] and unbatched.dtype == torch.float32
    # a batch of two different edits: each image is fitted on its own pair
    flipped = full.flip(-1)
    batch = upsample_edit(torch.cat([full, flipped]), torch.cat([small, small.flip(-1)]),
                          torch.cat([edit, _retouch(small.flip(-1), exposure=-0.4)]))
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=0)
    darker = upsample_edit(flipped, small.flip(-1), _retouch(small.flip(-1), exposure=-0.4))
    torch.testing.assert_close(batch[1:], darker, atol=1e-5, rtol=0)
    odd = torch.rand(1, 3, 37, 53)
    assert upsample_edit(odd, odd[..., :5, :7], odd[..., :5, :7]).shape == odd.shape  # tiny working size, odd shapes


def test_bad_inputs(pair):
    full, small = pair
    with pytest.raises(ValueError, match="same shape"):
        upsample_edit(full, small, small[..., :-1])
    with pytest.raises(ValueError, match="one full-size source per edit"):
        upsample_edit(torch.cat([full, full]), small, small)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        upsample_edit(full[:, :2], small, small)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        upsample_edit(full * 2, small, small)
    with pytest.raises(ValueError, match="reg > 0"):
        upsample_edit(full, small, small, reg=0.0)
    with pytest.raises(ValueError, match="full_res must be transfer or resize"):
        ArtistConfig(full_res="lanczos")


def test_restoration_edits_are_resized():
    tone = CriticOutput(reasoning="", suggestions=[Suggestion("exposure", 1)], score=None, errors=[])
    restore = CriticOutput(reasoning="", suggestions=[Suggestion("exposure", 1), Suggestion("remove_blur", 1)],
                           score=None, errors=[])
    assert full_res_method(tone, "transfer") == "transfer" and full_res_method(tone, "resize") == "resize"
    assert full_res_method(restore, "transfer") == "resize"


def test_diffusion_artist_transfers_by_default_and_resizes_on_request():
    critic = tiny_critic(config=dataclasses.replace(PRESETS[TINY].critic, max_new_tokens=4))
    artist = tiny_artist()
    images = torch.randint(0, 256, (2, 3, 72, 96), dtype=torch.uint8)
    judgement = critic.critique(images)
    config = ArtistConfig(steps=2, pixels=32 * 48)
    transfer = DiffusionArtist(artist, config)
    out = transfer.edit(images, judgement)
    assert [(o.shape, o.dtype) for o in out] == [((3, 72, 96), torch.uint8)] * 2
    assert transfer.last_full_res == ["transfer"] * 2
    resize = DiffusionArtist(artist, dataclasses.replace(config, full_res="resize"))
    resized = resize.edit(images, judgement)
    assert resize.last_full_res == ["resize"] * 2
    # the transfer keeps the photo's own detail, which the resized 32 x 48 edit cannot hold
    detail = lambda x: (x.float() - _resize(_resize(x.float()[None] / 255, (32, 48)), (72, 96))[0] * 255).abs().mean()  # noqa: E731
    assert detail(out[0]) > 2 * detail(resized[0])


def test_full_res_flag_maps_onto_the_artist_config():
    parser = cli.build_parser()
    models = ["enhance", "x.png", "-o", "y.png", "--critic", "tiny", "--artist", "tiny"]
    assert cli.pipeline_config(parser.parse_args(models)).artist.full_res == "transfer"
    assert cli.pipeline_config(parser.parse_args([*models, "--full-res", "resize"])).artist.full_res == "resize"
    with pytest.raises(ValueError, match="--full-res configure the neural artist"):
        cli.pipeline_config(parser.parse_args(["enhance", "x.png", "-o", "y.png", "--full-res", "resize"]))
    with pytest.raises(SystemExit):
        parser.parse_args([*models, "--full-res", "lanczos"])
