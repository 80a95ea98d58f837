"""The critic's architecture: Qwen2.5-VL-7B's config written in code, a tiny random-weight instance of the same
classes built offline (tokenizer and processor included), and loading the release layout from a local directory.

Release layout of a critic directory: ``vlm/`` (a transformers save of ``Qwen2_5_VLForConditionalGeneration`` with
its processor files) and optionally ``vlm_lora/`` (a peft adapter, merged on load).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
)

from spc_fast.models.weights import build_empty, load_weights, weight_files

# Qwen2.5's special tokens in the release's id order (their ids follow the 151643 regular tokens).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# ChatML with images inline as <|vision_start|><|image_pad|><|vision_end|>; the processor expands <|image_pad|>
# to one token per merged 28x28 patch. A missing system message gets the default one, as Qwen's template does.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system{{ '\\n' }}You are a helpful assistant.<|im_end|>{{ '\\n' }}"
    "{% endif %}"
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}{{ '\\n' }}"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)

VLM_DIR = "vlm"
VLM_LORA_DIR = "vlm_lora"
# the system line and instruction a critic trained by spc-fast learnt with, in the --critic-prompt JSON format
PROMPT_FILE = "critic_prompt.json"
_MODEL_FILES = ("config.json",)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json")
_LORA_FILES = ("adapter_config.json", "adapter_model.safetensors")
_LEGACY_PREFIXES = (("visual.", "model.visual."), ("model.", "model.language_model."))


def qwen2_5_vl_7b_config(num_layers: int | None = None, vision_depth: int | None = None) -> Qwen2_5_VLConfig:
    """The public Qwen2.5-VL-7B-Instruct config (checked against the release's config.json; written out because
    transformers' defaults are not the 7B values); ``num_layers``/``vision_depth`` build a full-width model of a
    stated depth (benchmarks: cost scales per layer and does not depend on weight values)."""
    layers = 28 if num_layers is None else num_layers
    depth = 32 if vision_depth is None else vision_depth
    text = {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": layers,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "sliding_window": 32768,
        "max_window_layers": layers,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "pad_token_id": 151643,
    }
    vision = {
        "depth": depth,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "hidden_act": "silu",
        "in_channels": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [i for i in (7, 15, 23, 31) if i < depth],
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def tiny_tokenizer(corpus: Sequence[str], vocab_size: int = 1024) -> transformers.PreTrainedTokenizerFast:
    """A real byte-level BPE (``tokenizers``) trained offline on ``corpus`` (the texts the critic will read and write),
    with Qwen's special tokens appended after the regular vocabulary and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS),
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_image_processor() -> Qwen2VLImageProcessor:
    """Qwen2-VL's image processor, capped at 112x112 pixels (at most 16 merged image tokens)."""
    return Qwen2VLImageProcessor(size={"shortest_edge": 28 * 28, "longest_edge": 112 * 112})


def tiny_critic_config(vocab_size: int, token_ids: dict[str, int]) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL at toy width: 2 text layers of width 64, a 2-block vision tower of width 32 (one windowed, one
    full attention); ``token_ids`` maps the special tokens to the tokenizer's ids."""
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "hidden_act": "silu",
        "in_channels": 3,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_processor(corpus: Sequence[str]) -> Qwen2_5_VLProcessor:
    """The real Qwen2.5-VL processor classes around the tiny tokenizer (trained on ``corpus``) and the capped image
    processor."""
    from transformers import Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(
        image_processor=tiny_image_processor(),
        tokenizer=tiny_tokenizer(corpus),
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_critic(
    seed: int = 0, attn_implementation: str = "sdpa", *, corpus: Sequence[str]
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """A tiny random-weight ``Qwen2_5_VLForConditionalGeneration`` (float32, eval mode) and its processor, whose
    tokenizer is trained on ``corpus`` (``spc_fast.models.factory.tiny_critic_corpus()``: the critic's prompts and
    answers)."""
    processor = tiny_processor(corpus)
    tokenizer = processor.tokenizer
    vocab = -(-len(tokenizer) // 64) * 64
    config = tiny_critic_config(vocab, {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS})
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
        _spread_weights(model)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model.eval(), processor


def _spread_weights(model: torch.nn.Module) -> None:
    """Re-draw matrices with std 1/sqrt(fan_in) (embeddings std 1): at the default std 0.02 a toy model answers
    the same tokens for every image, which would hide batching and padding mistakes from the tests."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = 1 if "embed_tokens" in name else p[0].numel()
                p.normal_(0.0, fan_in**-0.5)


def save_critic(model: Qwen2_5_VLForConditionalGeneration, processor: Qwen2_5_VLProcessor, path: str | Path) -> Path:
    """Write ``model`` and ``processor`` in the release layout (``path/vlm/``); a peft model saves its adapter
    to ``path/vlm_lora/`` and its base model to ``vlm/``."""
    root = Path(path)
    if hasattr(model, "peft_config"):
        model.save_pretrained(root / VLM_LORA_DIR)
        base = model.get_base_model()
        weights = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}
        base.save_pretrained(root / VLM_DIR, state_dict=weights)
    else:
        model.save_pretrained(root / VLM_DIR)
    processor.save_pretrained(root / VLM_DIR)
    return root


def write_prompt(path: str | Path, system_prompt: str, instruction: str) -> None:
    """Record in a critic directory the instruction texts it was trained with (``PROMPT_FILE``)."""
    text = json.dumps({"system": system_prompt, "instruction": instruction}, ensure_ascii=False, indent=1)
    (Path(os.fspath(path)) / PROMPT_FILE).write_text(text + "\n", encoding="utf-8")


def missing_files(path: str | Path) -> list[str]:
    """The files a critic directory lacks, relative to ``path`` (empty when it is complete)."""
    root = Path(path)
    vlm = root / VLM_DIR
    missing = [f"{VLM_DIR}/{name}" for name in (*_MODEL_FILES, *_PROCESSOR_FILES) if not (vlm / name).is_file()]
    if not any((vlm / name).is_file() for name in _WEIGHT_FILES):
        missing.append(f"{VLM_DIR}/{' or '.join(_WEIGHT_FILES)}")
    lora = root / VLM_LORA_DIR
    if lora.exists():
        missing += [f"{VLM_LORA_DIR}/{name}" for name in _LORA_FILES if not (lora / name).is_file()]
    return missing


def checkpoint_key(key: str) -> str:
    """The model's name for a checkpoint key: files written by transformers before 4.52 (the release's, and the
    ones ``save_pretrained`` still writes) name the text model ``model.*`` and the vision tower ``visual.*``."""
    if key.startswith(("model.language_model.", "model.visual.")):
        return key
    for old, new in _LEGACY_PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def load_critic(
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    attn_implementation: str = "sdpa",
    device: str | torch.device | None = None,
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """Load a critic in the release layout from a local directory only (never a hub download); a ``vlm_lora/``
    adapter is merged into the weights. The model is built without memory and each tensor of ``vlm/`` is read once
    into it on ``device`` (default: the CPU). Raises FileNotFoundError listing every missing file and ValueError
    naming the keys that do not match the config."""
    root = Path(os.fspath(path)).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"critic directory {root} does not exist; pass a local directory holding {VLM_DIR}/ "
            f"(and optionally {VLM_LORA_DIR}/)"
        )
    missing = missing_files(root)
    if missing:
        raise FileNotFoundError(
            f"critic directory {root} is incomplete; missing: {', '.join(missing)}. Expected the release layout: "
            f"{VLM_DIR}/ with a transformers save of Qwen2_5_VLForConditionalGeneration and its processor, "
            f"optionally {VLM_LORA_DIR}/ with a peft adapter"
        )
    vlm = root / VLM_DIR
    config = Qwen2_5_VLConfig.from_pretrained(vlm, local_files_only=True)
    config._attn_implementation = attn_implementation
    for part in (config, config.text_config, config.vision_config):
        part.dtype = dtype
    model = build_empty(lambda: Qwen2_5_VLForConditionalGeneration(config))
    load_weights(model, weight_files(vlm, "model"), dtype=dtype, device=device or "cpu", rename=checkpoint_key,
                 hint=f"check that {vlm} holds the weights of its config.json")
    if (vlm / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(vlm, local_files_only=True)
    if (root / VLM_LORA_DIR).is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, root / VLM_LORA_DIR, local_files_only=True).merge_and_unload()
    processor = Qwen2_5_VLProcessor.from_pretrained(vlm, local_files_only=True)
    return model.eval(), processor
