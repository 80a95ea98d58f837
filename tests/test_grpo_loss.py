"""The chunked fused-linear GRPO loss (Triton, interpreted on the CPU) against TRL's formula in float64."""

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sm90_compile import compile_in_subprocess

from spc_fast.kernels import (
    dispatch,
    group_advantages,
    grpo_loss,
    grpo_loss_from_logits,
    grpo_loss_reference,
    token_logprobs,
)
from spc_fast.kernels.grpo import grpo_fused_linear, grpo_logits
from spc_fast.kernels.references import token_logprobs_reference

pytestmark = pytest.mark.interpreter

# Per dtype of hidden states / LM head / logits: (loss rtol, gradient atol as a fraction of max |∂|). The
# reference is fed the very values the kernel reads. fp32: accumulation error only. bf16/fp16: the GEMM rounds
# the logits to the input dtype (|Δz| up to 2^-8 |z| for bf16), which moves logp, ρ and the loss, and the
# gradients are rounded to the input dtype too: errors of the eager bf16 loss, not of the kernel.
TOLERANCES = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 3e-2),
}
VOCABS = (1000, 1031, 4099)


@st.composite
def grpo_cases(draw, dtypes=(torch.float32,)):
    return dict(
        batch=draw(st.integers(1, 4)),
        length=draw(st.integers(1, 6)),
        hidden=draw(st.sampled_from([16, 64])),
        vocab=draw(st.sampled_from(VOCABS)),
        dtype=draw(st.sampled_from(dtypes)),
        old=draw(st.booleans()),
        beta_kl=draw(st.sampled_from([0.0, 0.04])),
        epsilon=draw(st.sampled_from([0.2, 0.05])),
        temperature=draw(st.sampled_from([1.0, 0.7])),
        chunk_tokens=draw(st.sampled_from([None, 1, 3])),
        train_head=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_inputs(case: dict) -> dict:
    """Hidden states, LM head and per-token data whose old/ref log-probs sit near the policy's (ratios that both
    stay inside and leave the clip range), a mask with ragged lengths and possibly an empty sequence."""
    gen = torch.Generator().manual_seed(case["seed"])
    batch, length, hidden, vocab = case["batch"], case["length"], case["hidden"], case["vocab"]
    h = torch.randn(batch, length, hidden, generator=gen, dtype=torch.float64)
    weight = torch.randn(vocab, hidden, generator=gen, dtype=torch.float64) * (2.0 / hidden**0.5)
    ids = torch.randint(0, vocab, (batch, length), generator=gen)
    lengths = torch.randint(0, length + 1, (batch,), generator=gen)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    rewards = torch.randn(batch, generator=gen, dtype=torch.float64)
    advantages = group_advantages(rewards, batch) if batch > 1 else rewards
    h, weight = h.to(case["dtype"]), weight.to(case["dtype"])
    logp = token_logprobs_reference(h.double() @ weight.double().T, ids, case["temperature"])
    old = logp + 0.3 * torch.randn(batch, length, generator=gen, dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(batch, length, generator=gen, dtype=torch.float64)
    return dict(
        hidden_states=h,
        lm_head_weight=weight,
        completion_ids=ids,
        advantages=advantages.float(),
        completion_mask=mask,
        old_logp=old.float() if case["old"] else None,
        ref_logp=ref.float() if case["beta_kl"] else None,
        epsilon=case["epsilon"],
        beta_kl=case["beta_kl"],
        temperature=case["temperature"],
    )


def reference_inputs(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k not in ("hidden_states", "lm_head_weight", "chunk_tokens")}


def ours(inputs: dict, train_head: bool, chunk_tokens=None):
    h = inputs["hidden_states"].detach().clone().requires_grad_()
    weight = inputs["lm_head_weight"].detach().clone().requires_grad_(train_head)
    loss = grpo_loss(**{**inputs, "hidden_states": h, "lm_head_weight": weight}, chunk_tokens=chunk_tokens)
    grads = torch.autograd.grad(loss, [h, weight] if train_head else [h])
    return loss.detach(), grads


def truth(inputs: dict, train_head: bool):
    h = inputs["hidden_states"].detach().double().requires_grad_()
    weight = inputs["lm_head_weight"].detach().double().requires_grad_(train_head)
    loss = grpo_loss_reference(h @ weight.T, **reference_inputs(inputs))
    grads = torch.autograd.grad(loss, [h, weight] if train_head else [h])
    return loss.detach(), grads


def assert_matches(got, want, dtype, advantages):
    loss_rtol, grad_atol = TOLERANCES[dtype]
    (loss, grads), (true_loss, true_grads) = got, want
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # terms of both signs cancel in the loss: the absolute floor scales with the largest |A|
    floor = 0.1 * loss_rtol * max(1.0, advantages.abs().max().item())
    torch.testing.assert_close(loss.double(), true_loss, rtol=loss_rtol, atol=floor)
    for grad, true_grad in zip(grads, true_grads, strict=True):
        assert grad.dtype == dtype
        scale = true_grad.abs().max().item()
        torch.testing.assert_close(grad.double(), true_grad, rtol=0, atol=grad_atol * scale + 1e-30)


@settings(max_examples=15)  # ~0.5 s each: one interpreted program per token row
@given(grpo_cases())
def test_matches_trl_formula_in_float64(case):
    inputs = make_inputs(case)
    assert_matches(ours(inputs, case["train_head"], case["chunk_tokens"]), truth(inputs, case["train_head"]),
                   case["dtype"], inputs["advantages"])


@settings(max_examples=15)
@given(grpo_cases(dtypes=(torch.bfloat16, torch.float16)))
def test_low_precision_within_tolerance(case):
    inputs = make_inputs(case)
    assert_matches(ours(inputs, case["train_head"], case["chunk_tokens"]), truth(inputs, case["train_head"]),
                   case["dtype"], inputs["advantages"])


def test_vocabulary_tiles_with_ragged_tail():
    case = dict(batch=2, length=3, hidden=16, vocab=1031, dtype=torch.float32, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=0.7, chunk_tokens=None, train_head=True, seed=11)
    inputs = make_inputs(case)
    with mock.patch("spc_fast.kernels.grpo.INTERPRET_BLOCK_V", 256):  # five tiles, the last of 7 logits
        got = ours(inputs, True)
    assert_matches(got, truth(inputs, True), torch.float32, inputs["advantages"])


def test_from_logits_matches_reference():
    case = dict(batch=3, length=4, hidden=16, vocab=1031, dtype=torch.float32, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=0.7, chunk_tokens=None, train_head=False, seed=12)
    inputs = make_inputs(case)
    for dtype in (torch.float32, torch.bfloat16):
        logits = (inputs["hidden_states"] @ inputs["lm_head_weight"].T).to(dtype).requires_grad_()
        loss = grpo_loss_from_logits(logits, **reference_inputs(inputs))
        (grad,) = torch.autograd.grad(loss, logits)
        logits64 = logits.detach().double().requires_grad_()
        true_loss = grpo_loss_reference(logits64, **reference_inputs(inputs))
        (true_grad,) = torch.autograd.grad(true_loss, logits64)
        # the logits are the kernel's input here: only fp32 compute error, plus the gradient's rounding
        torch.testing.assert_close(loss.double(), true_loss, rtol=2e-5, atol=1e-7)
        atol = (2e-5 if dtype == torch.float32 else 4e-3) * true_grad.abs().max().item()
        torch.testing.assert_close(grad.double(), true_grad, rtol=0, atol=atol)


def test_equal_rewards_give_zero_advantage_and_no_nan():
    rewards = torch.tensor([0.7, 0.7, 0.7, 0.7, 0.1, 0.9, 0.5, 0.5])
    advantages = group_advantages(rewards, 4)
    assert torch.equal(advantages[:4], torch.zeros(4))
    case = dict(batch=4, length=5, hidden=16, vocab=1000, dtype=torch.float32, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=1.0, chunk_tokens=None, train_head=True, seed=13)
    inputs = {**make_inputs(case), "advantages": advantages[:4]}
    got, want = ours(inputs, True), truth(inputs, True)
    assert all(torch.isfinite(g).all() for g in got[1])
    assert_matches(got, want, torch.float32, inputs["advantages"])
    no_kl = {**inputs, "beta_kl": 0.0, "ref_logp": None}
    loss, grads = ours(no_kl, True)
    assert loss.item() == 0.0 and all(torch.count_nonzero(g) == 0 for g in grads)


def test_masked_tokens_contribute_nothing_even_when_not_finite():
    case = dict(batch=2, length=4, hidden=16, vocab=1000, dtype=torch.float32, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=1.0, chunk_tokens=None, train_head=False, seed=14)
    inputs = make_inputs(case)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    padded = {**inputs, "completion_mask": mask,
              "old_logp": inputs["old_logp"].masked_fill(~mask, float("-inf")),
              "ref_logp": inputs["ref_logp"].masked_fill(~mask, float("nan"))}
    loss, (grad,) = ours(padded, False)
    want_loss, (want_grad,) = truth({**inputs, "completion_mask": mask}, False)
    torch.testing.assert_close(loss.double(), want_loss, rtol=2e-5, atol=0)
    torch.testing.assert_close(grad.double(), want_grad, rtol=0, atol=2e-5 * want_grad.abs().max().item())
    assert torch.count_nonzero(grad[~mask]) == 0


def test_chunking_does_not_change_the_result():
    case = dict(batch=3, length=5, hidden=16, vocab=1000, dtype=torch.float32, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=1.0, chunk_tokens=None, train_head=True, seed=15)
    inputs = make_inputs(case)
    whole, chunked = ours(inputs, True, chunk_tokens=None), ours(inputs, True, chunk_tokens=4)
    torch.testing.assert_close(chunked[0], whole[0])
    for a, b in zip(chunked[1], whole[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_no_gradient_work_under_no_grad():
    case = dict(batch=2, length=3, hidden=16, vocab=1000, dtype=torch.float32, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=1.0, chunk_tokens=None, train_head=True, seed=20)
    inputs = make_inputs(case)
    inputs["hidden_states"].requires_grad_()
    inputs["lm_head_weight"].requires_grad_()
    with torch.no_grad(), mock.patch("spc_fast.kernels.grpo.grpo_fused_linear", wraps=grpo_fused_linear) as op:
        loss = grpo_loss(**inputs)
    assert op.call_args.args[-2:] == (False, False)  # grad_hidden, grad_weight
    torch.testing.assert_close(loss.double(), truth(inputs, False)[0], rtol=2e-5, atol=1e-7)


def test_token_logprobs_matches_reference():
    case = dict(batch=2, length=3, hidden=16, vocab=1031, dtype=torch.float32, old=False, beta_kl=0.0,
                epsilon=0.2, temperature=0.7, chunk_tokens=None, train_head=False, seed=16)
    inputs = make_inputs(case)
    h, weight, ids = inputs["hidden_states"], inputs["lm_head_weight"], inputs["completion_ids"]
    got = token_logprobs(h, weight, ids, temperature=0.7, chunk_tokens=2)
    want = token_logprobs_reference(h.double() @ weight.double().T, ids, 0.7)
    assert got.shape == ids.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)
    with dispatch.torch_fallback():
        torch.testing.assert_close(token_logprobs(h, weight, ids, temperature=0.7).double(), want, rtol=0, atol=1e-5)


def test_torch_fallback_matches_kernel():
    case = dict(batch=2, length=4, hidden=16, vocab=1000, dtype=torch.float32, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=1.0, chunk_tokens=None, train_head=True, seed=17)
    inputs = make_inputs(case)
    assert dispatch.use_triton(inputs["hidden_states"])
    kernel = ours(inputs, True)
    with dispatch.torch_fallback():
        fallback = ours(inputs, True)
    assert_matches(fallback, truth(inputs, True), torch.float32, inputs["advantages"])
    assert_matches(kernel, truth(inputs, True), torch.float32, inputs["advantages"])



def test_float32_master_weights_under_bf16_autocast():
    """The training setup: float32 hidden states and LM head under bf16 autocast take bf16 products, as autocast's
    linear would, and return float32 gradients; token_logprobs agrees with the loss's sampling log-probs."""
    case = dict(batch=2, length=3, hidden=16, vocab=300, dtype=torch.float32, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=1.0, chunk_tokens=None, train_head=True, seed=18)
    inputs = make_inputs(case)
    with torch.autocast("cpu", torch.bfloat16):
        loss, grads = ours(inputs, True, chunk_tokens=4)
        logp = token_logprobs(inputs["hidden_states"], inputs["lm_head_weight"], inputs["completion_ids"])
    assert [g.dtype for g in grads] == [torch.float32, torch.float32]
    rounded = {**inputs, "hidden_states": inputs["hidden_states"].bfloat16(),
               "lm_head_weight": inputs["lm_head_weight"].bfloat16()}
    assert_matches((loss, [g.bfloat16() for g in grads]), truth(rounded, True), torch.bfloat16, inputs["advantages"])
    want = token_logprobs_reference(rounded["hidden_states"].double() @ rounded["lm_head_weight"].double().T,
                                    inputs["completion_ids"], 1.0)
    torch.testing.assert_close(logp.double(), want, rtol=0, atol=2e-2)

def test_group_advantages_use_the_sample_std():
    rewards = torch.tensor([1.0, 2.0, 4.0, 0.0, 0.0, 3.0])
    grouped = rewards.numpy().reshape(2, 3)
    expected = (grouped - grouped.mean(1, keepdims=True)) / (grouped.std(1, ddof=1, keepdims=True) + 1e-4)
    np.testing.assert_allclose(group_advantages(rewards, 3).numpy(), expected.ravel(), rtol=1e-6)


@pytest.mark.parametrize(
    "rewards, group_size, message",
    [
        (torch.ones(4), 1, "group_size must be >= 2"),
        (torch.ones(5), 2, "divide the 5 rewards"),
        (torch.ones(2, 2), 2, "1-D float"),
        (torch.ones(4, dtype=torch.int64), 2, "1-D float"),
    ],
)
def test_group_advantages_reject_bad_groups(rewards, group_size, message):
    with pytest.raises(ValueError, match=message):
        group_advantages(rewards, group_size)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(lm_head_weight=torch.zeros(50, 7)), "lm_head_weight must be"),
        (dict(lm_head_weight=torch.zeros(50, 8, dtype=torch.float64)), "lm_head_weight must be"),
        (dict(completion_ids=torch.zeros(2, 3)), "completion_ids must be"),
        (dict(advantages=torch.zeros(3)), "advantages must be"),
        (dict(completion_mask=torch.ones(2, 4)), "completion_mask must"),
        (dict(ref_logp=None), "needs ref_logp"),
        (dict(old_logp=torch.zeros(2, 2)), "old_logp must be"),
        (dict(epsilon=0.0), "epsilon must be"),
        (dict(temperature=-1.0), "temperature must be"),
        (dict(chunk_tokens=0), "chunk_tokens must be"),
    ],
)
def test_bad_input_raises_value_error(change, message):
    inputs = dict(hidden_states=torch.zeros(2, 3, 8), lm_head_weight=torch.zeros(50, 8),
                  completion_ids=torch.zeros(2, 3, dtype=torch.int64), advantages=torch.zeros(2),
                  completion_mask=torch.ones(2, 3), ref_logp=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=message):
        grpo_loss(**{**inputs, **change})


def test_completion_ids_on_another_device_are_refused():
    # the kernel would read the ids through a pointer of the wrong device: refused up front
    hidden, weight = torch.zeros(2, 3, 8), torch.zeros(50, 8)
    ids = torch.zeros(2, 3, dtype=torch.int64, device="meta")
    tokens = dict(advantages=torch.zeros(2), completion_mask=torch.ones(2, 3), beta_kl=0.0)
    with pytest.raises(ValueError, match="completion_ids must be .* on cpu"):
        grpo_loss(hidden, weight, ids, **tokens)
    with pytest.raises(ValueError, match="completion_ids must be .* on cpu"):
        grpo_loss_from_logits(torch.zeros(2, 3, 50), ids, **tokens)
    with pytest.raises(ValueError, match="completion_ids must be .* on cpu"):
        token_logprobs(hidden, weight, ids)


def test_opcheck():
    gen = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(5, 8, generator=gen), torch.randn(37, 8, generator=gen)
    ids = torch.randint(0, 37, (5,), generator=gen)
    per_token = [torch.rand(5, generator=gen) for _ in range(2)]
    logps = [torch.randn(5, generator=gen) - 3 for _ in range(2)]
    torch.library.opcheck(grpo_fused_linear, (hidden, weight, ids, *per_token, *logps, 0.2, 0.04, 1.0, 2, True, True))
    torch.library.opcheck(grpo_logits, (hidden @ weight.T, ids, *per_token, None, logps[1], 0.2, 0.04, 0.7, True))


def test_quick_benchmark_rows(tmp_path):
    import json

    from spc_fast.bench import harness, runner

    def once(fn, device, **_):
        return harness.measure(fn, device, min_reps=1, budget_s=0.0, warmup=False)

    out = tmp_path / "bench.json"
    with mock.patch("spc_fast.bench.grpo_loss.measure", once):
        assert runner.main(["--only", "grpo_loss", "--quick", "--no-copy-bw", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["provider"] for r in rows} == {"eager", "trl", "spc-fast triton-interpret"}
    assert all(r["max_error"] < 1e-5 and r["peak_memory_mib"] is not None for r in rows)


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")  # dispatch.triton_available
def test_compiles_fullgraph_without_recompiles():
    torch._dynamo.reset()
    case = dict(batch=2, length=3, hidden=16, vocab=1000, dtype=torch.float32, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=1.0, chunk_tokens=None, train_head=True, seed=18)
    compiled = torch.compile(grpo_loss, fullgraph=True, backend="aot_eager", dynamic=False)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in (18, 19):
            inputs = make_inputs({**case, "seed": seed})
            h = inputs["hidden_states"].detach().clone().requires_grad_()
            loss = compiled(**{**inputs, "hidden_states": h})
            (grad,) = torch.autograd.grad(loss, h)
            eager, (eager_grad,) = ours(inputs, False)
            torch.testing.assert_close(loss, eager)
            torch.testing.assert_close(grad, eager_grad)


@pytest.mark.slow
def test_kernel_compiles_for_sm90_without_spills():
    signature = {"logits_ptr": None, "grad_ptr": None, "ids_ptr": "*i64", "adv_ptr": "*fp32", "weight_ptr": "*fp32",
                 "old_ptr": "*fp32", "ref_ptr": "*fp32", "loss_ptr": "*fp32", "logp_ptr": "*fp32", "vocab": "i32",
                 "stride_logits": "i64", "stride_grad": "i64", "inv_temperature": "fp32", "clip_low": "fp32",
                 "clip_high": "fp32", "beta_kl": "fp32"}
    specs = []
    for dtype in ("*bf16", "*fp32"):
        for flag in (True, False):
            constexprs = {"HAS_OLD": flag, "HAS_REF": flag, "WRITE_GRAD": flag, "IS_BFLOAT16": dtype == "*bf16",
                          "BLOCK_V": 4096}
            sig = {**signature, "logits_ptr": dtype, "grad_ptr": dtype, **{k: "constexpr" for k in constexprs}}
            specs.append(dict(module="spc_fast.kernels.grpo", kernel="_grpo_rows_kernel", signature=sig,
                              constexprs=constexprs, num_warps=8))
    for usage in compile_in_subprocess(specs):
        assert usage["spill_bytes"] == 0 and usage["registers"] <= 128, usage


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_compiled_kernel_on_cuda(dtype, compiled_kernels):
    case = dict(batch=4, length=37, hidden=256, vocab=32003, dtype=dtype, old=True, beta_kl=0.04, epsilon=0.2,
                temperature=0.9, chunk_tokens=None, train_head=True, seed=21)
    inputs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in make_inputs(case).items()}
    with compiled_kernels("_grpo_rows_kernel"):
        got = ours(inputs, True, chunk_tokens=64)
    assert_matches(got, truth(inputs, True), dtype, inputs["advantages"])


@pytest.mark.gpu
def test_peak_memory_is_a_chunk_of_logits_on_cuda(compiled_kernels):
    case = dict(batch=2, length=512, hidden=512, vocab=151936, dtype=torch.bfloat16, old=True, beta_kl=0.04,
                epsilon=0.2, temperature=1.0, chunk_tokens=None, train_head=False, seed=22)
    inputs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in make_inputs(case).items()}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with compiled_kernels("_grpo_rows_kernel"):
        ours(inputs, False, chunk_tokens=128)
    peak = torch.cuda.max_memory_allocated() - base
    full_logits = 2 * 512 * 151936 * 2  # bf16 logits of every token
    assert peak < full_logits / 3
