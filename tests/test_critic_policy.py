"""The critic's training entry points on the tiny random-weight Qwen2.5-VL (float32): rollouts carry the
log-probabilities the decode loop sampled under, the teacher-forced replay gives them back (left-padded prompts of
different lengths, greedy and sampled), its states feed the fused GRPO loss, and ``reference()`` runs the base model
of a LoRA-adapted critic without a second copy."""

import dataclasses

import numpy as np
import pytest
import torch

from spc_fast.config import CriticConfig
from spc_fast.critic.model import ImageCritic
from spc_fast.models import qwen_vl
from spc_fast.models.factory import tiny_critic_corpus
from spc_fast.rl_losses import grpo_loss

CONFIG = CriticConfig(max_new_tokens=10)
# different image-token counts (12, 10, 16: the critic sees each photo's ~1 MP edit image, capped at 112 x 112 by the
# tiny processor) -> left-padded prompts of different lengths
SIZES = [(60, 90), (50, 100), (28, 28)]


def _tiny():
    return qwen_vl.build_tiny_critic(seed=0, corpus=tiny_critic_corpus())


@pytest.fixture(scope="module")
def critic():
    return ImageCritic(*_tiny(), CONFIG)


def _images(seed=0):
    rs = np.random.RandomState(seed)
    return [rs.randint(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 0.9), (0.7, 1.0)])
def test_token_logprobs_give_back_the_sampled_logprobs(critic, temperature, top_p):
    rollout = critic.sample(
        _images(), num_samples=2, temperature=temperature, top_p=top_p, generator=torch.Generator().manual_seed(3)
    )
    assert len(set(rollout.prompt_lengths.tolist())) == 3 and rollout.prompt["attention_mask"][:, 0].eq(0).any()
    n, t = rollout.tokens.shape
    assert n == 6 and rollout.logprobs.shape == (n, t) and rollout.logprobs.dtype == torch.float32
    mask = rollout.completion_mask
    assert mask.sum(1).tolist() == rollout.lengths.tolist()
    assert (rollout.logprobs[~mask] == 0).all() and (rollout.logprobs[mask] <= 0).all()
    assert rollout.temperature == (temperature or 1.0)
    replayed = critic.token_logprobs(rollout)  # at the rollout's own temperature
    assert replayed.shape == (n, t) and (replayed[~mask] == 0).all()
    torch.testing.assert_close(replayed[mask], rollout.logprobs[mask], atol=1e-4, rtol=0)
    if temperature == 0.0:  # greedy: each token is the argmax, so its log-probability is the row's largest
        states = critic.completion_states(rollout).detach()
        best = torch.log_softmax(states @ critic.lm_head_weight.T, -1).amax(-1)
        torch.testing.assert_close(rollout.logprobs[mask], best[mask], atol=1e-4, rtol=0)
    else:
        assert not torch.equal(rollout.tokens[0::2], rollout.tokens[1::2]), "two draws per image differ"


def test_completion_states_are_h_c_rows_and_feed_grpo(critic):
    rollout = critic.sample(_images(1), num_samples=2, temperature=1.0, generator=torch.Generator().manual_seed(0))
    states = critic.completion_states(rollout)
    n, t = rollout.tokens.shape
    assert states.shape == (n, t, critic.model.config.text_config.hidden_size) and states.requires_grad
    hidden = rollout.judgement.hidden
    for i in range(n):  # the state predicting answer token j is H_c's row prompt_length - 1 + j (SPEC.md eq. 1)
        start, length = int(rollout.prompt_lengths[i]) - 1, int(rollout.lengths[i])
        torch.testing.assert_close(states[i, :length].detach(), hidden[i, start : start + length], atol=2e-4, rtol=0)
    advantages = torch.tensor([1.0, -1.0] * (n // 2))
    loss = grpo_loss(
        states, critic.lm_head_weight, rollout.tokens, advantages, rollout.completion_mask,
        old_logp=rollout.logprobs, beta_kl=0.0,
    )
    loss.backward()
    grads = [p.grad for p in critic.model.model.language_model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and any(g.abs().sum() > 0 for g in grads)
    critic.model.zero_grad(set_to_none=True)
    # a random model may write <|image_pad|>: decoding embeds it as a token, the replay must not expect an image
    odd = dataclasses.replace(rollout, tokens=rollout.tokens.clone())
    odd.tokens[:, 0] = critic.model.config.image_token_id
    with torch.no_grad():
        torch.testing.assert_close(critic.completion_states(odd)[:, 0], states[:, 0].detach(), atol=1e-5, rtol=0)


def test_reference_runs_the_base_model_of_a_lora_critic():
    from peft import LoraConfig, get_peft_model

    base_model, processor = _tiny()
    torch.manual_seed(0)
    adapted = get_peft_model(
        _tiny()[0], LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    critic, base = ImageCritic(adapted, processor, CONFIG), ImageCritic(base_model, processor, CONFIG)
    lora = [p for name, p in adapted.named_parameters() if "lora_" in name]
    assert lora and all(p.requires_grad for p in lora) and any(p.abs().sum() > 0 for p in lora)
    rollout = critic.sample(_images(), temperature=1.0, generator=torch.Generator().manual_seed(1))
    mask = rollout.completion_mask
    outside = critic.token_logprobs(rollout)
    with critic.reference():
        inside = critic.token_logprobs(rollout)
        assert all(p.requires_grad for p in lora), "the adapters stay trainable while switched off"
    again = critic.token_logprobs(rollout)
    expected = base.token_logprobs(rollout)
    torch.testing.assert_close(inside, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(outside[mask], rollout.logprobs[mask], atol=1e-4, rtol=0)
    assert (outside - inside)[mask].abs().max() > 1e-3, "the adapters change the policy"
    assert torch.equal(again, outside) and all(p.requires_grad for p in lora)
    with base.reference():  # no adapters: a no-op
        torch.testing.assert_close(base.token_logprobs(rollout), expected, atol=0, rtol=0)
