"""Loading at real scale: models built on the meta device, each tensor of the files read once. On the tiny models
saved in the release layout, every loaded parameter and buffer equals the file's tensor exactly, buffers computed at
build time (rotary frequencies) equal a normally built model's, sharded checkpoints load, mismatches name their
keys and files; and the peak RSS of loading a saved DiT stays within 1.2x its bytes on disk."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

pytest.importorskip("diffusers")

from spc_fast.bench import model_loading  # noqa: E402
from spc_fast.models import qwen_image, qwen_vl, weights  # noqa: E402
from spc_fast.models.factory import tiny_critic_corpus  # noqa: E402
from spc_fast.models.weights import load_weights, weight_files  # noqa: E402

DTYPES = (torch.float32, torch.bfloat16)


@pytest.fixture(scope="module")
def critic_parts():
    return qwen_vl.build_tiny_critic(seed=0, corpus=tiny_critic_corpus())


@pytest.fixture(scope="module")
def artist_parts():
    return qwen_image.tiny_artist_components(0)


def file_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            stored = handle.keys()
            tensors.update({key: handle.get_tensor(key) for key in stored})
    return tensors


def assert_equals_files(model: torch.nn.Module, files: list[Path], dtype: torch.dtype, rename=lambda key: key):
    """Every state-dict entry is the file's tensor in ``dtype``, bit for bit, and nothing is left on meta."""
    state = model.state_dict()
    stored = {rename(key): tensor for key, tensor in file_tensors(files).items()}
    assert set(state) == set(stored)
    for name, tensor in stored.items():
        assert state[name].dtype == dtype and torch.equal(state[name], tensor.to(dtype)), name
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def assert_same_buffers(model: torch.nn.Module, reference: torch.nn.Module):
    """Buffers outside the state dict (not in the files) are computed as a normal build computes them."""
    expected = dict(reference.named_buffers())
    assert expected.keys() == dict(model.named_buffers()).keys()
    for name, buffer in model.named_buffers():
        assert buffer.dtype == expected[name].dtype and torch.equal(buffer, expected[name]), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_critic_is_the_files_tensors(critic_parts, tmp_path, dtype):
    model, processor = critic_parts
    qwen_vl.save_critic(model, processor, tmp_path)
    loaded, _ = qwen_vl.load_critic(tmp_path, dtype=dtype)
    assert_equals_files(loaded, weight_files(tmp_path / "vlm", "model"), dtype, qwen_vl.checkpoint_key)
    assert [n for n, _ in loaded.named_buffers()] == [n for n, _ in model.named_buffers()]
    assert any("inv_freq" in n for n, _ in loaded.named_buffers())
    assert_same_buffers(loaded, model)
    assert loaded.config.dtype == loaded.config.text_config.dtype == dtype and not loaded.training
    assert loaded.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_critic_keys_in_either_layout():
    legacy = "model.layers.0.mlp.up_proj.weight"
    assert qwen_vl.checkpoint_key(legacy) == "model.language_model.layers.0.mlp.up_proj.weight"
    assert qwen_vl.checkpoint_key("model.embed_tokens.weight") == "model.language_model.embed_tokens.weight"
    assert qwen_vl.checkpoint_key("visual.blocks.1.attn.qkv.bias") == "model.visual.blocks.1.attn.qkv.bias"
    for current in ("model.language_model.norm.weight", "model.visual.merger.ln_q.weight", "lm_head.weight"):
        assert qwen_vl.checkpoint_key(current) == current


def test_critic_shards_and_current_key_names(critic_parts, tmp_path):
    model, processor = critic_parts
    qwen_vl.save_critic(model, processor, tmp_path)
    vlm = tmp_path / "vlm"
    state = load_file(str(vlm / "model.safetensors"))
    (vlm / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():  # the second shard in the current names, the first in the legacy ones
        rename = qwen_vl.checkpoint_key if shard.startswith("model-00002") else (lambda key: key)
        save_file({rename(k): state[k] for k in keys}, str(vlm / shard))
    weight_map = {qwen_vl.checkpoint_key(k) if k in shards["model-00002-of-00002.safetensors"] else k: shard
                  for shard, keys in shards.items() for k in keys}
    (vlm / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded, _ = qwen_vl.load_critic(tmp_path, dtype=torch.float32)
    assert_equals_files(loaded, weight_files(vlm, "model"), torch.float32, qwen_vl.checkpoint_key)
    (vlm / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model.safetensors.index.json lists shards that are missing.*00002"):
        qwen_vl.load_critic(tmp_path)


def test_critic_mismatch_names_keys_and_file(critic_parts, tmp_path):
    model, processor = critic_parts
    qwen_vl.save_critic(model, processor, tmp_path)
    file = tmp_path / "vlm" / "model.safetensors"
    state = load_file(str(file))
    state["model.stray.weight"] = state.pop("model.norm.weight")
    full = state["lm_head.weight"]
    state["lm_head.weight"] = full[:-1].contiguous()
    save_file(state, str(file))
    with pytest.raises(ValueError) as info:
        qwen_vl.load_critic(tmp_path, dtype=torch.float32)
    message = str(info.value)
    assert str(file) in message
    assert "1 missing keys ['model.language_model.norm.weight']" in message
    assert "1 unexpected keys ['model.stray.weight']" in message
    short, expected = tuple(full[:-1].shape), tuple(full.shape)
    assert f"1 shape mismatches ['lm_head.weight: {short} in the file, {expected} in the model']" in message


@pytest.mark.parametrize("dtype", DTYPES)
def test_artist_is_the_files_tensors(artist_parts, tmp_path, dtype):
    transformer, vae, scheduler = artist_parts
    qwen_image.save_artist(tmp_path, transformer, vae, scheduler)
    loaded, loaded_vae, _ = qwen_image.load_artist(tmp_path, dtype)
    assert_equals_files(loaded, weight_files(tmp_path / "transformer", "diffusion_pytorch_model"), dtype)
    assert_equals_files(loaded_vae, weight_files(tmp_path / "vae", "diffusion_pytorch_model"), dtype)
    assert_same_buffers(loaded, transformer)
    assert_same_buffers(loaded_vae, vae)
    for name in ("pos_freqs", "neg_freqs"):  # RoPE tables: plain tensors computed while the model is built
        assert torch.equal(getattr(loaded.pos_embed, name), getattr(transformer.pos_embed, name))
    reference = qwen_image.QwenImageTransformer2DModel.from_pretrained(tmp_path / "transformer", local_files_only=True)
    assert dict(loaded.config) == dict(reference.config, _name_or_path=str(reference.config._name_or_path))
    assert not loaded.training and not loaded_vae.training


def test_release_dit_replaces_the_diffusers_weights(artist_parts, tmp_path):
    transformer, vae, scheduler = artist_parts
    qwen_image.save_artist(tmp_path, transformer, vae, scheduler)
    tuned = {k: v + 0.5 for k, v in transformer.state_dict().items()}
    save_file(tuned, str(tmp_path / "dit.safetensors"))
    (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors").unlink()  # never read: may be absent
    loaded, _, _ = qwen_image.load_artist(tmp_path, torch.float32)
    assert_equals_files(loaded, [tmp_path / "dit.safetensors"], torch.float32)
    (tmp_path / "dit.safetensors").unlink()
    with pytest.raises(ValueError, match=r"transformer/diffusion_pytorch_model.safetensors.*dit.safetensors"):
        qwen_image.load_artist(tmp_path, torch.float32)


def test_artist_shards(artist_parts, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "CHUNK_BYTES", 1)  # every tensor in a chunk of its own: the file reopened each time
    transformer, vae, scheduler = artist_parts
    qwen_image.save_artist(tmp_path, transformer, vae, scheduler)
    copy.deepcopy(transformer).save_pretrained(tmp_path / "transformer", max_shard_size="100KB")
    (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors").unlink(missing_ok=True)
    files = weight_files(tmp_path / "transformer", "diffusion_pytorch_model")
    assert len(files) > 1
    loaded, _, _ = qwen_image.load_artist(tmp_path, torch.float32)
    assert_equals_files(loaded, files, torch.float32)


def test_duplicate_keys_across_files(artist_parts, tmp_path):
    transformer, _, _ = artist_parts
    state = transformer.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "a.safetensors"))
    save_file({"proj_out.weight": state["proj_out.weight"]}, str(tmp_path / "b.safetensors"))
    empty = copy.deepcopy(transformer)
    with pytest.raises(ValueError, match=r"proj_out.weight is stored twice: in .*a.safetensors and in .*b.safetensors"):
        load_weights(empty, [tmp_path / "a.safetensors", tmp_path / "b.safetensors"], dtype=torch.float32)


@pytest.mark.gpu
def test_load_onto_cuda(critic_parts, artist_parts, tmp_path):
    model, processor = critic_parts
    qwen_vl.save_critic(model, processor, tmp_path / "critic")
    critic, _ = qwen_vl.load_critic(tmp_path / "critic", dtype=torch.bfloat16, device="cuda")
    assert all(t.is_cuda for t in (*critic.parameters(), *critic.buffers()))
    assert_equals_files(critic.cpu(), weight_files(tmp_path / "critic" / "vlm", "model"), torch.bfloat16,
                        qwen_vl.checkpoint_key)
    qwen_image.save_artist(tmp_path / "artist", *artist_parts)
    transformer, vae, _ = qwen_image.load_artist(tmp_path / "artist", torch.bfloat16, device="cuda")
    assert all(t.is_cuda for m in (transformer, vae) for t in (*m.parameters(), *m.buffers()))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc")
def test_loading_peak_rss_within_goal():
    (row,) = model_loading.run(torch.device("cpu"), quick=True, providers=("spc-fast",))
    ratio = row.peak_memory_mib * 2**20 / row.bytes_moved
    assert row.bytes_moved > 100e6 and ratio <= model_loading.GOAL, row.note
