"""The neural image critic: Qwen2.5-VL asked the analysis question about each photo, answering in the tag format of
SPEC.md §4, with its reasoning latent H_c (SPEC.md eq. 1) handed to the artist in the ``Judgement``.

``ImageCritic(model, processor, config)`` wraps a ``Qwen2_5_VLForConditionalGeneration`` (or a peft model around
one) and its processor; ``spc_fast.models`` builds ready ones (``build_critic``, ``load_critic``, ``tiny_critic``).
Inference: ``critique`` and ``score``; for the instruction (manual) mode, ``instruction_states`` (H_c of one forward
pass, no generation). Training (GRPO, SPEC.md §7): ``sample`` draws answers with their log-probabilities,
``completion_states`` and ``token_logprobs`` score them again under the current weights, and ``reference()`` runs
the model with its LoRA adapters disabled (the reference policy, no second copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
from peft import PeftModel

from spc_fast import images as image_checks
from spc_fast.adapters import adapters_disabled
from spc_fast.attention import set_vlm_attention
from spc_fast.config import CriticConfig
from spc_fast.critic.format import parse
from spc_fast.critic.generate import StaticGenerator, bucket_left_pad
from spc_fast.critic.policy import CriticRollout, completion_logprobs, completion_states
from spc_fast.roles import Judgement

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
DEFAULT_CONFIG = CriticConfig()

ImageInput = torch.Tensor | Sequence


def _as_arrays(images: ImageInput) -> list[np.ndarray]:
    """A (B, 3, H, W) tensor (uint8 or float in [0, 1]) or a list of H x W x 3 arrays / PIL images / (3, H, W)
    tensors -> a list of H x W x 3 uint8 arrays."""
    if isinstance(images, torch.Tensor):
        batch, _ = image_checks.check_batch(images)
        batch = image_checks.from_unit_float(image_checks.to_unit_float(batch), torch.uint8)
        return list(batch.permute(0, 2, 3, 1).cpu().numpy())
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError("pass a list of images (a single H x W x 3 array is ambiguous); wrap it as [image]")
    out = []
    for image in images:
        if isinstance(image, torch.Tensor):
            out.extend(_as_arrays(image[None]))
        elif isinstance(image, np.ndarray):
            out.append(np.ascontiguousarray((image_checks.numpy_to_unit(image) * 255.0).round().astype(np.uint8)))
        else:
            out.append(np.asarray(image.convert("RGB")))
    if not out:
        raise ValueError("no images given; pass at least one")
    return out


def prompt_states(model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-layer (final-norm) states of the real tokens of left-padded processor ``inputs`` under ``model`` (a
    ``Qwen2_5_VLForConditionalGeneration``), one forward with the positions the generator's prefill uses: hidden
    [B, S, D] right-padded with zeros and mask [B, S] long, S the longest row's real tokens."""
    ids, attention = inputs["input_ids"], inputs["attention_mask"]
    inner = model.model
    positions, _ = inner.get_rope_index(
        ids,
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs.get("image_grid_thw"),
        attention_mask=attention,
    )  # [3, B, L]
    states = inner(
        input_ids=ids,
        attention_mask=attention,
        position_ids=positions,
        pixel_values=inputs.get("pixel_values"),
        image_grid_thw=inputs.get("image_grid_thw"),
        mm_token_type_ids=inputs["mm_token_type_ids"],
        use_cache=False,
    ).last_hidden_state  # [B, L, D], each row's real tokens at its end
    lengths = attention.sum(1)  # [B]
    offsets = torch.arange(int(lengths.max()), device=ids.device)  # [S]
    mask = offsets[None, :] < lengths[:, None]  # [B, S]
    index = (ids.shape[1] - lengths[:, None] + offsets[None, :]).clamp(max=ids.shape[1] - 1)  # [B, S]
    hidden = states.gather(1, index[..., None].expand(-1, -1, states.shape[2])).masked_fill(~mask[..., None], 0.0)
    return hidden, mask.to(torch.long)


class ImageCritic:
    """Qwen2.5-VL critic configured by a ``CriticConfig`` (decoding, prompts, attention, compile); the config's
    weights, device and dtype are the model factory's business. ``self.attention`` is the backend that runs for the
    vision tower and the prefill; decode steps always run SDPA over the static cache. ``compile_backend`` and
    ``compile_mode`` go to ``torch.compile`` of the decode step when ``config.compile`` is set."""

    def __init__(
        self,
        model,
        processor,
        config: CriticConfig = DEFAULT_CONFIG,
        *,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
    ) -> None:
        self.config = config
        # A peft wrapper's adapters live in the base model's layers: calling the base model runs them.
        self.model = model.get_base_model() if isinstance(model, PeftModel) else model
        self.processor = processor
        self.attention = set_vlm_attention(self.model, config.attention)
        tokenizer = processor.tokenizer
        unk = tokenizer.unk_token_id
        stop_ids = [i for i in tokenizer.convert_tokens_to_ids(list(STOP_TOKENS)) if i is not None and i != unk]
        eos = self.model.generation_config.eos_token_id
        stop_ids += [eos] if isinstance(eos, int) else list(eos or [])
        self.stop_ids = sorted(set(stop_ids))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.generator = StaticGenerator(
            self.model,
            stop_ids=self.stop_ids,
            pad_id=self.pad_id,
            compile=config.compile,
            backend=compile_backend,
            mode=compile_mode,
        )

    @property
    def bucket(self) -> int:
        return self.config.bucket

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """[V, D] the LM head's weight: with ``completion_states``, the inputs of ``spc_fast.rl_losses.grpo_loss``."""
        return self.model.lm_head.weight

    def chat_text(self, instruction: str | None = None) -> str:
        """The prompt as the chat template renders it: the system message, then a user turn of one image placeholder
        and ``instruction`` (default: the config's analysis instruction), then the assistant generation prompt."""
        text = self.config.instruction if instruction is None else instruction
        messages = [
            {"role": "system", "content": self.config.system_prompt},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
        ]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def build_inputs(
        self, images: ImageInput, bucket: int | None = None, instructions: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Processor outputs for a batch (left-padded, then padded on the left to a multiple of ``bucket``). Each
        image is first resized to the release's edit image (``spc_fast.images.edit_image``: the photo at the artist's
        output size, auto-resized again, by PIL's bicubic resize), the image the artist encodes (SPEC.md §6).
        ``instructions``: one user text per image instead of the analysis instruction (the instruction mode)."""
        arrays = [image_checks.edit_image(a) for a in _as_arrays(images)]
        if instructions is None:
            texts = [self.chat_text()] * len(arrays)
        elif len(instructions) == len(arrays):
            texts = [self.chat_text(instruction) for instruction in instructions]
        else:
            raise ValueError(f"got {len(instructions)} instructions for {len(arrays)} images; pass one per image")
        self.processor.tokenizer.padding_side = "left"
        inputs = self.processor(text=texts, images=arrays, return_tensors="pt", padding=True)
        inputs = bucket_left_pad(dict(inputs), bucket or self.bucket, self.pad_id)
        device = self.model.device
        dtype = self.model.dtype
        return {k: v.to(device, dtype=dtype) if k == "pixel_values" else v.to(device) for k, v in inputs.items()}

    def critique(self, images: ImageInput) -> Judgement:
        """One answer per image, decoded as the config says (greedy by default), with H_c and its mask."""
        return self.sample(images).judgement

    @torch.no_grad()
    def instruction_states(
        self, images: ImageInput, instruction: str | Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """H_c of the instruction (manual) mode (SPEC.md §6): the last-layer (final-norm) states of one forward pass
        over the chat holding each image and ``instruction`` (one text for all, or one per image), laid out as in
        ``critique`` with the instruction in place of the analysis question; no generation. Returns hidden
        [B, S, D] and mask [B, S] (1 on real positions), right-padded to the longest chat as ``critique``'s H_c."""
        arrays = _as_arrays(images)
        instructions = [instruction] * len(arrays) if isinstance(instruction, str) else list(instruction)
        inputs = self.build_inputs(arrays, bucket=1, instructions=instructions)
        return prompt_states(self.model, inputs)

    def score(self, images: ImageInput) -> torch.Tensor:
        """(B,) float32 scores in [0, 100] read from each answer; NaN where no score could be parsed."""
        return self.critique(images).scores

    def sample(
        self,
        images: ImageInput,
        *,
        num_samples: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        max_new_tokens: int | None = None,
    ) -> CriticRollout:
        """``num_samples`` answers per image (consecutive: N = B·num_samples), with their tokens, log-probabilities
        under the sampling distribution and the prompt inputs (``CriticRollout``). ``temperature`` 0 is greedy;
        None takes the config's ``temperature``, ``top_p`` and ``max_new_tokens``; ``generator`` makes draws
        repeatable."""
        config = self.config
        temperature = config.temperature if temperature is None else temperature
        top_p = config.top_p if top_p is None else top_p
        max_new_tokens = config.max_new_tokens if max_new_tokens is None else max_new_tokens
        if temperature < 0 or not 0.0 < top_p <= 1.0 or num_samples < 1 or max_new_tokens < 1:
            raise ValueError(
                "need temperature >= 0, 0 < top_p <= 1, num_samples >= 1, max_new_tokens >= 1; got "
                f"{temperature}, {top_p}, {num_samples}, {max_new_tokens}"
            )
        arrays = _as_arrays(images)
        arrays = [a for a in arrays for _ in range(num_samples)]
        inputs = self.build_inputs(arrays)
        out = self.generator(inputs, max_new_tokens, temperature=temperature, top_p=top_p, generator=generator)
        tokens, lengths = out.tokens.cpu(), out.lengths.cpu()
        last = tokens.gather(1, (lengths - 1)[:, None])[:, 0]  # each answer's last token: a stop token unless cut off
        truncated = (~torch.isin(last, self.generator.stop_ids)).tolist()
        tokenizer = self.processor.tokenizer
        texts = [
            tokenizer.decode(row[:n].tolist(), skip_special_tokens=True)
            for row, n in zip(tokens, lengths.tolist(), strict=True)
        ]
        judgement = Judgement(
            texts=texts, outputs=[parse(t) for t in texts], hidden=out.hidden, mask=out.mask, truncated=truncated
        )
        scale = temperature if temperature > 0 else 1.0
        return CriticRollout(judgement, out.tokens, out.lengths, out.logprobs, inputs, temperature=scale)

    def completion_states(self, rollout: CriticRollout) -> torch.Tensor:
        """[N, T, D] last-layer states that predict each answer token of ``rollout`` under the current weights and
        adapters (one teacher-forced forward, gradients enabled); see ``spc_fast.critic.policy``."""
        return completion_states(self.model, rollout)

    def token_logprobs(self, rollout: CriticRollout, temperature: float | None = None) -> torch.Tensor:
        """[N, T] float32 log-probabilities of the rollout's tokens under log_softmax(logits / temperature) with the
        current weights (no gradient: GRPO's old and reference log-probs), 0 on pad; ``temperature`` defaults to the
        one the rollout was sampled at, so the result compares with ``rollout.logprobs``."""
        with torch.no_grad():
            states = self.completion_states(rollout)
        return completion_logprobs(states, self.lm_head_weight, rollout, temperature)

    def reference(self) -> AbstractContextManager[None]:
        """Inside ``with critic.reference():`` the model runs with its LoRA adapters disabled: GRPO's reference
        policy without a second copy of the weights. A no-op for a model without adapters."""
        return adapters_disabled(self.model)
