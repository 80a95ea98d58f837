"""Stage I, the critic (``spc-fast train critic-sft``): supervised fine-tuning of Qwen2.5-VL on tagged answers.

A sample is the critic's chat — its system line, a user turn with the image first (the release's edit image, as the
critic sees it at inference) and then the analysis instruction — followed by the record's annotation as the
assistant's answer and the end-of-turn token. The loss is the mean negative log-likelihood of the answer tokens
(prompt tokens are never scored), per sample, then the mean over the micro-batch. For editing samples (tasks retouch
and restore) the tokens of the score inside ``<answer>…</answer>`` are not scored either: those records label the
edit, not the quality, so only score records teach the score (SPEC.md §4).

The answer's log-likelihood goes through the LM head without ever forming the [N, T, V] logits: the value from
``spc_fast.kernels.token_logprobs``, the gradient from ``spc_fast.kernels.grpo_loss`` with advantage 1, one update
(ratio 1) and no KL term, whose gradient is exactly that of the mean token log-likelihood per sample (both are the
fused kernels on CUDA). LoRA (peft, on the language model's attention and MLP projections) or full fine-tuning.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Hashable
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from spc_fast.config import TINY
from spc_fast.critic.format import parse
from spc_fast.critic.model import ImageCritic
from spc_fast.critic.policy import CriticRollout, completion_states
from spc_fast.critic.vocabulary import TAGS
from spc_fast.images import edit_image, edit_image_size
from spc_fast.kernels import grpo_loss, token_logprobs
from spc_fast.models import build_critic, qwen_vl
from spc_fast.roles import Judgement
from spc_fast.training.config import TrainConfig
from spc_fast.training.data.manifest import Record, load_image
from spc_fast.training.export import export_critic
from spc_fast.training.stage import StepLoss
from spc_fast.training.stages.flops import attention_flops, linear_parameters, matmul_flops

# The language model's attention and MLP projections (not the vision tower's, which shares the MLP names).
LORA_TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
EDITING_TASKS = ("retouch", "restore")
END_OF_TURN = "<|im_end|>"


def score_span(answer: str) -> tuple[int, int] | None:
    """Character span of the text inside the first ``<answer>…</answer>`` of ``answer`` (None without one)."""
    opening, closing = (re.escape(tag) for tag in TAGS["answer"])
    match = re.search(f"{opening}(.*?){closing}", answer, flags=re.DOTALL)
    return match.span(1) if match else None


class AnswerLikelihood(torch.nn.Module):
    """The trained module: the critic's VLM (a ``PeftModel`` under LoRA), whose forward scores teacher-forced
    answers. The whole loss runs inside ``forward`` so that FSDP's and DDP's hooks see every use of the weights."""

    def __init__(self, vlm: torch.nn.Module) -> None:
        super().__init__()
        self.vlm = vlm

    def forward(
        self,
        prompt: dict[str, torch.Tensor],
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        scored: torch.Tensor,
        answers: list[str],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced answers (``tokens`` [N, T] right-padded, ``lengths`` [N]) after the left-padded ``prompt``
        (processor inputs): (per-sample NLL over the ``scored`` tokens [N] float32, detached; a scalar whose gradient
        is that of the NLL's mean and whose value is −1)."""
        model = self.vlm.get_base_model() if isinstance(self.vlm, PeftModel) else self.vlm
        judgement = Judgement(texts=list(answers), outputs=[parse(a) for a in answers])
        rollout = CriticRollout(judgement, tokens, lengths, torch.zeros(tokens.shape, device=tokens.device), prompt)
        states = completion_states(model, rollout)  # [N, T, D]: the states that predict each answer token
        weight = model.lm_head.weight.to(states.dtype)
        logp = token_logprobs(states.detach(), weight.detach(), tokens)  # [N, T] float32
        mask = scored.to(torch.float32)
        nll = -(logp * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        ones = torch.ones(states.shape[0], device=states.device)
        surrogate = grpo_loss(states, weight, tokens, ones, scored, beta_kl=0.0)
        return nll, surrogate


class CriticSFT:
    """Stage I of the critic (see the module docstring)."""

    name = "critic-sft"

    def __init__(self) -> None:
        self.step = 0

    def build(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        # the trained weights are kept in float32 (the optimizer's master copy); FSDP or autocast compute in bf16
        self.critic: ImageCritic = build_critic(dataclasses.replace(config.critic, device=str(device), dtype="float32"))
        vlm = self.critic.model
        self.processor, self.tokenizer = self.critic.processor, self.critic.processor.tokenizer
        self.chat = self.critic.chat_text()
        self.end_of_turn = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.layers = list(vlm.model.language_model.layers)
        self.vision_blocks = list(vlm.model.visual.blocks)
        if config.lora:
            vlm.requires_grad_(False)
            vlm = get_peft_model(
                vlm,
                LoraConfig(
                    r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=LORA_TARGETS, lora_dropout=0.0
                ),
            )
        else:
            vlm.requires_grad_(True)
        self.model = AnswerLikelihood(vlm).train()
        self._count_parameters()

    def _count_parameters(self) -> None:
        vlm = self.critic.model
        self.text_params = linear_parameters(vlm.model.language_model)
        self.vision_params = linear_parameters(vlm.model.visual)
        self.head_params = vlm.lm_head.weight.numel()
        self.text_width = vlm.config.text_config.hidden_size
        vision = vlm.config.vision_config
        self.vision_width = vision.hidden_size
        # every vision block attends within windows of (window_size / patch_size)^2 patches but the full-attention ones
        self.vision_full = len(vision.fullatt_block_indexes)
        self.vision_windowed = vision.depth - self.vision_full
        self.vision_window = (vision.window_size // vision.patch_size) ** 2

    def trainable(self) -> torch.nn.Module:
        return self.model

    def blocks(self) -> list[torch.nn.Module]:
        return self.layers if self.config.lora else [*self.vision_blocks, *self.layers]

    def bucket(self, record: Record) -> Hashable:
        """The edit image's size: a batch's images give the same number of image tokens."""
        if record.annotation is None:
            raise ValueError(
                f"record {record.id!r} has no annotation: critic-sft learns the critic's tagged answer; annotate the "
                "data (spc-fast data build writes annotations, spc-fast data import annotations adds a teacher's)"
            )
        return edit_image_size(record.height, record.width)

    def sample(self, record: Record) -> dict:
        self.bucket(record)
        image = load_image(record.input).permute(1, 2, 0).numpy()  # H x W x 3 uint8
        prompt = self.processor(text=[self.chat], images=[edit_image(image)], return_tensors="pt")
        encoded = self.tokenizer(record.annotation, add_special_tokens=False, return_offsets_mapping=True)
        tokens = [*encoded["input_ids"], self.end_of_turn]
        scored = [True] * len(tokens)
        span = score_span(record.annotation) if record.task in EDITING_TASKS else None
        if span is not None:
            for i, (start, end) in enumerate(encoded["offset_mapping"]):
                scored[i] = not (start < span[1] and end > span[0])  # a token touching the score is not scored
        return {
            "id": record.id,
            "answer": record.annotation,
            "input_ids": prompt["input_ids"][0],
            "mm_token_type_ids": prompt["mm_token_type_ids"][0],
            "pixel_values": prompt["pixel_values"],
            "image_grid_thw": prompt["image_grid_thw"],
            "tokens": torch.tensor(tokens),
            "scored": torch.tensor(scored),
        }

    def collate(self, samples: list[dict]) -> dict:
        """Prompts left-padded (as the generator's prefill), answers right-padded, images concatenated."""
        pad = self.tokenizer.pad_token_id
        width = max(len(s["input_ids"]) for s in samples)
        length = max(len(s["tokens"]) for s in samples)
        ids = torch.full((len(samples), width), pad, dtype=torch.long)
        attention = torch.zeros((len(samples), width), dtype=torch.long)
        types = torch.zeros((len(samples), width), dtype=torch.long)
        tokens = torch.full((len(samples), length), pad, dtype=torch.long)
        scored = torch.zeros((len(samples), length), dtype=torch.bool)
        for row, s in enumerate(samples):
            n, m = len(s["input_ids"]), len(s["tokens"])
            ids[row, width - n :], attention[row, width - n :] = s["input_ids"], 1
            types[row, width - n :] = s["mm_token_type_ids"]
            tokens[row, :m], scored[row, :m] = s["tokens"], s["scored"]
        return {
            "ids": [s["id"] for s in samples],
            "answers": [s["answer"] for s in samples],
            "input_ids": ids,
            "attention_mask": attention,
            "mm_token_type_ids": types,
            "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
            "image_grid_thw": torch.cat([s["image_grid_thw"] for s in samples]),
            "tokens": tokens,
            "lengths": torch.tensor([len(s["tokens"]) for s in samples]),
            "scored": scored,
        }

    def loss(self, model: torch.nn.Module, batch: dict) -> StepLoss:
        keys = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")
        prompt = {key: batch[key].to(self.device) for key in keys}
        tokens, lengths, scored = (batch[key].to(self.device) for key in ("tokens", "lengths", "scored"))
        nll, surrogate = model(prompt, tokens, lengths, scored, batch["answers"])
        loss = nll.mean() + (surrogate - surrogate.detach())
        count = int(batch["attention_mask"].sum()) + int(batch["lengths"].sum())
        return StepLoss(loss, {}, samples=len(batch["ids"]), tokens=count)

    def flops_per_sample(self, batch: dict) -> float:
        """Per sample: the language model over its prompt + answer, the LM head over its answer, the vision tower
        over its patches; gradients through the language model (and, fully fine-tuned, the vision tower)."""
        full = not self.config.lora
        lengths = batch["attention_mask"].sum(1).double() + batch["lengths"].double()  # [N] real tokens
        answers = batch["lengths"].double()
        grid = batch["image_grid_thw"].double()
        patches = grid.prod(1)  # [N] vision patches per image (one image per sample)
        layers = len(self.layers)
        text = sum(matmul_flops(self.text_params, float(n), input_grad=True, weight_grad=full) for n in lengths)
        text += sum(attention_flops(layers, float(n), self.text_width, backward=True) for n in lengths)
        head = sum(matmul_flops(self.head_params, float(n), input_grad=True, weight_grad=full) for n in answers)
        vision = sum(matmul_flops(self.vision_params, float(n), input_grad=full, weight_grad=full) for n in patches)
        for n in patches.tolist():
            window = min(n, self.vision_window)
            vision += attention_flops(self.vision_full, n, self.vision_width, backward=full)
            vision += attention_flops(self.vision_windowed, n, self.vision_width, backward=full) * window / n
        return (text + head + vision) / len(lengths)

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
        """``vlm_lora/`` (LoRA) or ``vlm/`` (full); with LoRA the base joins as ``vlm/``: linked from the weights
        directory, or written when it exists nowhere as such (the tiny model, or a base whose adapter was merged)."""
        config = self.config.critic
        weights = config.weights
        plain = weights != TINY and not (Path(weights) / qwen_vl.VLM_LORA_DIR).exists()
        dtype = torch.float32 if weights == TINY else torch.bfloat16

        def base() -> torch.nn.Module:
            name = str(dtype).removeprefix("torch.")
            return build_critic(dataclasses.replace(config, device="cpu", dtype=name)).model

        export_critic(
            Path(directory),
            state_dict,
            vlm=self.model.vlm,
            processor=self.processor,
            lora=self.config.lora,
            base=Path(weights) if plain else base,
            dtype=dtype,
            prompt=(config.system_prompt, config.instruction),
        )
