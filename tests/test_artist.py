"""PhotoArtist on tiny random-weight Qwen-Image components: diffusers parity, real RoPE, compile, LoRA, loading, and
the training entry points (rollouts, velocities under a chosen adapter)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("diffusers")
pytest.importorskip("peft")

import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus  # noqa: E402
from PIL import Image  # noqa: E402

from spc_fast.artist.lora import add_lora, merge_lora, set_adapter, unmerge_lora  # noqa: E402
from spc_fast.artist.model import REFERENCE, PhotoArtist  # noqa: E402
from spc_fast.artist.rope import RealQwenRope, apply_real_rope, rotate_pairs, use_real_rope  # noqa: E402
from spc_fast.artist.sampler import (  # noqa: E402
    dynamic_shift,
    edit_image_size,
    output_size,
    pack_latents,
    unpack_latents,
)
from spc_fast.config import ArtistConfig  # noqa: E402
from spc_fast.models.qwen_image import (  # noqa: E402
    DIT_CONFIG,
    SCHEDULER_CONFIG,
    TINY_DIT_CONFIG,
    load_artist,
    save_artist,
    save_lora,
    tiny_artist_components,
)

# float32 tiny models: our loop vs diffusers, real vs complex RoPE, merged vs unmerged LoRA.
TOL = {"pipeline": 1e-5, "rope": 1e-5, "lora_merge": 1e-5, "batch": 1e-5}
H, W = 64, 96  # 8 x 12 latents, 4 x 6 tokens per image


@pytest.fixture(scope="module")
def parts():
    return tiny_artist_components(0)


def fresh(parts, config: ArtistConfig | None = None) -> PhotoArtist:
    transformer, vae, scheduler = parts
    return PhotoArtist(copy.deepcopy(transformer), vae, copy.deepcopy(scheduler), config or ArtistConfig())


def conditioning(batch: int = 1, length: int = 7, valid: tuple[int, ...] = (5,), seed: int = 3):
    width = TINY_DIT_CONFIG["joint_attention_dim"]
    h_c = torch.randn(batch, length, width, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for i, n in enumerate(valid):
        mask[i, :n] = True
    return h_c, mask


def photo(seed: int = 0, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def dit_inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    h_c, mask = conditioning(batch, valid=(7, 4)[:batch])
    return dict(
        hidden_states=torch.randn(batch, 48, 64, generator=g),
        encoder_hidden_states=h_c,
        encoder_hidden_states_mask=mask,
        timestep=torch.tensor([0.5, 0.3][:batch]),
        img_shapes=[[(1, 4, 6), (1, 4, 6)]] * batch,
        return_dict=False,
    )


@pytest.mark.parametrize(
    "hw,pixels",
    [((480, 640), 1024 * 1024), ((1, 1), 256), ((37, 1000), 1024 * 1024), ((333, 17), 64 * 64), ((H, W), H * W)],
)
def test_output_size(hw, pixels):
    h, w = output_size(*hw, target_pixels=pixels)
    assert h % 16 == 0 and w % 16 == 0 and h >= 16 and w >= 16
    if min(output_size(*hw, target_pixels=pixels)) > 64:
        assert abs(w / h - hw[1] / hw[0]) / (hw[1] / hw[0]) < 0.15
        assert abs(h * w - pixels) / pixels < 0.1
    assert output_size(H, W, H * W) == (H, W)


def test_pack_roundtrip_and_dynamic_shift(parts):
    z = torch.randn(3, 16, 2, 10)
    assert torch.equal(unpack_latents(pack_latents(z), 2, 10), z)
    assert pack_latents(z).shape == (3, 5, 64)
    for n in (1, 256, 4096, 8192):
        assert dynamic_shift(n, parts[2]) == pytest.approx(
            edit_plus.calculate_shift(
                n,
                SCHEDULER_CONFIG["base_image_seq_len"],
                SCHEDULER_CONFIG["max_image_seq_len"],
                SCHEDULER_CONFIG["base_shift"],
                SCHEDULER_CONFIG["max_shift"],
            ),
            rel=1e-12,
        )


def test_real_rope_equals_complex(parts):
    transformer = parts[0]
    real = use_real_rope(copy.deepcopy(transformer))
    assert isinstance(real.pos_embed, RealQwenRope) and real.state_dict().keys() == transformer.state_dict().keys()
    shapes = [[(1, 4, 6), (1, 3, 5)]]
    img, txt = transformer.pos_embed(shapes, max_txt_seq_len=9, device=torch.device("cpu"))
    img_r, txt_r = real.pos_embed(shapes, max_txt_seq_len=9, device=torch.device("cpu"))
    torch.testing.assert_close(img_r, torch.view_as_real(img), atol=TOL["rope"], rtol=0)
    torch.testing.assert_close(txt_r, torch.view_as_real(txt), atol=TOL["rope"], rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(real(**dit_inputs())[0], transformer(**dit_inputs())[0], atol=TOL["rope"], rtol=0)
    x = torch.randn(2, img_r.shape[0], 3, 2 * img_r.shape[1])  # the traced (real) form against the eager one
    torch.testing.assert_close(rotate_pairs(x, img_r), apply_real_rope(x, img_r), atol=1e-6, rtol=0)


def test_matches_diffusers_edit_plus_pipeline(parts, monkeypatch):
    """Same components, prompt embeddings (bypassing the text encoder), image and seed as QwenImageEditPlusPipeline."""
    transformer, vae, scheduler = parts
    pipe = edit_plus.QwenImageEditPlusPipeline(
        scheduler=copy.deepcopy(scheduler),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        processor=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr(edit_plus, "VAE_IMAGE_SIZE", H * W)  # source encoded at the output size, as ours
    arr = photo()
    h_c, mask = conditioning()
    kwargs = dict(
        image=Image.fromarray(arr),
        prompt_embeds=h_c,
        prompt_embeds_mask=mask.long(),
        height=H,
        width=W,
        num_inference_steps=3,
        true_cfg_scale=1.0,
    )
    ref_images = pipe(**kwargs, generator=torch.Generator().manual_seed(7), output_type="pt").images
    ref_latents = pipe(**kwargs, generator=torch.Generator().manual_seed(7), output_type="latent").images

    ours = fresh(parts).edit(
        torch.from_numpy(arr).permute(2, 0, 1),
        h_c,
        mask,
        num_steps=3,
        generator=torch.Generator().manual_seed(7),
        target_pixels=H * W,
        return_trajectory=True,
    )
    torch.testing.assert_close(ours.trajectory.latents[-1], ref_latents, atol=TOL["pipeline"], rtol=0)
    torch.testing.assert_close(ours.images, ref_images, atol=TOL["pipeline"], rtol=0)
    assert ours.images.shape == (1, 3, H, W)


def test_batch_per_sample_seeds_and_trajectory(parts):
    artist = fresh(parts)
    images = torch.stack([torch.from_numpy(photo(s, 32, 48)).permute(2, 0, 1) for s in (0, 1)])
    h_c, mask = conditioning(2, valid=(7, 3))
    batched = artist.edit(
        images,
        h_c,
        mask,
        num_steps=2,
        target_pixels=32 * 48,
        return_trajectory=True,
        generator=[torch.Generator().manual_seed(s) for s in (10, 11)],
    )
    for i, seed in enumerate((10, 11)):
        single = artist.edit(
            images[i],
            h_c[i : i + 1, : int(mask[i].sum())],
            None,
            num_steps=2,
            target_pixels=32 * 48,
            generator=[torch.Generator().manual_seed(seed)],
        )
        torch.testing.assert_close(batched.images[i : i + 1], single.images, atol=TOL["batch"], rtol=0)
    traj = batched.trajectory
    assert traj.latents.shape == (3, 2, 6, 64) and traj.x0.shape == (2, 2, 6, 64) and traj.sigmas[-1] == 0
    # last step goes to sigma = 0, so the final latents are that step's x0 estimate
    torch.testing.assert_close(traj.latents[-1], traj.x0[-1], atol=1e-6, rtol=0)
    # the edit image (32 x 64, DiffSynth's auto-resize of 32 x 48) has more tokens than the output size: two shapes
    assert edit_image_size(32, 48, 32 * 48) == (32, 64) and traj.img_shapes[0] == [(1, 2, 3), (1, 2, 4)]
    assert traj.source.shape == (2, 8, 64) and batched.images.min() >= 0 and batched.images.max() <= 1


def test_resize_any_aspect_and_validation(parts):
    artist = fresh(parts)
    h_c, _ = conditioning()
    out = artist.edit(torch.rand(3, 50, 20), h_c, num_steps=2, target_pixels=48 * 16).images
    assert out.shape[-2:] == output_size(50, 20, 48 * 16)
    with pytest.raises(ValueError, match="joint_attention_dim"):
        artist.edit(torch.rand(1, 3, 16, 16), torch.zeros(1, 4, 8), num_steps=1)
    with pytest.raises(ValueError, match="negative"):
        artist.edit(torch.rand(1, 3, 16, 16), h_c, guidance=4.0, num_steps=1)
    with pytest.raises(ValueError, match="num_steps"):
        artist.edit(torch.rand(1, 3, 16, 16), h_c, num_steps=1)
    with pytest.raises(ValueError, match="multiples of 16"):
        artist.edit(torch.rand(1, 3, 16, 16), h_c, size=(20, 16), num_steps=2)


def test_tiled_decode_for_large_outputs(parts, monkeypatch):
    artist = fresh(parts)
    artist.tiled_decode_pixels = 64 * 64
    artist.vae.tile_sample_min_height = artist.vae.tile_sample_min_width = 64
    artist.vae.tile_sample_stride_height = artist.vae.tile_sample_stride_width = 48
    calls = []
    original = type(artist.vae).tiled_decode
    monkeypatch.setattr(
        type(artist.vae), "tiled_decode", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    latents = torch.randn(1, 16, 12, 10)
    big = artist.decode(latents)
    assert calls and big.shape == (1, 3, 96, 80) and not artist.vae.use_tiling
    artist.decode(latents[..., :8, :8])
    assert len(calls) == 1


def test_compile_fullgraph_no_recompiles(parts):
    counters = torch._dynamo.utils.counters
    artist = fresh(parts)
    h_c, mask = conditioning()
    args = dict(num_steps=2, target_pixels=H * W)
    eager = artist.edit(
        torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0)),
        h_c,
        mask,
        generator=torch.Generator().manual_seed(1),
        **args,
    )
    torch._dynamo.reset()
    counters.clear()
    artist.compile(backend="aot_eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = artist.edit(
            torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0)),
            h_c,
            mask,
            generator=torch.Generator().manual_seed(1),
            **args,
        )
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(compiled.images, eager.images, atol=1e-5, rtol=0)


def test_lora_adapters_switch_and_merge(parts):
    transformer = use_real_rope(copy.deepcopy(parts[0]))
    inputs = dit_inputs()
    with torch.no_grad():
        base = transformer(**inputs)[0]
        add_lora(transformer, "current")
        add_lora(transformer, "old")
        assert transformer.peft_config["current"].r == 32 and transformer.peft_config["current"].lora_alpha == 64
        torch.testing.assert_close(transformer(**inputs)[0], base, atol=0, rtol=0)  # B starts at zero
        gen = torch.Generator().manual_seed(5)
        for _name, module in transformer.named_modules():
            if hasattr(module, "lora_B") and "current" in module.lora_B:
                module.lora_B["current"].weight.copy_(
                    0.1 * torch.randn(module.lora_B["current"].weight.shape, generator=gen)
                )
        set_adapter(transformer, "current")
        trained = transformer(**inputs)[0]
        assert (trained - base).abs().max() > 1e-3
        set_adapter(transformer, "old")
        torch.testing.assert_close(transformer(**inputs)[0], base, atol=0, rtol=0)
        merge_lora(transformer, "current")
        torch.testing.assert_close(transformer(**inputs)[0], trained, atol=TOL["lora_merge"], rtol=0)
        unmerge_lora(transformer)
        set_adapter(transformer, "old")
        torch.testing.assert_close(transformer(**inputs)[0], base, atol=TOL["lora_merge"], rtol=0)
    with pytest.raises(ValueError, match="already exists"):
        add_lora(transformer, "current")


def test_load_release_layout_roundtrip(parts, tmp_path):
    transformer, vae, scheduler = parts
    save_artist(tmp_path / "base", transformer, vae, scheduler)
    release = tmp_path / "release"
    release.mkdir()
    tuned = copy.deepcopy(transformer)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01)
    save_file({k: v.contiguous() for k, v in tuned.state_dict().items()}, str(release / "dit.safetensors"))
    add_lora(tuned, "default")
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(generator=torch.Generator().manual_seed(2))
    save_lora(tuned, release / "dit_lora")

    loaded, _, loaded_scheduler = load_artist(tmp_path / "base", torch.float32, release=release)
    assert loaded_scheduler.config.shift_terminal == SCHEDULER_CONFIG["shift_terminal"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(**dit_inputs())[0], tuned(**dit_inputs())[0], atol=1e-6, rtol=0)
    plain, _, _ = load_artist(tmp_path / "base", torch.bfloat16)
    assert plain.dtype == torch.bfloat16 and not getattr(plain, "peft_config", None)

    with pytest.raises(ValueError, match="vae/config.json"):
        (tmp_path / "base" / "vae" / "config.json").unlink()
        load_artist(tmp_path / "base")
    bad = tmp_path / "bad"
    bad.mkdir()
    state = transformer.state_dict()
    state["extra.weight"] = state.pop("proj_out.weight")
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad / "dit.safetensors"))
    save_artist(tmp_path / "base2", transformer, vae, scheduler)
    with pytest.raises(ValueError, match=r"1 missing keys \['proj_out.weight'\].*1 unexpected keys \['extra.weight'\]"):
        load_artist(tmp_path / "base2", torch.float32, release=bad)


def test_release_configs():
    assert (
        DIT_CONFIG["num_layers"] == 60 and DIT_CONFIG["num_attention_heads"] * DIT_CONFIG["attention_head_dim"] == 3072
    )
    assert sum(DIT_CONFIG["axes_dims_rope"]) == DIT_CONFIG["attention_head_dim"]


class _DiT(torch.nn.Module):
    """The DiT with the non-tensor arguments bound, for torch.export."""

    def __init__(self, transformer, img_shapes):
        super().__init__()
        self.transformer, self.img_shapes = transformer, img_shapes

    def forward(self, hidden_states, encoder_hidden_states, timestep):
        return self.transformer(
            hidden_states=hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            timestep=timestep,
            img_shapes=self.img_shapes,
            return_dict=False,
        )[0]


def _has_complex(program) -> bool:
    values = [node.meta.get("val") for node in program.graph.nodes]
    return any(isinstance(v, torch.Tensor) and v.dtype.is_complex for v in values)


def test_real_rope_exports_without_complex_tensors(parts):
    """diffusers issue 12668: the complex RoPE puts complex tensors in exported graphs (TensorRT and ONNX take
    none); the real path exports to a graph without them and computes the same."""
    inputs = dit_inputs(1)
    args = (inputs["hidden_states"], inputs["encoder_hidden_states"], inputs["timestep"])
    complex_program = torch.export.export(_DiT(copy.deepcopy(parts[0]), inputs["img_shapes"]).eval(), args)
    assert _has_complex(complex_program)
    real = _DiT(use_real_rope(copy.deepcopy(parts[0])), inputs["img_shapes"]).eval()
    program = torch.export.export(real, args)
    assert not _has_complex(program)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*args), real(*args), atol=1e-6, rtol=0)


def test_config_supplies_the_edit_defaults(parts):
    artist = fresh(parts, ArtistConfig(steps=2, pixels=32 * 48))
    h_c, mask = conditioning()
    image = torch.rand(3, 40, 60, generator=torch.Generator().manual_seed(0))
    out = artist.edit(image, h_c, mask, generator=torch.Generator().manual_seed(1), return_trajectory=True)
    assert out.images.shape == (1, 3, 32, 48) and out.trajectory.timesteps.shape == (2,)
    explicit = artist.edit(image, h_c, mask, num_steps=2, target_pixels=32 * 48, guidance=1.0,
                           generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.images, explicit.images)
    assert ArtistConfig().steps == 20 and fresh(parts).config.pixels == ArtistConfig().pixels == 1024 * 1024


def _rollout(artist: PhotoArtist, steps: int = 3):
    images = torch.stack([torch.from_numpy(photo(s, 32, 48)).permute(2, 0, 1) for s in (0, 1)])
    h_c, mask = conditioning(2, valid=(7, 3))
    generators = [torch.Generator().manual_seed(s) for s in (10, 11)]
    return artist.rollout(images, h_c, mask, num_steps=steps, generator=generators, size=(32, 48)), h_c, mask


SMALL = ArtistConfig(pixels=32 * 48)  # rollouts at size=(32, 48): the edit image is 32 x 64 at this target


def test_velocity_replays_every_rollout_step(parts):
    artist = fresh(parts, SMALL)
    result, h_c, mask = _rollout(artist)
    traj = result.trajectory
    images = torch.stack([torch.from_numpy(photo(s, 32, 48)).permute(2, 0, 1) for s in (0, 1)])
    edited = artist.edit(images, h_c, mask, num_steps=3, size=(32, 48), guidance=1.0,
                         generator=[torch.Generator().manual_seed(s) for s in (10, 11)])
    assert torch.equal(result.images, edited.images), "a rollout is the deterministic sampler without CFG"
    assert traj.latents.shape == (4, 2, 6, 64) and traj.source.shape == (2, 8, 64)
    for i in range(3):
        v = artist.velocity(traj.latents[i], traj.timesteps[i], traj.source, h_c, mask, traj.img_shapes)
        assert v.shape == (2, 6, 64) and v.requires_grad
        step = (traj.latents[i].float() + (traj.sigmas[i + 1] - traj.sigmas[i]) * v).to(v.dtype)
        torch.testing.assert_close(step, traj.latents[i + 1], atol=1e-6, rtol=0)
        torch.testing.assert_close(traj.latents[i] - traj.sigmas[i] * v, traj.x0[i], atol=1e-6, rtol=0)
    per_sample = traj.timesteps[1].expand(2)  # a [B] timestep: what the NFT trainer passes
    torch.testing.assert_close(
        artist.velocity(traj.latents[1], per_sample, traj.source, h_c, mask, traj.img_shapes),
        artist.velocity(traj.latents[1], float(traj.timesteps[1]), traj.source, h_c, mask, traj.img_shapes),
        atol=0, rtol=0,
    )


def _lora_parameters(transformer, name):
    return [p for n, p in transformer.named_parameters() if "lora_" in n and f".{name}." in n]


def test_velocity_runs_the_chosen_adapter(parts):
    artist = fresh(parts, SMALL)
    transformer = artist.transformer
    result, h_c, mask = _rollout(artist, steps=2)
    traj = result.trajectory
    args = (traj.latents[1], traj.timesteps[1], traj.source, h_c, mask, traj.img_shapes)
    with torch.no_grad():
        base = artist.velocity(*args)  # no adapters yet
        with artist.reference():  # a no-op without adapters
            torch.testing.assert_close(artist.velocity(*args), base, atol=0, rtol=0)
    transformer.requires_grad_(False)
    add_lora(transformer, "current")
    add_lora(transformer, "old")
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, scale in (("current", 0.1), ("old", 0.05)):
            for p in [p for n, p in transformer.named_parameters() if f"lora_B.{name}." in n]:
                p.copy_(scale * torch.randn(p.shape, generator=gen))
    set_adapter(transformer, "current")
    for p in _lora_parameters(transformer, "old"):
        p.requires_grad_(False)  # the trainer's old policy is an EMA copy, never trained
    with torch.no_grad():
        set_adapter(transformer, "old")
        expected_old = artist.velocity(*args)
        set_adapter(transformer, "current")  # peft: "current" trainable, "old" frozen again

    current = artist.velocity(*args)
    old = artist.velocity(*args, adapter="old")
    reference = artist.velocity(*args, adapter=REFERENCE)
    with artist.reference():
        torch.testing.assert_close(artist.velocity(*args), reference, atol=0, rtol=0)
    torch.testing.assert_close(old, expected_old, atol=0, rtol=0)
    torch.testing.assert_close(reference, base, atol=1e-6, rtol=0)
    for a, b in ((current, base), (old, base), (current, old)):
        assert (a - b).abs().max() > 1e-3
    assert current.requires_grad and not old.requires_grad and not reference.requires_grad
    torch.testing.assert_close(artist.velocity(*args), current, atol=0, rtol=0)  # the active adapter is back
    assert transformer.active_adapters() == ["current"]
    assert all(p.requires_grad for p in _lora_parameters(transformer, "current"))
    assert not any(p.requires_grad for p in _lora_parameters(transformer, "old"))
    current.square().mean().backward()
    assert all(p.grad is None for p in _lora_parameters(transformer, "old"))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in _lora_parameters(transformer, "current"))
    with pytest.raises(ValueError, match="no adapter 'older'"):
        artist.velocity(*args, adapter="older")
    merge_lora(transformer, "current")
    with pytest.raises(ValueError, match="merged"):
        artist.velocity(*args, adapter="old")


def test_factory_builds_the_configured_artist(parts):
    from spc_fast.config import PRESETS, TINY
    from spc_fast.models import factory

    artist = factory.build_artist(ArtistConfig(weights=TINY, steps=3, device="cpu", dtype="float32"))
    assert artist.config.steps == 3 and artist.attention == "sdpa" and artist.transformer.dtype == torch.float32
    assert isinstance(artist.transformer.pos_embed, RealQwenRope)  # real_rope defaults on
    reference = parts[0].state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in artist.transformer.state_dict().items())
    preset = factory.tiny_artist()
    assert preset.config == dataclasses.replace(PRESETS[TINY].artist, weights=TINY)
    half = factory.tiny_artist(config=ArtistConfig(device="cpu", dtype="bfloat16"))
    assert half.transformer.dtype == half.vae.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="artist.weights is not set"):
        factory.build_artist(ArtistConfig())


def test_rollout_samples_with_the_chosen_adapter(parts):
    artist = fresh(parts, SMALL)
    transformer = artist.transformer
    add_lora(transformer, "current")
    add_lora(transformer, "old")
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in [p for n, p in transformer.named_parameters() if "lora_B." in n]:
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    images = torch.stack([torch.from_numpy(photo(s, 32, 48)).permute(2, 0, 1) for s in (0, 1)])
    h_c, mask = conditioning(2, valid=(7, 3))

    def rollout(**kwargs):
        generators = [torch.Generator().manual_seed(s) for s in (10, 11)]
        return artist.rollout(images, h_c, mask, num_steps=2, generator=generators, size=(32, 48), **kwargs)

    set_adapter(transformer, "current")
    current = rollout().trajectory.latents
    old = rollout(adapter="old").trajectory.latents
    reference = rollout(adapter=REFERENCE).trajectory.latents
    assert transformer.active_adapters() == ["current"]  # put back after the rollout
    set_adapter(transformer, "old")
    torch.testing.assert_close(rollout().trajectory.latents, old, atol=0, rtol=0)
    with artist.reference():
        torch.testing.assert_close(rollout().trajectory.latents, reference, atol=0, rtol=0)
    assert (current - old).abs().max() > 1e-4 and (old - reference).abs().max() > 1e-4
