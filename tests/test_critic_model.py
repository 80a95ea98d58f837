"""The neural critic on a tiny random-weight Qwen2.5-VL (real classes, real processor, offline BPE tokenizer):
prompt, static-cache generation against transformers' ``generate``, H_c (SPEC.md eq. 1), sampling, scores, the
``Judgement`` it returns, loading from the release layout, and a compiled decode step without recompiles. The
training entry points (``sample``, ``token_logprobs``, ``reference``) are in tests/test_critic_policy.py."""

import dataclasses

import numpy as np
import pytest
import torch

from spc_fast.config import CriticConfig
from spc_fast.critic.format import parse, render
from spc_fast.critic.generate import bucket_left_pad, sample
from spc_fast.critic.model import ImageCritic
from spc_fast.critic.prompts import ANALYSIS_PROMPT, SYSTEM_PROMPT
from spc_fast.critic.vocabulary import CriticOutput, Suggestion
from spc_fast.models import qwen_vl
from spc_fast.models.factory import tiny_critic_corpus
from spc_fast.roles import Judgement

MAX_NEW = 12
CONFIG = CriticConfig(max_new_tokens=MAX_NEW)


@pytest.fixture(scope="module")
def tiny():
    return qwen_vl.build_tiny_critic(seed=0, corpus=tiny_critic_corpus())


@pytest.fixture(scope="module")
def critic(tiny):
    model, processor = tiny
    return ImageCritic(model, processor, CONFIG)


def _short(tokens: int) -> CriticConfig:
    return dataclasses.replace(CONFIG, max_new_tokens=tokens)


def _images(sizes, seed=0):
    rs = np.random.RandomState(seed)
    return [rs.randint(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


# different image-token counts -> different prompt lengths (12, 10 and 16: the critic sees each photo's edit image,
# about 1 MP, which the tiny processor then caps at 112 x 112)
SIZES = [(60, 90), (50, 100), (28, 28)]


def test_tiny_model_is_the_real_architecture(tiny):
    model, processor = tiny
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    tokenizer = processor.tokenizer
    for token in qwen_vl.SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) >= len(tokenizer) - len(qwen_vl.SPECIAL_TOKENS)
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert tokenizer.decode(tokenizer("1. moderately increase light&exposure;")["input_ids"]) == (
        "1. moderately increase light&exposure;"
    )


def test_real_config_values():
    config = qwen_vl.qwen2_5_vl_7b_config()
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        3584,
        28,
        28,
        4,
    )
    assert (text.intermediate_size, text.vocab_size) == (18944, 152064)
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size, vision.patch_size) == (32, 1280, 3584, 14)
    assert list(vision.fullatt_block_indexes) == [7, 15, 23, 31] and vision.window_size == 112
    short = qwen_vl.qwen2_5_vl_7b_config(num_layers=2, vision_depth=8)
    assert short.text_config.num_hidden_layers == 2 and list(short.vision_config.fullatt_block_indexes) == [7]


def test_prompt_and_inputs(critic):
    text = critic.chat_text()
    assert text.startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>" + ANALYSIS_PROMPT in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    for tag in ("<think>", "<edit_start>", "</edit_end>", "<answer>"):
        assert tag in ANALYSIS_PROMPT
    inputs = critic.build_inputs(_images(SIZES))
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape[1] % critic.bucket == 0
    assert (mask.cumsum(1) > 0).eq(mask.bool()).all(), "left padding: zeros only before the first real token"
    image_id = critic.model.config.image_token_id
    merge = critic.processor.image_processor.merge_size**2
    assert (ids == image_id).sum(1).tolist() == (inputs["image_grid_thw"].prod(1) // merge).tolist()


def test_prompts_come_from_the_config(tiny):
    model, processor = tiny
    critic = ImageCritic(model, processor, CriticConfig(system_prompt="Be brief.", instruction="Rate it."))
    text = critic.chat_text()
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>Rate it.<|im_end|>" in text and SYSTEM_PROMPT not in text
    assert ImageCritic(model, processor).config == CriticConfig() and CriticConfig().max_new_tokens == 1280


def test_bucket_left_pad_keeps_real_tokens():
    inputs = {"input_ids": torch.arange(10).view(2, 5), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    out = bucket_left_pad(inputs, 8, pad_id=-1)
    assert out["input_ids"].shape == (2, 8) and (out["input_ids"][:, 3:] == inputs["input_ids"]).all()
    assert out["attention_mask"][:, :3].sum() == 0
    assert bucket_left_pad(inputs, 5, pad_id=-1)["input_ids"] is inputs["input_ids"]


def test_greedy_matches_generate(critic):
    images = _images(SIZES)
    inputs = critic.build_inputs(images, bucket=1)
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == 3
    with torch.inference_mode():
        expected = critic.model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    expected = expected[:, inputs["input_ids"].shape[1] :]
    got = critic.sample(images)
    assert torch.equal(got.tokens, expected)
    assert len({tuple(row) for row in got.tokens.tolist()}) > 1, "the tiny critic should see its images"
    critic.critique(images[::-1])  # the same shapes: the static cache is reused, reset in between
    again = critic.sample(images)
    assert torch.equal(again.tokens, expected) and torch.equal(again.judgement.hidden, got.judgement.hidden)


def test_critique_is_one_judgement(critic):
    images = _images(SIZES)
    rollout = critic.sample(images)
    judgement = critic.critique(images)
    assert isinstance(judgement, Judgement) and len(judgement) == 3
    assert judgement.texts == rollout.judgement.texts and torch.equal(judgement.hidden, rollout.judgement.hidden)
    tokenizer = critic.processor.tokenizer
    for text, output, row, n in zip(judgement.texts, judgement.outputs, rollout.tokens, rollout.lengths, strict=True):
        assert text == tokenizer.decode(row[:n].tolist(), skip_special_tokens=True) and output == parse(text)
    rows = zip(rollout.tokens, rollout.lengths.tolist(), strict=True)
    stopped = [bool(torch.isin(row[:n], critic.generator.stop_ids).any()) for row, n in rows]
    assert judgement.truncated == [not s for s in stopped]
    assert all(n == MAX_NEW for s, n in zip(stopped, rollout.lengths.tolist(), strict=True) if not s)


def test_per_sample_stop_matches_generate(tiny):
    model, processor = tiny
    images = _images(SIZES)
    free = ImageCritic(model, processor, CONFIG).sample(images).tokens
    stop = int(free[0, 3])  # make a token sample 0 emits early a stop token
    critic = ImageCritic(model, processor, CONFIG)
    critic.generator.stop_ids = torch.tensor(sorted({stop, *critic.stop_ids}))
    got = critic.sample(images)
    first = [(row == stop).nonzero()[0].item() + 1 if (row == stop).any() else MAX_NEW for row in free]
    assert got.lengths.tolist() == first
    assert got.judgement.truncated == [not bool((row == stop).any()) for row in free]
    assert not got.judgement.truncated[0]
    for row, n in zip(got.tokens, first, strict=True):
        assert (row[n:] == critic.pad_id).all()
    inputs = critic.build_inputs(images, bucket=1)
    with torch.inference_mode():
        ref = model.generate(
            **inputs,
            max_new_tokens=MAX_NEW,
            do_sample=False,
            eos_token_id=[stop, *critic.stop_ids],
            pad_token_id=critic.pad_id,
        )[:, inputs["input_ids"].shape[1] :]
    for row, ref_row, n in zip(got.tokens, ref, first, strict=True):
        assert torch.equal(row[:n], ref_row[:n])


def test_hidden_states_are_eq1(critic):
    images = _images(SIZES)
    rollout = critic.sample(images)
    got = rollout.judgement
    b, s, d = got.hidden.shape
    total = rollout.prompt_lengths + rollout.lengths - 1  # the last generated token is never fed
    assert (b, s, d) == (3, int(total.max()), critic.model.config.text_config.hidden_size)
    assert got.mask.dtype == torch.long and got.mask.sum(1).tolist() == total.tolist()
    assert (got.mask.cumsum(1) == got.mask.sum(1, keepdim=True)).logical_or(got.mask.bool()).all(), "right padding"
    assert (got.hidden[~got.mask.bool()] == 0).all()
    for i, image in enumerate(images):
        single = critic.build_inputs([image], bucket=1)
        generated = rollout.tokens[i : i + 1, : rollout.lengths[i] - 1]
        ids = torch.cat([single["input_ids"], generated], 1)
        types = torch.cat([single["mm_token_type_ids"], torch.zeros_like(generated)], 1)
        with torch.inference_mode():
            full = critic.model.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=single["pixel_values"],
                image_grid_thw=single["image_grid_thw"],
                mm_token_type_ids=types,
            ).last_hidden_state[0]
        assert full.shape[0] == int(total[i])
        torch.testing.assert_close(got.hidden[i, : full.shape[0]], full, atol=2e-4, rtol=2e-4)


def test_sampling_is_seeded(critic):
    images = _images(SIZES[:2])

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return critic.sample(images, temperature=1.0, top_p=0.9, num_samples=2, generator=g)

    a, b, c = draw(1), draw(1), draw(2)
    assert a.tokens.shape[0] == 4 and len(a.judgement.texts) == 4 and a.judgement.hidden.shape[0] == 4
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.judgement.hidden, b.judgement.hidden)
    assert not torch.equal(a.tokens, c.tokens)
    sampled = ImageCritic(critic.model, critic.processor, dataclasses.replace(CONFIG, temperature=1.0, top_p=0.9))
    assert torch.equal(sampled.sample(images, num_samples=2, generator=torch.Generator().manual_seed(1)).tokens,
                       a.tokens), "the config's temperature and top_p are the defaults"


def test_sample_rules():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, -1.0, 4.9]])
    assert sample(logits, 0.0, 1.0, None).tolist() == [1, 0]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # a tiny nucleus keeps only the top token
        assert sample(logits, 1.0, 1e-3, g).tolist() == [1, 0]
    draws = torch.stack([sample(logits[:1].expand(4000, -1), 1.0, 1.0, g)]).flatten()
    freq = torch.bincount(draws, minlength=3).float() / draws.numel()
    torch.testing.assert_close(freq, torch.softmax(logits[0], 0), atol=0.03, rtol=0)


def test_scores(critic):
    good = render(CriticOutput("1. fine", [Suggestion("exposure", 1, "slightly")], 82.0, []))
    judgement = Judgement(texts=[good, "no tags"], outputs=[parse(good), parse("no tags")])
    torch.testing.assert_close(judgement.scores, torch.tensor([82.0, float("nan")]), equal_nan=True)
    short = ImageCritic(critic.model, critic.processor, _short(4))
    images = torch.zeros(2, 3, 40, 56, dtype=torch.uint8)
    scores = short.score(images)
    assert scores.shape == (2,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, short.critique(images).scores, equal_nan=True)
    assert short.sample(images).tokens.shape == (2, 4)
    with pytest.raises(ValueError, match="top_p"):
        critic.sample(_images(SIZES[:1]), top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        CriticConfig(top_p=0.0)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        qwen_vl.load_critic(tmp_path / "nope")
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "config.json").write_text("{}")
    (tmp_path / "vlm_lora").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        qwen_vl.load_critic(tmp_path)
    message = str(info.value)
    for name in ("vlm/tokenizer.json", "vlm/model.safetensors", "vlm_lora/adapter_config.json"):
        assert name in message
    assert "vlm/config.json" not in message


def test_round_trip_release_layout(tiny, tmp_path):
    model, processor = tiny
    qwen_vl.save_critic(model, processor, tmp_path)
    loaded, loaded_processor = qwen_vl.load_critic(tmp_path, dtype=torch.float32)
    assert type(loaded_processor).__name__ == "Qwen2_5_VLProcessor"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    images = _images(SIZES[:2])
    before = ImageCritic(model, processor, _short(6)).sample(images)
    after = ImageCritic(loaded, loaded_processor, _short(6)).sample(images)
    assert torch.equal(before.tokens, after.tokens) and before.judgement.texts == after.judgement.texts


def test_round_trip_with_lora(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, processor = tiny
    torch.manual_seed(0)
    peft_model = get_peft_model(
        qwen_vl.build_tiny_critic(seed=0, corpus=tiny_critic_corpus())[0],
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    qwen_vl.save_critic(peft_model, processor, tmp_path)
    assert (tmp_path / "vlm_lora" / "adapter_config.json").is_file()
    loaded, loaded_processor = qwen_vl.load_critic(tmp_path, dtype=torch.float32)
    merged = peft_model.merge_and_unload()
    plain = model.state_dict()
    changed = 0
    for (name, a), (_, b) in zip(merged.state_dict().items(), loaded.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, msg=name)
        changed += not torch.equal(b, plain[name])
    assert changed == 2 * model.config.text_config.num_hidden_layers, "q_proj and v_proj of every layer merged"
    got = ImageCritic(loaded, loaded_processor, _short(6)).sample(_images(SIZES[:2]))
    assert got.tokens.shape[0] == 2


@pytest.mark.slow
def test_compiled_decode_step_no_recompiles(tiny):
    model, processor = tiny
    torch._dynamo.reset()
    compiled = ImageCritic(model, processor, dataclasses.replace(_short(6), compile=True), compile_backend="aot_eager")
    eager = ImageCritic(model, processor, _short(6))
    first, second = _images([(60, 90), (28, 28)], seed=1), _images([(50, 100), (30, 90)], seed=2)
    lengths = [compiled.build_inputs(x, bucket=1)["attention_mask"].sum(1).tolist() for x in (first, second)]
    assert lengths[0] != lengths[1]
    assert compiled.build_inputs(first)["input_ids"].shape == compiled.build_inputs(second)["input_ids"].shape
    assert torch.equal(compiled.sample(first).tokens, eager.sample(first).tokens)
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert torch.equal(compiled.sample(second).tokens, eager.sample(second).tokens)


def test_factory_builds_the_configured_critic(tiny):
    from spc_fast.config import PRESETS, TINY
    from spc_fast.models import factory

    critic = factory.build_critic(CriticConfig(weights=TINY, max_new_tokens=3, device="cpu", dtype="float32"))
    assert critic.model.dtype == torch.float32 and critic.config.max_new_tokens == 3 and critic.attention == "sdpa"
    assert torch.equal(critic.model.lm_head.weight, tiny[0].lm_head.weight), "build_critic draws seed 0's weights"
    assert critic.sample(_images(SIZES[:1])).tokens.shape == (1, 3)
    preset = factory.tiny_critic(seed=1)
    assert preset.config == dataclasses.replace(PRESETS[TINY].critic, weights=TINY)
    assert not torch.equal(preset.model.lm_head.weight, tiny[0].lm_head.weight)
    half = factory.tiny_critic(config=CriticConfig(device="cpu", dtype="bfloat16"))
    assert half.model.dtype == torch.bfloat16 and half.config.max_new_tokens == CriticConfig().max_new_tokens
    with pytest.raises(ValueError, match="critic.weights is not set"):
        factory.build_critic(CriticConfig())
    assert factory.resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert factory.resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert factory.resolve_dtype("float16", torch.device("cpu")) == torch.float16
    assert factory.resolve_device("cpu") == torch.device("cpu")
