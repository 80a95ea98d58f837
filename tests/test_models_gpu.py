"""The models' GPU paths (run by bench/gpu_check.sh on a lent GPU; skipped without CUDA): CUDA-graph compiled
denoise loop and decode step against eager, and flash-attn with padded H_c when flash-attn is installed."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from spc_fast import attention  # noqa: E402
from spc_fast.models import qwen_image, qwen_vl, tiny_artist, tiny_critic  # noqa: E402
from spc_fast.models.factory import critic_from  # noqa: E402

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _artist(**options):
    artist = tiny_artist(**options)
    for module in (artist.transformer, artist.vae):
        module.to(CUDA)
    return artist


def _conditioning(lengths=(7, 4), seed=0, dtype=torch.float32):
    width = qwen_image.TINY_DIT_CONFIG["joint_attention_dim"]
    g = torch.Generator().manual_seed(seed)
    h_c = torch.randn(len(lengths), max(lengths), width, generator=g)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    return h_c.to(CUDA, dtype), mask.to(CUDA)


def test_cuda_graph_denoise_loop_with_guidance_matches_eager():
    torch.backends.cuda.matmul.allow_tf32 = False
    eager, compiled = _artist(attention="sdpa"), _artist(attention="sdpa")
    compiled.compile(mode="reduce-overhead")
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    h_c, mask = _conditioning()
    negative = _conditioning((7, 5), seed=1)  # same shapes as the positive: both passes replay one graph
    options = dict(num_steps=20, guidance=4.0, negative=negative, target_pixels=64 * 96)

    def edit(artist):
        return artist.edit(images, h_c, mask, generator=[torch.Generator().manual_seed(s) for s in (3, 4)], **options)

    reference = edit(eager).images
    edit(compiled)  # warm-up: compile and record the graphs
    with torch._dynamo.config.patch(error_on_recompile=True):
        out = edit(compiled).images
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=0)


def test_cuda_graph_decode_step_gives_eager_tokens():
    model, processor = qwen_vl.build_tiny_critic()
    model.to(CUDA)
    eager = critic_from(model, processor, attention="sdpa", max_new_tokens=24)
    compiled = critic_from(model, processor, attention="sdpa", max_new_tokens=24, compile=True)  # CUDA graphs
    images = torch.randint(0, 256, (3, 3, 56, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(compiled.critique(images).tokens, eager.critique(images).tokens)


@pytest.mark.skipif(attention.unusable_reason("flash", "cuda", torch.bfloat16) is not None, reason="no flash-attn")
def test_flash_attention_padded_h_c_matches_unpadded():
    artist = tiny_artist(attention="sdpa")
    for module in (artist.transformer, artist.vae):
        module.to(CUDA, torch.bfloat16)
    assert attention.set_dit_attention(artist.transformer, "flash") == "flash"
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    h_c, mask = _conditioning(dtype=torch.bfloat16)
    options = dict(num_steps=4, target_pixels=64 * 96)
    batched = artist.edit(images, h_c, mask, generator=[torch.Generator().manual_seed(s) for s in (3, 4)], **options)
    for i, seed in enumerate((3, 4)):
        single = artist.edit(
            images[i], h_c[i : i + 1, : int(mask[i].sum())], None, generator=torch.Generator().manual_seed(seed),
            **options,
        )
        torch.testing.assert_close(batched.images[i : i + 1], single.images, atol=2e-2, rtol=0)


@pytest.mark.skipif(attention.unusable_reason("flash", "cuda", torch.bfloat16) is not None, reason="no flash-attn")
def test_flash_prefill_critic_states_match_sdpa():
    sdpa, flash = tiny_critic(max_new_tokens=8, attention="sdpa"), tiny_critic(max_new_tokens=8, attention="sdpa")
    for critic in (sdpa, flash):
        critic.model.to(CUDA, torch.bfloat16)
    assert attention.set_vlm_attention(flash.model, "flash") == "flash"
    images = torch.randint(0, 256, (2, 3, 56, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    a, b = sdpa.critique(images), flash.critique(images)
    prompt = int(a.prompt_lengths.min())
    torch.testing.assert_close(b.hidden[:, :prompt].float(), a.hidden[:, :prompt].float(), atol=5e-2, rtol=5e-2)
