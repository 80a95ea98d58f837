"""Full-resolution output: ``spc_fast.artist.upsample_edit`` (bilateral guided upsampling of a working-size edit)
against the truth of a retouch applied at full size, its slice (the torch path and the fused Triton kernel, in the
interpreter on CPU) against a float64 evaluation of the definition, and the diffusion artist's choice of method."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("diffusers")

from spc_fast import cli, retouch  # noqa: E402
from spc_fast.artist import upsample_edit  # noqa: E402
from spc_fast.artist.upsample import apply_grid, fit_grid, slice_torch  # noqa: E402
from spc_fast.artists import DiffusionArtist, full_res_method  # noqa: E402
from spc_fast.config import PRESETS, TINY, ArtistConfig  # noqa: E402
from spc_fast.critic.vocabulary import CriticOutput, Suggestion  # noqa: E402
from spc_fast.kernels import dispatch  # noqa: E402
from spc_fast.models import tiny_artist, tiny_critic  # noqa: E402

RETOUCH = {"exposure": 0.5, "contrast": 1.2, "saturation": 1.3, "temperature": 20.0}
DTYPES = (torch.uint8, torch.float32, torch.float16, torch.bfloat16)
# slice against the float64 definition: float32 rounding, plus one rounding of the output (uint8 in 1/255 steps)
ATOL = {torch.uint8: 1.0, torch.float32: 1e-5, torch.float16: 2**-11, torch.bfloat16: 2**-8}
# the slice's two paths, chosen through kernels.dispatch; the kernel runs in Triton's interpreter on CPU tensors
PATHS = ["torch", pytest.param("triton", marks=pytest.mark.interpreter)]


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


def slice_reference(grid: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The slice by its definition in float64 (eight vertices per pixel, then the transform), unclamped to a dtype:
    [B, 3, H, W] in [0, 1]."""
    g = grid.double().permute(0, 2, 3, 4, 1)  # [B, Z, Y, X, 12]
    x = images.double() / 255 if images.dtype == torch.uint8 else images.double()
    b, _, h, w = x.shape
    _, gz, gy, gx, _ = g.shape

    def lower_corner(coord, size):
        low = coord.floor().clamp(0, size - 2)
        return low.long(), coord - low

    z0, fz = lower_corner((0.25 * x[:, 0] + 0.5 * x[:, 1] + 0.25 * x[:, 2]).clamp(0, 1) * (gz - 1), gz)  # [B, H, W]
    y0, fy = lower_corner((torch.arange(h, dtype=torch.float64) + 0.5) / h * (gy - 1), gy)
    x0, fx = lower_corner((torch.arange(w, dtype=torch.float64) + 0.5) / w * (gx - 1), gx)
    image = torch.arange(b)[:, None, None]
    coef = torch.zeros(b, h, w, 12, dtype=torch.float64)
    for dz, dy, dx in itertools.product((0, 1), repeat=3):
        weight = (fz if dz else 1 - fz) * (fy if dy else 1 - fy)[:, None] * (fx if dx else 1 - fx)
        coef += weight[..., None] * g[image, z0 + dz, (y0 + dy)[:, None], x0 + dx]
    out = coef[..., 9:12] + sum(coef[..., 3 * j:3 * j + 3] * x[:, j, ..., None] for j in range(3))
    return out.clamp(0, 1).permute(0, 3, 1, 2)


def assert_matches_reference(got: torch.Tensor, reference: torch.Tensor) -> None:
    scale = 255 if got.dtype == torch.uint8 else 1
    error = (got.double() - reference * scale).abs().max().item()
    assert error <= ATOL[got.dtype] * scale, (got.dtype, error)


def slice_with(path: str, grid: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    if path == "torch":
        return slice_torch(grid, images)
    from spc_fast.kernels.bilateral_slice import bilateral_slice

    return bilateral_slice(images, grid)


@st.composite
def slice_cases(draw):
    """Images of odd sizes down to one pixel (contiguous, channels_last or a strided view) and a random grid."""
    batch, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 23)), draw(st.integers(1, 29))
    dtype, layout = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    shape = draw(st.tuples(st.integers(2, 6), st.integers(2, 5), st.integers(2, 5)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    images = torch.rand(batch, 3, 2 * h, 3 * w, generator=generator)
    images = (images * 255).round().to(torch.uint8) if dtype == torch.uint8 else images.to(dtype)
    images = images[:, :, ::2, ::3] if layout == "strided" else images[:, :, :h, :w].contiguous()
    if layout == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    identity = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0])[None, :, None, None, None]
    grid = identity + 0.3 * torch.randn(batch, 12, *shape, generator=generator)
    return images, grid


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=20)
@given(case=slice_cases())
def test_slice_matches_its_definition(path, case):
    images, grid = case
    out = slice_with(path, grid, images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.stride() == torch.empty_like(images).stride()  # the layout of a dense input, else contiguous
    assert_matches_reference(out, slice_reference(grid, images))


@pytest.mark.interpreter
def test_kernel_errors_and_opcheck():
    from spc_fast.kernels import bilateral_slice as module

    images, grid = torch.rand(2, 3, 5, 7), torch.randn(2, 12, 3, 2, 2)
    with pytest.raises(ValueError, match="does not fit"):
        module.bilateral_slice(images, grid[:1])
    with pytest.raises(ValueError, match="32-bit offsets"):
        module._check_offsets(torch.empty_strided((1, 3, 2, 2), (0, 2**31, 2, 1), dtype=torch.uint8, device="meta"))
    torch.library.opcheck(torch.ops.spc_fast.bilateral_slice.default, (images, grid))


@pytest.mark.interpreter
def test_upsample_edit_runs_the_kernel_where_dispatch_allows(pair, monkeypatch):
    full, small = pair
    full_u8 = (full[..., :150, :220] * 255).round().to(torch.uint8)
    small = _resize(full_u8.float() / 255, (75, 110))
    edit = _retouch(small, **RETOUCH)
    monkeypatch.setenv(dispatch.SETTING_ENV, "torch")
    expected = upsample_edit(full_u8, small, edit)
    monkeypatch.setenv(dispatch.SETTING_ENV, "triton")
    before = dispatch.launches.copy()
    got = upsample_edit(full_u8, small, edit)
    assert (dispatch.launches - before) == {("_bilateral_slice_kernel", "interpreted"): 1}
    assert got.dtype == torch.uint8 and (got.int() - expected.int()).abs().max() <= 1
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # CPU tensors without the interpreter: the kernel cannot run
    with pytest.raises(RuntimeError, match="bilateral_slice Triton kernel"):
        upsample_edit(full_u8, small, edit)
    monkeypatch.setenv(dispatch.SETTING_ENV, "auto")
    before = dispatch.launches.copy()
    assert torch.equal(upsample_edit(full_u8, small, edit), expected) and dispatch.launches == before


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.bfloat16])
def test_compiled_kernel_on_cuda(dtype, pair, compiled_kernels):
    full, small = pair
    edit = _retouch(small, **RETOUCH)
    images = (full * 255).round().to(torch.uint8) if dtype == torch.uint8 else full.to(dtype)
    cuda = images.cuda().contiguous(memory_format=torch.channels_last)
    with compiled_kernels("_bilateral_slice_kernel"):
        out = upsample_edit(cuda, small.cuda(), edit.cuda())
        grid = fit_grid(small.cuda(), edit.cuda())
        sliced = apply_grid(grid, cuda)
    assert out.is_cuda and out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert_matches_reference(sliced.cpu(), slice_reference(grid.cpu(), images))


@pytest.mark.parametrize("path", PATHS)
def test_identity_edit_gives_the_source_back(path, pair, monkeypatch):
    monkeypatch.setenv(dispatch.SETTING_ENV, path)
    full, small = pair
    torch.testing.assert_close(upsample_edit(full, small, small), full, atol=2e-5, rtol=0)


@pytest.mark.parametrize("path", PATHS)
def test_a_global_affine_colour_edit_is_reproduced(path, pair, monkeypatch):
    monkeypatch.setenv(dispatch.SETTING_ENV, path)
    full, small = pair
    matrix = torch.tensor([[0.8, 0.1, 0.0], [0.05, 0.7, 0.1], [0.0, 0.15, 0.6]])
    offset = torch.tensor([0.05, 0.1, 0.12])
    edit = lambda x: torch.einsum("ij,bjhw->bihw", matrix, x) + offset[:, None, None]  # noqa: E731 - stays in [0, 1]
    torch.testing.assert_close(upsample_edit(full, small, edit(small)), edit(full), atol=2e-4, rtol=0)


def test_a_retouch_beats_the_resized_edit(pair, torch_path):
    full, small = pair
    truth = _retouch(full, **RETOUCH)
    edited_small = _retouch(small, **RETOUCH)
    transfer = _psnr(upsample_edit(full, small, edited_small), truth)
    resized = _psnr(_resize(edited_small, full.shape[-2:]), truth)
    assert transfer > 38 and transfer > resized + 8, (transfer, resized)


def test_dtype_shape_and_batch(pair, torch_path):
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
