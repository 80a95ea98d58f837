"""The critic as a GRPO policy (SPEC.md §7): what a trainer keeps of sampled answers, and the teacher-forced replay
that scores them again under the current weights.

A ``CriticRollout`` holds N = B·G answers (G per image, consecutive), their tokens and log-probabilities under the
sampling distribution, and the prompt's processor inputs. ``completion_states`` runs prompt + answer through the
language model once, with gradients, and returns the last-layer state that predicts each answer token: with the LM
head's weight that is what ``spc_fast.rl_losses.grpo_loss`` takes, without ever forming the [N, T, V] logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spc_fast.kernels import token_logprobs
from spc_fast.roles import Judgement


@dataclass
class CriticRollout:
    """Sampled answers with what it takes to score them again (``ImageCritic.sample``)."""

    judgement: Judgement  # the N answers: texts, parsed outputs, H_c, truncation
    tokens: torch.Tensor  # [N, T] answer ids, pad after each answer's stop token
    lengths: torch.Tensor  # [N] answer tokens, stop token included
    logprobs: torch.Tensor  # [N, T] float32 log_softmax(logits / temperature)[token] (greedy: temperature 1), 0 on pad
    prompt: dict[str, torch.Tensor]  # processor inputs, left-padded: input_ids, attention_mask, pixel_values, ...
    temperature: float = 1.0  # the one ``logprobs`` were computed at (greedy decoding: 1)

    @property
    def completion_mask(self) -> torch.Tensor:
        """[N, T] bool, True on answer tokens (the GRPO loss's completion mask)."""
        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return positions[None, :] < self.lengths[:, None]

    @property
    def prompt_lengths(self) -> torch.Tensor:
        """[N] real (unpadded) prompt tokens."""
        return self.prompt["attention_mask"].sum(1)


def completion_states(model, rollout: CriticRollout) -> torch.Tensor:
    """[N, T, D] last-layer (final-norm) states of ``model`` (a ``Qwen2_5_VLForConditionalGeneration``) that predict
    each answer token: one forward over the left-padded prompt followed by the answer, gradients enabled."""
    prompt, tokens = rollout.prompt, rollout.tokens
    prompt_len = prompt["input_ids"].shape[1]
    fed = tokens[:, :-1]  # the last answer token predicts nothing
    ids = torch.cat([prompt["input_ids"], fed], dim=1)  # [N, L + T - 1]
    mask = torch.cat([prompt["attention_mask"], rollout.completion_mask[:, :-1].to(prompt["attention_mask"].dtype)], 1)
    types = torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(fed)], dim=1)  # answers are text
    inner = model.model
    positions, _ = inner.get_rope_index(
        ids, mm_token_type_ids=types, image_grid_thw=prompt.get("image_grid_thw"), attention_mask=mask
    )  # [3, N, L + T - 1]
    # The image features go to the prompt's image slots only: an answer may hold an <|image_pad|> token (a random
    # model writes any token), which decoding embedded as a text token, and so must the replay.
    embeds = inner.get_input_embeddings()(ids)  # [N, L + T - 1, D]
    if prompt.get("pixel_values") is not None:
        features = inner.get_image_features(prompt["pixel_values"], prompt["image_grid_thw"], return_dict=True)
        image = torch.cat(features.pooler_output).to(embeds.dtype)  # [image tokens, D]
        embeds = embeds.masked_scatter((types == 1)[..., None].expand_as(embeds), image)
    states = inner(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
    return states.last_hidden_state[:, prompt_len - 1 :]  # [N, T, D]: the last prompt position predicts answer 0


def completion_logprobs(
    states: torch.Tensor, lm_head_weight: torch.Tensor, rollout: CriticRollout, temperature: float | None = None
) -> torch.Tensor:
    """[N, T] float32 log-probabilities of the rollout's tokens from ``completion_states``, 0 on pad, at
    ``temperature`` (default: the rollout's, so they compare with ``rollout.logprobs``)."""
    temperature = rollout.temperature if temperature is None else temperature
    logprobs = token_logprobs(states, lm_head_weight, rollout.tokens, temperature=temperature)
    return logprobs.masked_fill(~rollout.completion_mask, 0.0)
