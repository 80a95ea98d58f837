"""The models' GPU paths (run by bench/gpu_check.sh on a lent GPU; skipped without CUDA): CUDA-graph compiled
denoise loop and decode step against eager, and flash-attn with padded H_c when flash-attn is installed. The
compiled tests assert that inductor compiled the graphs (Triton not interpreted) and kept their CUDA graphs."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

pytest.importorskip("diffusers")

from spc_fast import attention  # noqa: E402
from spc_fast.config import PRESETS, TINY, CriticConfig  # noqa: E402
from spc_fast.kernels import dispatch  # noqa: E402
from spc_fast.models import qwen_image, qwen_vl, tiny_artist, tiny_critic  # noqa: E402
from spc_fast.models.factory import critic_from, tiny_critic_corpus  # noqa: E402

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _artist(**settings):
    return tiny_artist(config=dataclasses.replace(PRESETS[TINY].artist, device="cuda", **settings))


def _critic(**settings):
    return tiny_critic(config=dataclasses.replace(PRESETS[TINY].critic, device="cuda", **settings))


@contextlib.contextmanager
def compiled_with_cuda_graphs():
    """Asserts that the block compiled graphs with inductor, not under Triton's interpreter, and that inductor
    skipped no CUDA graph (the reason of a skip is in the log)."""
    assert not dispatch.interpreting(), "TRITON_INTERPRET=1 on a CUDA machine: inductor's kernels would be interpreted"
    counters = torch._dynamo.utils.counters
    graphs, skips = counters["stats"]["unique_graphs"], counters["inductor"]["cudagraph_skips"]
    yield
    assert counters["stats"]["unique_graphs"] > graphs, "nothing was compiled: the eager path ran"
    assert counters["inductor"]["cudagraph_skips"] == skips, "inductor skipped CUDA graphs: the graphs ran without"


@pytest.fixture(autouse=True)
def full_float32():
    """Float32 that is float32: no TF32 in cuBLAS or cuDNN (the vision tower's patch convolution), so paths that
    batch the same work differently (sampling vs teacher forcing) agree to float32 rounding."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _conditioning(lengths=(7, 4), seed=0, dtype=torch.float32):
    width = qwen_image.TINY_DIT_CONFIG["joint_attention_dim"]
    g = torch.Generator().manual_seed(seed)
    h_c = torch.randn(len(lengths), max(lengths), width, generator=g)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    return h_c.to(CUDA, dtype), mask.to(CUDA)


def test_cuda_graph_denoise_loop_with_guidance_matches_eager():
    eager, compiled = _artist(attention="sdpa"), _artist(attention="sdpa")
    compiled.compile(mode="reduce-overhead")
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    h_c, mask = _conditioning()
    negative = _conditioning((7, 5), seed=1)  # same shapes as the positive: both passes replay one graph
    options = dict(num_steps=20, guidance=4.0, negative=negative, target_pixels=64 * 96)

    def edit(artist):
        return artist.edit(images, h_c, mask, generator=[torch.Generator().manual_seed(s) for s in (3, 4)], **options)

    reference = edit(eager).images
    with compiled_with_cuda_graphs():
        edit(compiled)  # warm-up: compile and record the graphs
        with torch._dynamo.config.patch(error_on_recompile=True):
            out = edit(compiled).images
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=0)


def test_cuda_graph_decode_step_gives_eager_tokens():
    model, processor = qwen_vl.build_tiny_critic(corpus=tiny_critic_corpus())
    model.to(CUDA)
    config = CriticConfig(attention="sdpa", max_new_tokens=24)
    eager = critic_from(model, processor, config)
    compiled = critic_from(model, processor, dataclasses.replace(config, compile=True))  # CUDA graphs
    images = torch.randint(0, 256, (3, 3, 56, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    expected = eager.sample(images).tokens
    with compiled_with_cuda_graphs():
        tokens = compiled.sample(images).tokens
    assert torch.equal(tokens, expected)


def test_teacher_forced_logprobs_on_cuda_match_the_sampled_ones():
    """The critic's training entry point on the GPU (float32, the GRPO kernel's token_logprobs path)."""
    critic = _critic(attention="sdpa", max_new_tokens=12)
    images = torch.randint(0, 256, (2, 3, 56, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    rollout = critic.sample(images, num_samples=2, temperature=1.0, generator=torch.Generator(CUDA).manual_seed(0))
    mask = rollout.completion_mask
    torch.testing.assert_close(critic.token_logprobs(rollout)[mask], rollout.logprobs[mask], atol=1e-3, rtol=0)


@pytest.mark.skipif(attention.unusable_reason("flash", "cuda", torch.bfloat16) is not None, reason="no flash-attn")
def test_flash_attention_padded_h_c_matches_unpadded():
    artist = _artist(attention="flash", dtype="bfloat16")
    assert artist.attention == "flash"
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
    sdpa = _critic(max_new_tokens=8, attention="sdpa", dtype="bfloat16")
    flash = _critic(max_new_tokens=8, attention="flash", dtype="bfloat16")
    assert flash.attention == "flash" and flash.model.config._attn_implementation == "flash_attention_2"
    images = torch.randint(0, 256, (2, 3, 56, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    a, b = sdpa.sample(images), flash.sample(images)
    prompt = int(a.prompt_lengths.min())
    hidden_a, hidden_b = a.judgement.hidden, b.judgement.hidden
    torch.testing.assert_close(hidden_b[:, :prompt].float(), hidden_a[:, :prompt].float(), atol=5e-2, rtol=5e-2)
