"""One stage III step (``spc-fast train joint``) split into its parts: critic rollouts, artist rollouts (old adapter),
the critic's re-scores of the edits, rewards, the critic's GRPO update and the artist's DiffusionNFT update (each with
its optimizer step), through the step functions the trainer runs (``spc_fast.training.joint_step``), on one device.

CPU: the tiny models at 64² as the ``tiny`` preset runs them (B = 2 images, G = 2 answers, K = 4 edits, 2 sampler
steps, 32 answer tokens). CUDA: the release widths with ``CUDA_LAYERS`` layers each — Qwen2.5-VL-7B (hidden 3584,
one vision block) and the Qwen-Image DiT (24 heads x 128) with the release VAE, random weights (cost does not depend
on their values), float32 master weights under bf16 autocast, rollouts at 512², B = 1, G = 4, K = 4 (16 edits), 6
sampler steps, ``CUDA_TOKENS`` answer tokens; the rollouts eager and compiled (CUDA graphs for the critic's decode
step and the DiT). The tokenizer is the tiny one (the model's 152k vocabulary is kept: random ids decode to
replacement text); the critic's image tokens come from the release's image processor.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler
from peft import LoraConfig, get_peft_model

from spc_fast import retouch
from spc_fast.bench.harness import Row
from spc_fast.config import ArtistConfig, CriticConfig
from spc_fast.critic.model import ImageCritic
from spc_fast.images import resize_bicubic
from spc_fast.models import qwen_image, qwen_vl
from spc_fast.models.factory import artist_from, tiny_critic_corpus
from spc_fast.training.joint_config import RLConfig, joint_preset
from spc_fast.training.joint_models import ArtistPolicy, CriticPolicy, decay, update_old, with_adapters
from spc_fast.training.joint_step import artist_rollouts, artist_update, critic_rollouts, critic_update, rescore
from spc_fast.training.joint_summary import StepTimer, rollout_rewards, summarise
from spc_fast.training.stages.artist_sft import to_unit
from spc_fast.training.stages.critic_sft import LORA_TARGETS

BASELINES = ("eager rollouts",)
ERROR_KIND = "none (timings of one step's parts; the step's arithmetic is tested in tests/test_training_joint.py)"
CUDA_LAYERS = 4
CUDA_TOKENS = 256
PHASES = ("critic_rollout", "artist_rollout", "rescore", "reward", "critic_update", "artist_update", "step")


def _critic(device: torch.device, release: bool) -> ImageCritic:
    processor = qwen_vl.tiny_processor(tiny_critic_corpus())
    tokenizer = processor.tokenizer
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in qwen_vl.SPECIAL_TOKENS}
    if release:
        processor.image_processor = qwen_vl.Qwen2VLImageProcessor()
        config = qwen_vl.qwen2_5_vl_7b_config(num_layers=CUDA_LAYERS, vision_depth=1)
        tiny = qwen_vl.tiny_critic_config(-(-len(tokenizer) // 64) * 64, ids)  # the tiny tokenizer's special-token ids
        for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            setattr(config, name, getattr(tiny, name))
        for name in ("bos_token_id", "pad_token_id"):
            setattr(config.text_config, name, ids["<|endoftext|>"])
        config.text_config.eos_token_id = ids["<|im_end|>"]
        config._attn_implementation = "sdpa"
        with torch.device(device):
            model = qwen_vl.Qwen2_5_VLForConditionalGeneration(config)
        model.generation_config.eos_token_id = config.text_config.eos_token_id
        model.generation_config.pad_token_id = config.text_config.pad_token_id
        tokens = CUDA_TOKENS
    else:
        model, processor = qwen_vl.build_tiny_critic(0, corpus=tiny_critic_corpus())
        model = model.to(device)
        tokens = 32
    settings = CriticConfig(max_new_tokens=tokens, compile=False, device=str(device), dtype="float32")
    return ImageCritic(model, processor, settings)


def _models(device: torch.device, release: bool) -> dict:
    """The critic and artist policies (LoRA r=32, or the tiny preset's 4), eager and compiled where CUDA allows."""
    critic = _critic(device, release)
    rank, alpha = (32, 64) if release else (4, 8)
    vlm = get_peft_model(critic.model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS))
    if release:
        with torch.device(device):
            transformer = qwen_image.build_dit(CUDA_LAYERS, torch.float32, device)
            vae = AutoencoderKLQwenImage(**qwen_image.VAE_CONFIG).eval()
        scheduler = FlowMatchEulerDiscreteScheduler(**qwen_image.SCHEDULER_CONFIG)
        pixels = 512 * 512
    else:
        transformer, vae, scheduler = qwen_image.tiny_artist_components(0)
        transformer, vae, pixels = transformer.to(device), vae.to(device), 64 * 64
    settings = ArtistConfig(steps=6, pixels=pixels, device=str(device), dtype="float32")
    artist = with_adapters(transformer, vae, scheduler, settings, rank=rank, alpha=alpha)
    out = {"eager": (CriticPolicy(vlm, critic).train(), ArtistPolicy(artist).train())}
    if release and device.type == "cuda":
        fast_critic = ImageCritic(
            critic.model,
            critic.processor,
            dataclasses.replace(critic.config, compile=True),
            compile_mode="reduce-overhead",
        )
        fast_artist = dataclasses.replace(settings, compile=True)
        compiled = artist_from(artist.transformer, vae, scheduler, fast_artist)
        out["compiled"] = (CriticPolicy(vlm, fast_critic).train(), ArtistPolicy(compiled).train())
    return out


def _batch(photos: list, size: int, images: int, device: torch.device) -> dict:
    pictures = [resize_bicubic(p[: min(p.shape[:2]), : min(p.shape[:2])], (size, size)) for p in photos[:images]]
    x = torch.stack([to_unit(p) for p in pictures]).to(device)
    return {
        "id": [f"bench-{i}" for i in range(images)],
        "image": pictures,
        "x": x,
        "gt": retouch.apply(x, exposure=0.35),
        "degradations": [()] * images,
    }


def _step(policies: tuple, optimizers: dict, batch: dict, rl: RLConfig, step: int, device: torch.device) -> dict:
    critic_model, artist_model = policies
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    timer = StepTimer(lambda: (sync(), time.perf_counter())[1])
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with autocast:
        rollout = critic_rollouts(critic_model.critic, critic_model, batch, rl, 0, step)
        timer.mark("critic_rollout")
        edits = artist_rollouts(artist_model, batch, rollout, rl, 0, step)
        timer.mark("artist_rollout")
        scores = rescore(critic_model, edits.images, rl.rollout_batch)
        timer.mark("rescore")
        rewards = rollout_rewards(batch, rollout, edits, scores, rl, None)
        timer.mark("reward")
        summary = summarise(batch, rewards, rl)
        critic_update(critic_model, rollout, summary.critic_adv, summary.critic_kept, summary.critic_scale, rl)
        optimizers["critic"].step()
        optimizers["critic"].zero_grad(set_to_none=True)
        timer.mark("critic_update")
        artist_update(
            artist_model,
            artist_model.artist,
            edits,
            summary.artist_adv,
            summary.artist_kept,
            summary.artist_scale,
            rl,
            0,
            step,
        )
        optimizers["artist"].step()
        optimizers["artist"].zero_grad(set_to_none=True)
        update_old(artist_model.transformer, decay(step - 1, rl.decay_rate, rl.decay_max))
        timer.mark("artist_update")
    return {**timer.seconds, "step": timer.total}


def run(device: torch.device, quick: bool = False) -> list[Row]:
    import skimage.data

    release = device.type == "cuda" and not quick
    rl = (
        RLConfig(answers=4, edits=4, rollout_steps=6, drop_std=0.0, lambda_perc=0.0, rollout_batch=16, update_batch=4)
        if release
        else dataclasses.replace(joint_preset("tiny").rl, drop_std=0.0)
    )
    photos = [getattr(skimage.data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    batch = _batch(photos, 512 if release else 64, 1 if release else 2, device)
    what = (
        f"release width, {CUDA_LAYERS}+{CUDA_LAYERS} layers, 512², B=1 G=4 K=4, 6 steps, {CUDA_TOKENS} tok"
        if release
        else "tiny, 64², B=2 G=2 K=4, 2 steps, 32 tok"
    )
    rows = []
    for name, policies in _models(device, release).items():
        parameters = {
            k: [p for p in m.parameters() if p.requires_grad]
            for k, m in zip(("critic", "artist"), policies, strict=True)
        }
        optimizers = {
            "critic": torch.optim.AdamW(parameters["critic"], lr=rl.critic_lr),
            "artist": torch.optim.AdamW(parameters["artist"], lr=rl.artist_lr),
        }
        times = [_step(policies, optimizers, batch, rl, step, device) for step in range(1, (2 if quick else 4) + 1)]
        measured = times[1:]  # the first step compiles and warms up
        for phase in PHASES:
            values = sorted(1e3 * t.get(phase, 0.0) for t in measured)
            p50 = statistics.median(values)
            share = p50 / statistics.median(1e3 * t["step"] for t in measured)
            rows.append(
                Row(
                    bench="stage3_step",
                    case=f"{what} {phase}",
                    provider=f"{name} rollouts",
                    p20_ms=values[0],
                    p50_ms=p50,
                    p80_ms=values[-1],
                    note=f"{share:.1%} of the step",
                )
            )
    return rows


if __name__ == "__main__":
    from spc_fast.bench import harness

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = run(device)
    harness.fill_ratios(result, BASELINES)
    print(harness.format_table(result))
