"""The attention setting: resolution (an explicit backend that cannot run is an error naming the fix; only ``auto``
falls back, saying once why), both models taking it, and padded H_c under every backend's mask semantics (flash-attn's
varlen path emulated on the CPU the way diffusers packs the keys)."""

from __future__ import annotations

import copy
import importlib.util
import logging

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("diffusers")

from diffusers.models.attention_dispatch import AttentionBackendName  # noqa: E402

from spc_fast import attention, notices  # noqa: E402
from spc_fast.artist import rope  # noqa: E402
from spc_fast.artist.model import PhotoArtist  # noqa: E402
from spc_fast.config import ATTENTION_BACKENDS, ArtistConfig, CriticConfig  # noqa: E402
from spc_fast.critic.model import ImageCritic  # noqa: E402
from spc_fast.models import qwen_vl  # noqa: E402
from spc_fast.models.factory import tiny_critic_corpus  # noqa: E402
from spc_fast.models.qwen_image import TINY_DIT_CONFIG, tiny_artist_components  # noqa: E402


@pytest.fixture
def installed(monkeypatch):
    """Pretend flash_attn and xformers are installed (resolution only looks at find_spec)."""
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return object() if name in ("flash_attn", "xformers") else real(name, *args)

    monkeypatch.setattr(attention.importlib.util, "find_spec", find_spec)
    notices.forget()


def test_resolution_rules(installed):
    bf16, fp32 = torch.bfloat16, torch.float32
    assert attention.BACKENDS is ATTENTION_BACKENDS
    assert attention.resolve("auto", "cuda", bf16) == "flash"
    assert attention.resolve("xformers", "cuda", fp32) == "xformers"
    assert attention.resolve("auto", "cpu", bf16) == "sdpa"
    assert attention.resolve("auto", "cuda", fp32) == "sdpa"  # flash-attn has no fp32 kernel
    assert attention.resolve("sdpa", "cuda", bf16) == "sdpa"
    assert attention.runnable("cuda", bf16) == ["sdpa", "flash", "xformers"]
    assert attention.runnable("cpu", bf16) == ["sdpa"]
    with pytest.raises(ValueError, match="choose one of auto, sdpa, flash, xformers"):
        attention.resolve("flex", "cpu", fp32)


def test_explicit_backend_that_cannot_run_is_an_error(installed):
    with pytest.raises(ValueError, match=r"attention 'flash' cannot run: flash-attn needs float16 or bfloat16.*"
                                         r"set dtype bfloat16.*'auto'"):
        attention.resolve("flash", "cuda", torch.float32)
    for backend in ("flash", "xformers"):
        with pytest.raises(ValueError, match=f"{backend} needs a CUDA device, the model is on cpu; run it on a GPU"):
            attention.resolve(backend, "cpu", torch.bfloat16)


def test_missing_package_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setattr(attention.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match=r"flash_attn is not installed; install it: pip install 'spc-fast\[gpu\]'"):
        attention.resolve("flash", "cuda", torch.bfloat16)
    with pytest.raises(ValueError, match="xformers is not installed; install it: pip install xformers"):
        attention.resolve("xformers", "cuda", torch.bfloat16)


def test_auto_says_once_which_backend_runs_and_why(caplog, monkeypatch):
    notices.forget()
    monkeypatch.setattr(attention.importlib.util, "find_spec", lambda name, *a: None)
    with caplog.at_level(logging.INFO, logger="spc_fast.attention"):
        for _ in range(3):
            assert attention.resolve("auto", "cuda", torch.bfloat16) == "sdpa"
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING  # a GPU without flash-attn
    message = caplog.records[0].getMessage()
    assert message.startswith("attention auto: PyTorch SDPA, because flash_attn is not installed")
    assert "spc-fast[gpu]" in message and "\n" not in message


def test_auto_on_a_cpu_is_said_at_info(caplog, installed):
    with caplog.at_level(logging.INFO, logger="spc_fast.attention"):
        assert attention.resolve("auto", "cpu", torch.float32) == "sdpa"
        assert attention.resolve("auto", "cpu", torch.float32) == "sdpa"
        assert attention.resolve("auto", "cuda", torch.bfloat16) == "flash"
    assert [(r.levelno, r.getMessage().split(",")[0]) for r in caplog.records] == [
        (logging.INFO, "attention auto: PyTorch SDPA"),
        (logging.INFO, "attention auto: flash-attn (installed"),
    ]
    assert "flash needs a CUDA device" in caplog.records[0].getMessage()


def test_both_models_take_the_setting():
    notices.forget()
    transformer, vae, scheduler = tiny_artist_components(0)
    artist = PhotoArtist(transformer, vae, scheduler, ArtistConfig(attention="sdpa"))
    assert artist.attention == "sdpa"
    processors = set(map(type, artist.transformer.attn_processors.values()))
    assert processors == {rope.RealRopeJointAttnProcessor}
    assert all(p._attention_backend == AttentionBackendName.NATIVE for p in artist.transformer.attn_processors.values())
    model, processor = qwen_vl.build_tiny_critic(corpus=tiny_critic_corpus())
    with pytest.raises(ValueError, match="attention 'xformers' cannot run: transformers has no xformers path"):
        ImageCritic(model, processor, CriticConfig(attention="xformers"))
    critic = ImageCritic(model, processor, CriticConfig(attention="auto"))
    assert critic.attention == "sdpa" and model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="attention 'flash' cannot run"):  # no flash-attn, or no GPU here
        ImageCritic(model, processor, CriticConfig(attention="flash"))


def _diffusers_varlen(query, key, value, attn_mask):
    # what diffusers' flash_varlen backend computes: per sample, keys truncated to the mask's count (a suffix
    # padding is assumed), queries all kept
    lengths = attn_mask.sum(1).tolist()
    outs = []
    for b, n in enumerate(lengths):
        q, k, v = (t[b : b + 1].transpose(1, 2) for t in (query, key[:, :n], value[:, :n]))
        outs.append(F.scaled_dot_product_attention(q, k, v).transpose(1, 2))
    return torch.cat(outs)


def test_padded_h_c_under_flash_varlen_semantics(monkeypatch):
    """A padded batch under flash (emulated varlen: keys cut at the mask's count) gives what each sample gives
    unpadded under SDPA: the image-first layout puts H_c's padding at the end of the keys."""
    transformer, _, _ = tiny_artist_components(0)
    transformer = rope.use_real_rope(copy.deepcopy(transformer))
    seen = []
    native = rope.dispatch_attention_fn

    def dispatch(query, key, value, *, attn_mask=None, backend=None, **kw):
        name = getattr(backend, "value", backend)
        seen.append(name)
        if name == "flash_varlen":
            return _diffusers_varlen(query, key, value, attn_mask)
        assert name == "flash" and attn_mask is None, "flash-attn 2 must never see a mask"
        return native(query, key, value, attn_mask=None, backend=AttentionBackendName.NATIVE, **kw)

    g = torch.Generator().manual_seed(0)
    width = TINY_DIT_CONFIG["joint_attention_dim"]
    h_c = torch.randn(2, 9, width, generator=g)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :9], mask[1, :4] = True, True
    h_c[1, 4:] = 1e3  # padding content must not matter
    tokens = torch.randn(2, 48, 64, generator=g)
    kwargs = dict(timestep=torch.tensor([0.7, 0.2]), img_shapes=[[(1, 4, 6), (1, 4, 6)]] * 2, return_dict=False)
    with torch.no_grad():
        reference = [
            transformer(
                hidden_states=tokens[i : i + 1],
                encoder_hidden_states=h_c[i : i + 1, : int(mask[i].sum())],
                encoder_hidden_states_mask=None,
                **{**kwargs, "timestep": kwargs["timestep"][i : i + 1], "img_shapes": kwargs["img_shapes"][:1]},
            )[0]
            for i in range(2)
        ]
        for processor in transformer.attn_processors.values():
            processor._attention_backend = AttentionBackendName.FLASH
        monkeypatch.setattr(rope, "dispatch_attention_fn", dispatch)
        padded = transformer(hidden_states=tokens, encoder_hidden_states=h_c, encoder_hidden_states_mask=mask,
                             **kwargs)[0]
    assert set(seen) == {"flash_varlen"}
    torch.testing.assert_close(padded, torch.cat(reference), atol=1e-5, rtol=0)


def _varlen_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                      softmax_scale=None, causal=False, **unused):
    """flash_attn_varlen_func in torch: packed [tokens, heads, dim] sequences, GQA, causal aligned bottom-right."""
    out = torch.zeros_like(q)
    groups = q.shape[1] // k.shape[1]
    for i in range(len(cu_seqlens_q) - 1):
        qs, qe, ks, ke = (int(x) for x in (cu_seqlens_q[i], cu_seqlens_q[i + 1], cu_seqlens_k[i], cu_seqlens_k[i + 1]))
        if qe == qs:
            continue
        qi = q[qs:qe].transpose(0, 1)
        ki, vi = (t[ks:ke].repeat_interleave(groups, 1).transpose(0, 1) for t in (k, v))
        mask = None
        if causal:
            mask = torch.arange(ke - ks)[None, :] <= torch.arange(qe - qs)[:, None] + (ke - ks) - (qe - qs)
        out[qs:qe] = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, scale=softmax_scale).transpose(0, 1)
    return out


def _dense_reference(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **unused):
    b, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    cu_q, cu_k = torch.arange(b + 1) * lq, torch.arange(b + 1) * lk
    packed = [t.flatten(0, 1) for t in (q, k, v)]
    return _varlen_reference(*packed, cu_q, cu_k, lq, lk, softmax_scale=softmax_scale, causal=causal).unflatten(
        0, (b, lq)
    )


def test_critic_under_transformers_flash_path_matches_sdpa(monkeypatch):
    """transformers' own flash_attention_2 path (mask handling, unpadding of the left-padded prompt) with a torch
    stand-in for the flash-attn kernels: the critic's prefill states and greedy tokens equal SDPA's."""
    fau = pytest.importorskip("transformers.modeling_flash_attention_utils")
    if not hasattr(fau, "lazy_import_flash_attention") or not hasattr(fau, "_lazy_define_process_function"):
        pytest.skip("this transformers version loads flash-attn differently")
    kernels = (_dense_reference, _varlen_reference, None, fau._pad_input, fau._unpad_input)
    flags = (fau._lazy_define_process_function(_varlen_reference), dict)
    monkeypatch.setattr(fau, "lazy_import_flash_attention", lambda *a, **k: (kernels, flags))
    model, processor = qwen_vl.build_tiny_critic(corpus=tiny_critic_corpus())
    critic = ImageCritic(model, processor, CriticConfig(attention="sdpa", max_new_tokens=8, bucket=16))
    images = [torch.randint(0, 256, (3, 56 + 28 * i, 84), dtype=torch.uint8) for i in range(2)]  # unequal prompts
    reference = critic.sample(images)
    monkeypatch.setattr(model.config.text_config, "_attn_implementation", "flash_attention_2")
    flash = critic.sample(images)
    assert (reference.prompt_lengths[0] != reference.prompt_lengths[1]).item()  # the batch is left-padded
    torch.testing.assert_close(flash.judgement.hidden, reference.judgement.hidden, atol=1e-5, rtol=1e-5)
    assert torch.equal(flash.tokens, reference.tokens)
    # the teacher-forced replay of the training entry points takes the same flash path
    torch.testing.assert_close(critic.token_logprobs(reference), reference.logprobs, atol=1e-4, rtol=0)


def test_setting_one_dit_leaves_the_process_wide_backend(monkeypatch):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

    transformer, _, _ = tiny_artist_components(0)
    monkeypatch.setattr(registry, "_active_backend", AttentionBackendName._NATIVE_MATH)
    assert attention.set_dit_attention(copy.deepcopy(transformer), "sdpa") == "sdpa"
    assert registry.get_active_backend()[0] == AttentionBackendName._NATIVE_MATH


def test_library_refusal(monkeypatch, caplog):
    """A backend our check lets through but diffusers refuses (here flash-attn, absent): an error when asked for,
    SDPA with a notice under auto."""
    notices.forget()
    transformer, _, _ = tiny_artist_components(0)
    monkeypatch.setattr(attention, "resolve", lambda requested, device, dtype: "flash")
    with pytest.raises(ValueError, match="attention 'flash' cannot run: diffusers refuses it"):
        attention.set_dit_attention(transformer, "flash")
    with caplog.at_level(logging.WARNING, logger="spc_fast.attention"):
        assert attention.set_dit_attention(transformer, "auto") == "sdpa"
    assert all(p._attention_backend == AttentionBackendName.NATIVE for p in transformer.attn_processors.values())
    assert "attention auto: PyTorch SDPA, because diffusers refuses flash" in caplog.text


def test_diffusers_processor_runs_only_sdpa(caplog):
    notices.forget()
    transformer, vae, scheduler = tiny_artist_components(0)
    for backend in ("xformers", "flash"):
        message = f"attention '{backend}' cannot run: .*real_rope=False.*set real_rope=True"
        with pytest.raises(ValueError, match=message):
            PhotoArtist(transformer, vae, scheduler, ArtistConfig(real_rope=False, attention=backend))
    with caplog.at_level(logging.WARNING, logger="spc_fast.attention"):
        artist = PhotoArtist(transformer, vae, scheduler, ArtistConfig(real_rope=False))
    assert artist.attention == "sdpa" and "real_rope=False" in caplog.text
    assert PhotoArtist(transformer, vae, scheduler, ArtistConfig(real_rope=False, attention="sdpa")).attention == "sdpa"
