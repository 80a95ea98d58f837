"""The release's automatic mode, reproduced (SPEC.md §6): working sizes and resizes, the DiT over two image shapes,
the critic's H_c against transformers' own ``generate`` over the release's chat and edit image, and the sampling
schedule against DiffSynth's formula. Every reference here is written out independently of the code under test."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus  # noqa: E402
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402

from spc_fast.artist import output_size, schedule, use_real_rope  # noqa: E402
from spc_fast.artist.model import PhotoArtist  # noqa: E402
from spc_fast.config import ArtistConfig, CriticConfig  # noqa: E402
from spc_fast.images import edit_image, edit_image_size  # noqa: E402
from spc_fast.models import tiny_critic  # noqa: E402
from spc_fast.models.qwen_image import SCHEDULER_CONFIG, TINY_DIT_CONFIG, tiny_artist_components  # noqa: E402

P = 1024 * 1024


def release_output_size(height: int, width: int, pixels: int = P) -> tuple[int, int]:
    r = width / height
    h = int(math.sqrt(pixels / r))
    w = int(h * r)
    return max(16, round(h / 16) * 16), max(16, round(w / 16) * 16)


def release_auto_resize(height: int, width: int, pixels: int = P) -> tuple[int, int]:
    r = width / height
    return round(math.sqrt(pixels / r) / 32) * 32, round(math.sqrt(pixels * r) / 32) * 32


def release_edit_image(photo: np.ndarray, pixels: int = P) -> Image.Image:
    """Two PIL resizes with PIL's default (bicubic) filter, as the release's infer.py and DiffSynth do."""
    image = Image.fromarray(photo)
    h, w = release_output_size(image.height, image.width, pixels)
    image = image.resize((w, h))
    h2, w2 = release_auto_resize(image.height, image.width, pixels)
    return image.resize((w2, h2))


def test_sizes_follow_the_release_over_a_sweep_of_aspect_ratios():
    assert output_size(3000, 4000) == (880, 1184) and edit_image_size(3000, 4000) == (896, 1184)
    assert output_size(7832, 7970) == release_output_size(7832, 7970) == (1008, 1024)
    assert edit_image_size(7832, 7970) == (1024, 1024)
    checked = 0
    for height in range(97, 9000, 211):
        for width in range(53, 9000, 173):
            out = release_output_size(height, width)
            assert output_size(height, width) == out, (height, width)
            assert edit_image_size(height, width) == release_auto_resize(*out), (height, width)
            checked += 1
    for ratio in np.linspace(0.25, 4.0, 301):  # exact ratios of large photos
        height, width = 6000, int(6000 * ratio)
        out = release_output_size(height, width)
        assert output_size(height, width) == out and edit_image_size(height, width) == release_auto_resize(*out)
    assert checked > 1500


@pytest.mark.parametrize("hw", [(300, 400), (233, 517), (480, 270)])
def test_edit_image_is_two_pil_bicubic_resizes(hw):
    photo = np.random.default_rng(hw[0]).integers(0, 256, (*hw, 3), dtype=np.uint8)
    ours = edit_image(photo, 64 * 96)
    assert np.array_equal(ours, np.asarray(release_edit_image(photo, 64 * 96)))
    assert ours.shape[:2] == edit_image_size(*hw, 64 * 96)


# ---- the DiT over two image shapes (noise tokens at the output size, source tokens at the edit-image size) ----


@pytest.fixture(scope="module")
def parts():
    return tiny_artist_components(0)


def test_real_rope_dit_equals_diffusers_for_two_shapes(parts):
    transformer = parts[0]
    real = use_real_rope(copy.deepcopy(transformer))
    g = torch.Generator().manual_seed(5)
    shapes = [(1, 4, 6), (1, 3, 5)]  # 24 noise tokens, then 15 source tokens
    h_c = torch.randn(2, 7, TINY_DIT_CONFIG["joint_attention_dim"], generator=g)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)
    inputs = dict(
        hidden_states=torch.randn(2, 24 + 15, 64, generator=g),
        encoder_hidden_states=h_c,
        encoder_hidden_states_mask=mask,
        timestep=torch.tensor([0.6, 0.2]),
        img_shapes=[shapes] * 2,
        return_dict=False,
    )
    with torch.no_grad():
        ours, ref = real(**inputs)[0], transformer(**inputs)[0]
    assert ours.shape == (2, 39, 64)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_edit_matches_diffusers_with_two_shapes(parts, monkeypatch):
    """Output 32 x 48 and edit image 32 x 64 (the auto-resize at 32·48 pixels): our edit of the photo against
    QwenImageEditPlusPipeline handed the release's edit image, with the same seed and H_c."""
    transformer, vae, scheduler = parts
    pixels = 32 * 48
    photo = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert release_output_size(40, 50, pixels) == (32, 48) and release_auto_resize(32, 48, pixels) == (32, 64)
    pipe = edit_plus.QwenImageEditPlusPipeline(
        scheduler=copy.deepcopy(scheduler), vae=vae, text_encoder=None, tokenizer=None, processor=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr(edit_plus, "VAE_IMAGE_SIZE", pixels)  # its resize of the 32 x 64 edit image is a no-op
    g = torch.Generator().manual_seed(3)
    h_c = torch.randn(1, 6, TINY_DIT_CONFIG["joint_attention_dim"], generator=g)
    mask = torch.ones(1, 6, dtype=torch.long)
    ref = pipe(
        image=release_edit_image(photo, pixels), prompt_embeds=h_c, prompt_embeds_mask=mask, height=32, width=48,
        num_inference_steps=3, true_cfg_scale=1.0, generator=torch.Generator().manual_seed(7), output_type="pt",
    ).images
    artist = PhotoArtist(copy.deepcopy(transformer), vae, copy.deepcopy(scheduler), ArtistConfig(pixels=pixels))
    ours = artist.edit(
        torch.from_numpy(photo).permute(2, 0, 1), h_c, mask, num_steps=3, generator=torch.Generator().manual_seed(7),
        return_trajectory=True,
    )
    assert ours.trajectory.img_shapes == [[(1, 2, 3), (1, 2, 4)]] and ours.trajectory.source.shape == (1, 8, 64)
    torch.testing.assert_close(ours.images, ref, atol=1e-5, rtol=0)


# ---- H_c: prompt states, then one per generated token but the last ----


def test_hidden_states_match_generate_with_hidden_states():
    critic = tiny_critic(config=CriticConfig(max_new_tokens=10, device="cpu", dtype="float32"))
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in ((60, 90), (28, 28))]
    judgement = critic.critique(photos)
    processor, model = critic.processor, critic.model
    messages = [
        {"role": "system", "content": [{"type": "text", "text": critic.config.system_prompt}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": critic.config.instruction}]},
    ]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    rows = []
    for i, photo in enumerate(photos):
        inputs = processor(text=[chat], images=[release_edit_image(photo)], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=10, do_sample=False, output_hidden_states=True, return_dict_in_generate=True,
                eos_token_id=critic.stop_ids, pad_token_id=critic.pad_id,
            )
        steps = out.hidden_states  # step 0: every prompt position; then one state per fed token
        expected = torch.cat([steps[0][-1][0], *[step[-1][0] for step in steps[1:]]])
        generated = out.sequences.shape[1] - inputs["input_ids"].shape[1]
        assert expected.shape[0] == inputs["input_ids"].shape[1] + generated - 1
        rows.append(expected.shape[0])
        assert int(judgement.mask[i].sum()) == expected.shape[0] and judgement.mask[i, : expected.shape[0]].all()
        got = judgement.hidden[i, : expected.shape[0]]
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)
        assert (judgement.hidden[i, expected.shape[0] :] == 0).all()
    assert rows[0] != rows[1] and judgement.hidden.shape[1] == max(rows), "right-padded to the longest"


# ---- the schedule: DiffSynth's Qwen-Image formula ----


def diffsynth_schedule(num_steps: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    sigmas = np.linspace(1.0, 0.0, num_steps + 1)[:-1]
    mu = (0.9 - 0.5) / (8192 - 256) * (seq_len - 256) + 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        sigmas = math.exp(mu) / (math.exp(mu) + 1 / sigmas - 1)
        sigmas = 1 - (1 - sigmas) / ((1 - sigmas[-1]) / (1 - 0.02))
    return np.append(sigmas, 0.0), 1000 * sigmas


@pytest.mark.parametrize("hw", [(880, 1184), (1024, 1024), (512, 2048), (256, 256), (64, 64), (1440, 1440)])
def test_schedule_is_diffsynths(hw):
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    seq_len = (hw[0] // 16) * (hw[1] // 16)
    worst = 0.0
    for n in range(2, 51):
        sigmas, timesteps = schedule(scheduler, n, seq_len, torch.device("cpu"))
        ref_sigmas, ref_timesteps = diffsynth_schedule(n, seq_len)
        assert sigmas.shape == (n + 1,) and timesteps.shape == (n,) and sigmas[-1] == 0
        worst = max(worst, np.abs(sigmas.double().numpy() - ref_sigmas).max())
        worst = max(worst, np.abs(timesteps.double().numpy() - ref_timesteps).max() / 1000)
    assert worst <= 1e-6
    # one step: DiffSynth's terminal stretch is 0 / 0 (NaN, or a rounding accident), so ``schedule`` refuses it
    with pytest.raises(ValueError, match="num_steps must be >= 2"):
        schedule(scheduler, 1, seq_len, torch.device("cpu"))
