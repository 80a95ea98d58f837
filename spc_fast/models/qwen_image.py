"""Qwen-Image-Edit artist components: the release's configs, tiny builds, loading from local directories.

The classes are diffusers' own (`QwenImageTransformer2DModel`, `AutoencoderKLQwenImage`,
`FlowMatchEulerDiscreteScheduler`); this module only holds their configurations and the local-directory loader.
Nothing here downloads: configs and weights are read from local files only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from spc_fast.artist.lora import LORA_ALPHA, LORA_RANK, LORA_TARGETS, lora_config  # noqa: F401 (re-exported)
from spc_fast.models.tiny_vae import make_block_mean_codec_
from spc_fast.models.weights import ModuleT, build_empty, load_weights, weight_files

# Qwen-Image-Edit-2509 transformer/config.json (the DiT of the public release). These three configs were checked
# value by value against public copies of the release's files (2026-11); 2509 has no zero_cond_t (that is 2511's).
DIT_CONFIG: dict = dict(
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=60,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=3584,
    guidance_embeds=False,
    axes_dims_rope=(16, 56, 56),
)

# Qwen-Image vae/config.json: the Wan-2.1 style causal 3-D VAE, 8x spatial compression, 16 latent channels.
VAE_CONFIG: dict = dict(
    base_dim=96,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
    latents_mean=[-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                  0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    latents_std=[2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160],
)

# Qwen-Image scheduler/scheduler_config.json: resolution-dependent (exponential) shift, stretched to 0.02.
SCHEDULER_CONFIG: dict = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=0.9,
    base_image_seq_len=256,
    max_image_seq_len=8192,
    invert_sigmas=False,
    shift_terminal=0.02,
    use_karras_sigmas=False,
    use_exponential_sigmas=False,
    use_beta_sigmas=False,
    time_shift_type="exponential",
    stochastic_sampling=False,
)

# Same classes, small sizes that keep the layout: head_dim = sum(axes_dims_rope), in_channels = 4 * z_dim,
# joint_attention_dim = the tiny critic's width (64), so the tiny pair plugs together as the real one does. The width
# (8 heads x 16 = 128) is at least the 64 latent channels of a token: at 32 the DiT cannot carry the source image
# through (measured on its training scenes: the edits' latent RMS error 1.18 at width 32, 0.42 at 128; RESULTS.md).
TINY_DIT_CONFIG: dict = dict(DIT_CONFIG, num_layers=2, attention_head_dim=16, num_attention_heads=8,
                             joint_attention_dim=64, axes_dims_rope=(4, 6, 6))
TINY_VAE_CONFIG: dict = dict(VAE_CONFIG, base_dim=8, num_res_blocks=1)

_WEIGHTS = "diffusion_pytorch_model"
_WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


def dit_config(num_layers: int | None = None) -> dict:
    """The release DiT config, optionally with fewer (or more) layers for benchmarks at full width."""
    return dict(DIT_CONFIG) if num_layers is None else dict(DIT_CONFIG, num_layers=num_layers)


def build_dit(num_layers: int | None = None, dtype: torch.dtype = torch.bfloat16,
              device: torch.device | str = "cpu") -> QwenImageTransformer2DModel:
    """A random-weight DiT at the release width (performance does not depend on weight values)."""
    with torch.device(device):
        model = QwenImageTransformer2DModel(**dit_config(num_layers))
    return model.to(dtype).eval()


def tiny_artist_components(seed: int = 0) -> tuple[QwenImageTransformer2DModel, AutoencoderKLQwenImage,
                                                    FlowMatchEulerDiscreteScheduler]:
    """Tiny transformer with random weights drawn from ``seed``, the tiny VAE as a block-mean codec
    (``make_block_mean_codec_``: the same for every seed) and the release scheduler (float32, CPU, eval mode)."""
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(**TINY_DIT_CONFIG).eval()
    # the random init still runs, so the RNG state after this call is what callers drew from before
    return transformer, *_tiny_vae_and_scheduler()


def _tiny_vae_and_scheduler() -> tuple[AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler]:
    vae = make_block_mean_codec_(AutoencoderKLQwenImage(**TINY_VAE_CONFIG).eval())
    return vae, FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def tiny_components_without_dit() -> tuple[QwenImageTransformer2DModel, AutoencoderKLQwenImage,
                                           FlowMatchEulerDiscreteScheduler]:
    """``tiny_artist_components`` with the DiT's parameters on the meta device (no memory, no random draws): for an
    exported step that samples in its place, the DiT only describes the model (its config)."""
    transformer = build_empty(lambda: QwenImageTransformer2DModel(**TINY_DIT_CONFIG)).eval()
    return transformer, *_tiny_vae_and_scheduler()


def load_components_without_dit(path: str | Path, dtype: torch.dtype = torch.bfloat16, *,
                                device: torch.device | str = "cpu") -> tuple[QwenImageTransformer2DModel,
                                                                             AutoencoderKLQwenImage,
                                                                             FlowMatchEulerDiscreteScheduler]:
    """``load_artist`` without the DiT's weights: the transformer built from ``transformer/config.json`` with its
    parameters on the meta device (a 20B DiT costs no memory), the VAE and scheduler loaded as usual."""
    base = _artist_directory(path)
    missing = _missing_files(base, transformer_weights=False)
    if missing:
        raise ValueError(f"artist directory {base} is incomplete, missing: {', '.join(missing)}")
    config = QwenImageTransformer2DModel.load_config(base / "transformer")
    transformer = build_empty(lambda: QwenImageTransformer2DModel.from_config(config)).eval()
    vae, scheduler = _vae_and_scheduler(base, dtype, device)
    return transformer, vae, scheduler


def _artist_directory(path: str | Path) -> Path:
    base = Path(path)
    if not base.is_dir():
        raise ValueError(f"artist directory {base} does not exist; pass a local Qwen-Image-Edit-2509 diffusers dir")
    return base


def _vae_and_scheduler(
    base: Path, dtype: torch.dtype, device: torch.device | str
) -> tuple[AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler]:
    vae = _load_component(AutoencoderKLQwenImage, base / "vae", weight_files(base / "vae", _WEIGHTS), dtype, device,
                          "check that vae/config.json belongs to these weights")
    return vae, FlowMatchEulerDiscreteScheduler.from_pretrained(base / "scheduler", local_files_only=True)


def _missing_files(base: Path, *, transformer_weights: bool) -> list[str]:
    missing = []
    for sub in ("transformer", "vae"):
        if not (base / sub / "config.json").is_file():
            missing.append(f"{sub}/config.json")
        needed = transformer_weights or sub == "vae"
        if needed and not any((base / sub / f"{_WEIGHTS}{ext}").is_file() for ext in _WEIGHT_SUFFIXES):
            missing.append(f"{sub}/{_WEIGHTS}.safetensors (or its .index.json shards)")
    if not (base / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    return missing


def _load_component(cls: type[ModuleT], directory: Path, files: list[Path], dtype: torch.dtype,
                    device: torch.device | str, hint: str) -> ModuleT:
    """``cls`` built from ``directory/config.json`` without memory, then filled from ``files`` (each tensor once)."""
    config = cls.load_config(directory)
    model = build_empty(lambda: cls.from_config(config))
    load_weights(model, files, dtype=dtype, device=device, hint=hint)
    model.register_to_config(_name_or_path=str(directory))
    return model.eval()


def _strip_lora_key(key: str) -> str:
    for prefix in ("base_model.model.", "transformer."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def save_lora(transformer: QwenImageTransformer2DModel, directory: str | Path, adapter_name: str = "default") -> None:
    """Write one adapter in peft's layout: adapter_config.json + adapter_model.safetensors."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    transformer.peft_config[adapter_name].save_pretrained(str(directory))
    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "adapter_model.safetensors"))


def load_lora(transformer: QwenImageTransformer2DModel, directory: str | Path, adapter_name: str = "default") -> None:
    """Add a peft adapter saved in `directory` (e.g. the release's `dit_lora/`) under `adapter_name`."""
    directory = Path(directory)
    missing = [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (directory / f).is_file()]
    if missing:
        raise ValueError(f"LoRA directory {directory} lacks {missing}; it must be a peft adapter directory")
    config = LoraConfig.from_pretrained(str(directory))
    transformer.add_adapter(config, adapter_name=adapter_name)
    state = {_strip_lora_key(k): v for k, v in load_file(str(directory / "adapter_model.safetensors")).items()}
    result = set_peft_model_state_dict(transformer, state, adapter_name=adapter_name)
    lora_missing = [k for k in result.missing_keys if "lora_" in k and f".{adapter_name}." in k]
    if result.unexpected_keys or lora_missing:
        raise ValueError(
            f"{directory} does not match the DiT: {len(lora_missing)} missing LoRA keys {lora_missing[:8]}, "
            f"{len(result.unexpected_keys)} unexpected keys {list(result.unexpected_keys)[:8]}")
    transformer.set_adapter(adapter_name)


def load_artist(path: str | Path, dtype: torch.dtype = torch.bfloat16, *, release: str | Path | None = None,
                device: torch.device | str = "cpu") -> tuple[QwenImageTransformer2DModel, AutoencoderKLQwenImage,
                                                               FlowMatchEulerDiscreteScheduler]:
    """Load transformer, VAE and scheduler from a local diffusers Qwen-Image-Edit-2509 directory onto ``device``.

    `release` (default: `path` itself) may hold the release layout: its `dit.safetensors` is read instead of the
    diffusers transformer weights (which may then be absent), `dit_lora/` is added as the peft adapter "default".
    Each model is built without memory and each tensor is read once, so peak host memory is about one copy of the
    weights. Never downloads.
    """
    base = _artist_directory(path)
    extra = Path(release) if release is not None else base
    if release is not None and not extra.is_dir():
        raise ValueError(f"release directory {extra} does not exist")
    dit = extra / "dit.safetensors"
    missing = _missing_files(base, transformer_weights=not dit.is_file())
    if missing:
        raise ValueError(f"artist directory {base} is incomplete, missing: {', '.join(missing)} "
                         f"(the transformer's weights may instead be dit.safetensors in the release directory)")
    dit_files = [dit] if dit.is_file() else weight_files(base / "transformer", _WEIGHTS)
    transformer = _load_component(QwenImageTransformer2DModel, base / "transformer", dit_files, dtype, device,
                                  "check that it is the Qwen-Image-Edit DiT and that transformer/config.json is the "
                                  "release's")
    vae, scheduler = _vae_and_scheduler(base, dtype, device)
    if (extra / "dit_lora").is_dir():
        load_lora(transformer, extra / "dit_lora")
        transformer.to(dtype)
    return transformer, vae, scheduler


def save_artist(directory: str | Path, transformer: QwenImageTransformer2DModel, vae: AutoencoderKLQwenImage,
                scheduler: FlowMatchEulerDiscreteScheduler) -> None:
    """Write the diffusers layout (transformer/, vae/, scheduler/) that `load_artist` reads; base weights only."""
    if getattr(transformer, "peft_config", None):
        raise ValueError("the transformer carries LoRA adapters; save them with save_lora and the base without them")
    directory = Path(directory)
    transformer.save_pretrained(directory / "transformer")
    vae.save_pretrained(directory / "vae")
    scheduler.save_pretrained(directory / "scheduler")
    (directory / "model_index.json").write_text(json.dumps({"_class_name": "QwenImageEditPlusPipeline"}))
