"""The neural image critic: Qwen2.5-VL asked the release's analysis question about each photo, answering in the tag
format of SPEC.md §4, with its reasoning latent H_c (SPEC.md eq. 1) kept for the artist.

``ImageCritic(model, processor)`` wraps any ``Qwen2_5_VLForConditionalGeneration`` and its processor (the tiny one
from ``spc_fast.models.qwen_vl.build_tiny_critic`` or a release loaded by ``load_critic``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from spc_fast import images as image_checks
from spc_fast.attention import set_vlm_attention
from spc_fast.critic.format import CriticOutput, parse
from spc_fast.critic.generate import StaticGenerator, bucket_left_pad

# Our wording of the release's system and analysis instruction; the tags and the steps follow the release's format
# (SPEC.md §4 and §6): numbered analysis in <think>, suggestions between <edit_start> and </edit_end>, a 0-100 score
# in <answer>.
SYSTEM_PROMPT = (
    "You are a professional photographer and photo retoucher. You judge the aesthetic and technical quality of "
    "photos and say precisely how to edit them."
)
ANALYSIS_PROMPT = (
    "Analyse this photo step by step:\n"
    "1. Describe the scene and the subject.\n"
    "2. Judge the light&exposure, contrast, saturation and color temperature.\n"
    "3. Find degradations: blur, noise, haze, moire, shadow or low light.\n"
    "4. Decide which edits would improve the photo and how strongly (slightly, moderately or significantly).\n"
    "5. Rate the photo's quality from 0 to 100.\n"
    "Write the numbered analysis inside <think></think>, then the edit suggestions as a numbered list between "
    '<edit_start> and </edit_end>, for example "1. moderately increase light&exposure;" or "2. change color '
    'temperature to slightly warmer", then the score as a number inside <answer></answer>.'
)
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


@dataclass
class Critique:
    texts: list[str]
    outputs: list[CriticOutput]
    tokens: torch.Tensor  # [N, T] generated ids (pad after the stop token)
    lengths: torch.Tensor  # [N] generated tokens, stop token included
    hidden: torch.Tensor  # [N, S, D] H_c, right-padded
    mask: torch.Tensor  # [N, S] 1 for real positions (prompt + generated)
    prompt_lengths: torch.Tensor  # [N]


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


class ImageCritic:
    """Qwen2.5-VL critic: ``critique(images)`` answers per image (text, parsed output, H_c); ``score(images)``
    reads the scores. Greedy by default; ``temperature > 0`` samples (``top_p``, ``num_samples`` answers per
    image, a ``torch.Generator`` for repeatable draws). ``compile=True`` compiles the decode step. ``attention``
    (``spc_fast.attention.BACKENDS``) sets the vision tower's and the prefill's attention; ``self.attention`` is the
    backend that runs. Decode steps always run SDPA over the static cache."""

    def __init__(
        self,
        model,
        processor,
        *,
        max_new_tokens: int = 512,
        bucket: int = 64,
        compile: bool = False,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
        attention: str = "auto",
        system_prompt: str = SYSTEM_PROMPT,
        prompt: str = ANALYSIS_PROMPT,
    ) -> None:
        if max_new_tokens < 1 or bucket < 1:
            raise ValueError(f"max_new_tokens and bucket must be >= 1, got {max_new_tokens} and {bucket}")
        self.model = model
        self.processor = processor
        self.attention = set_vlm_attention(model, attention)
        self.max_new_tokens = max_new_tokens
        self.bucket = bucket
        self.system_prompt = system_prompt
        self.prompt = prompt
        tokenizer = processor.tokenizer
        unk = tokenizer.unk_token_id
        stop_ids = [i for i in tokenizer.convert_tokens_to_ids(list(STOP_TOKENS)) if i is not None and i != unk]
        eos = model.generation_config.eos_token_id
        stop_ids += [eos] if isinstance(eos, int) else list(eos or [])
        self.stop_ids = sorted(set(stop_ids))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.generator = StaticGenerator(
            model,
            stop_ids=self.stop_ids,
            pad_id=self.pad_id,
            compile=compile,
            backend=compile_backend,
            mode=compile_mode,
        )

    def chat_text(self) -> str:
        """The prompt as the chat template renders it (one image placeholder before the instruction)."""
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]},
        ]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def build_inputs(self, images: ImageInput, bucket: int | None = None) -> dict:
        """Processor outputs for a batch (left-padded, then padded on the left to a multiple of ``bucket``)."""
        arrays = _as_arrays(images)
        self.processor.tokenizer.padding_side = "left"
        inputs = self.processor(text=[self.chat_text()] * len(arrays), images=arrays, return_tensors="pt", padding=True)
        inputs = bucket_left_pad(dict(inputs), bucket or self.bucket, self.pad_id)
        device = self.model.device
        dtype = self.model.dtype
        return {k: v.to(device, dtype=dtype) if k == "pixel_values" else v.to(device) for k, v in inputs.items()}

    def critique(
        self,
        images: ImageInput,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        max_new_tokens: int | None = None,
    ) -> Critique:
        """Answer for each image (``num_samples`` answers each, consecutive); see ``Critique``."""
        if temperature < 0 or not 0.0 < top_p <= 1.0 or num_samples < 1:
            raise ValueError(
                f"need temperature >= 0, 0 < top_p <= 1, num_samples >= 1; got {temperature}, {top_p}, {num_samples}"
            )
        arrays = _as_arrays(images)
        if num_samples > 1:
            arrays = [a for a in arrays for _ in range(num_samples)]
        inputs = self.build_inputs(arrays)
        out = self.generator(
            inputs,
            max_new_tokens or self.max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
        )
        tokenizer = self.processor.tokenizer
        texts = [
            tokenizer.decode(row[:n].tolist(), skip_special_tokens=True)
            for row, n in zip(out.tokens.cpu(), out.lengths.cpu().tolist(), strict=True)
        ]
        return Critique(
            texts, [parse(t) for t in texts], out.tokens, out.lengths, out.hidden, out.mask, out.prompt_lengths
        )

    def score(self, images: ImageInput, **options) -> torch.Tensor:
        """(B,) float32 scores in [0, 100] read from each answer; NaN where no score could be parsed."""
        critique = self.critique(images, **options)
        return scores_of(critique.outputs)


def scores_of(outputs: Sequence[CriticOutput]) -> torch.Tensor:
    """(B,) float32 parsed scores, NaN where ``score`` is None."""
    return torch.tensor([np.nan if o.score is None else o.score for o in outputs], dtype=torch.float32)
