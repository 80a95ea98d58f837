"""The fused DiffusionNFT loss (Triton, interpreted on the CPU) against the float64 reference of the public code."""

import contextlib
import subprocess
import sys
from unittest import mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sm90_compile import compile_in_subprocess

from spc_fast import rl_losses
from spc_fast.kernels import dispatch, grid, nft, nft_loss, nft_loss_reference, optimality_from_advantage
from spc_fast.kernels.nft import LaunchConfig, NFTLossFunction, nft_loss_backward, nft_loss_forward

pytestmark = pytest.mark.interpreter

# Per input dtype: (loss rtol, gradient rtol, gradient atol as a fraction of max |∂|, absolute gradient floor).
# The reference is fed the very values the kernel reads, so the loss keeps float32 accumulation error at every
# input precision. The gradient is stored in the input dtype: a unit roundoff (2^-8 bf16, 2^-11 fp16) for the
# adaptive form, two for the plain one (written for dLoss/dloss = 1 in forward, rounded again when scaled in
# backward); fp16 gradients of a t = 0.001 sample are subnormal, half a subnormal step is 2^-25.
TOLERANCES = {
    torch.float64: (2e-6, 2e-6, 1e-6, 0.0),
    torch.float32: (2e-6, 2e-6, 1e-6, 0.0),
    torch.float16: (2e-6, 1.2e-3, 1e-5, 2**-25),
    torch.bfloat16: (2e-6, 8e-3, 1e-5, 0.0),
}
TRAILING = [(), (1,), (7,), (3, 5), (4, 33), (2, 3, 5, 7), (16, 9, 11)]  # odd element counts, N = 1 included
SMALL_CONFIG = LaunchConfig(block=16, chunks=3, num_warps=1)  # many programs per sample, loops, ragged tails


@st.composite
def nft_cases(draw, dtypes=(torch.float32, torch.float64)):
    batch = draw(st.integers(1, 3))
    shape = (batch, *draw(st.sampled_from(TRAILING)))
    times = st.one_of(st.sampled_from([0.001, 0.999]), st.floats(0.001, 0.999))
    optimality = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
    return dict(
        shape=shape,
        dtype=draw(st.sampled_from(dtypes)),
        t=[draw(times) for _ in range(batch)],
        r=[draw(optimality) for _ in range(batch)],
        beta=draw(st.sampled_from([0.1, 1.0])),
        adaptive=draw(st.booleans()),
        kl_weight=draw(st.sampled_from([0.0, 0.5])),
        close=draw(st.booleans()),  # v_θ near v_old, as in training
        seed=draw(st.integers(0, 2**31 - 1)),
        small_blocks=draw(st.booleans()),
    )


def make_inputs(case: dict) -> dict:
    gen = torch.Generator().manual_seed(case["seed"])
    shape, dtype = case["shape"], case["dtype"]
    v_old = torch.randn(shape, generator=gen, dtype=torch.float64)
    spread = 0.01 if case["close"] else 1.0
    v_theta = v_old + spread * torch.randn(shape, generator=gen, dtype=torch.float64)
    v_target = torch.randn(shape, generator=gen, dtype=torch.float64)
    v_ref = v_old + 0.1 * torch.randn(shape, generator=gen, dtype=torch.float64)
    return dict(
        v_theta=v_theta.to(dtype),
        v_old=v_old.to(dtype),
        v_target=v_target.to(dtype),
        v_ref=v_ref.to(dtype),
        t=torch.tensor(case["t"]),
        r=torch.tensor(case["r"]),
        beta=case["beta"],
        adaptive=case["adaptive"],
        kl_weight=case["kl_weight"],
    )


def loss_and_grad(fn, inputs: dict, weights: torch.Tensor, dtype=None):
    """Per-sample loss and ∂(Σ_b weights_b loss_b)/∂v_θ (arbitrary per-sample upstream gradients)."""
    v_theta = inputs["v_theta"].detach().clone()
    v_theta = (v_theta if dtype is None else v_theta.to(dtype)).requires_grad_()
    loss = fn(**{**inputs, "v_theta": v_theta})
    (grad,) = torch.autograd.grad((loss * weights.to(loss.dtype)).sum(), v_theta)
    return loss.detach(), grad


def assert_close_to_reference(inputs: dict, dtype: torch.dtype, small_blocks: bool = False) -> None:
    weights = torch.linspace(0.5, 2.0, inputs["v_theta"].shape[0])
    patch = mock.patch("spc_fast.kernels.nft.launch_config", lambda *a: SMALL_CONFIG)
    with patch if small_blocks else contextlib.nullcontext():
        loss, grad = loss_and_grad(nft_loss, inputs, weights)
    truth, truth_grad = loss_and_grad(nft_loss_reference, inputs, weights, torch.float64)
    loss_rtol, grad_rtol, grad_atol, grad_floor = TOLERANCES[dtype]
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss.double(), truth, rtol=loss_rtol, atol=1e-30)
    atol = grad_atol * truth_grad.abs().max().item() + grad_floor + 1e-30
    torch.testing.assert_close(grad.double(), truth_grad, rtol=grad_rtol, atol=atol)


@given(nft_cases())
def test_matches_float64_reference(case):
    assert_close_to_reference(make_inputs(case), case["dtype"], case["small_blocks"])


@given(nft_cases(dtypes=(torch.bfloat16, torch.float16)))
def test_low_precision_inputs_within_tolerance(case):
    assert_close_to_reference(make_inputs(case), case["dtype"], case["small_blocks"])


def test_finalize_loops_over_many_partials():
    case = dict(shape=(1, 2101), dtype=torch.float32, t=[0.3], r=[0.2], beta=0.1, adaptive=True,
                kl_weight=0.5, close=False, seed=3)
    inputs = make_inputs(case)
    with mock.patch("spc_fast.kernels.nft.launch_config", lambda *a: LaunchConfig(8, 1, 1)):
        loss, grad = loss_and_grad(nft_loss, inputs, torch.ones(1))  # 263 partials: two finalize tiles
    truth, truth_grad = loss_and_grad(nft_loss_reference, inputs, torch.ones(1), torch.float64)
    torch.testing.assert_close(loss.double(), truth, rtol=2e-6, atol=0)
    torch.testing.assert_close(grad.double(), truth_grad, rtol=2e-6, atol=1e-6 * truth_grad.abs().max().item())


def test_reference_x0_space_form_does_not_depend_on_x0():
    case = dict(shape=(3, 5, 7), dtype=torch.float64, t=[0.001, 0.5, 0.999], r=[0.0, 0.5, 1.0], beta=0.1,
                adaptive=True, kl_weight=0.0, close=True, seed=1)
    inputs = make_inputs(case)
    x0 = torch.randn(case["shape"], dtype=torch.float64)
    torch.testing.assert_close(nft_loss_reference(**inputs, x0=x0), nft_loss_reference(**inputs), rtol=1e-9, atol=0)


@pytest.mark.parametrize("kl_weight", [0.0, 0.5])
def test_reference_gradcheck(kl_weight):
    # the plain form only: the adaptive weights are detached by definition, so finite differences (which move
    # them) do not give the gradient the official code trains with
    case = dict(shape=(2, 3, 4), dtype=torch.float64, t=[0.2, 0.9], r=[0.3, 1.0], beta=0.1, adaptive=False,
                kl_weight=kl_weight, close=False, seed=2)
    inputs = make_inputs(case)
    v_theta = inputs.pop("v_theta").requires_grad_()
    assert torch.autograd.gradcheck(lambda v: nft_loss_reference(v, **inputs), (v_theta,))


def test_forward_without_grad_writes_no_gradient():
    case = dict(shape=(2, 9), dtype=torch.float32, t=[0.4, 0.6], r=[0.0, 1.0], beta=1.0, adaptive=False,
                kl_weight=0.0, close=False, seed=4)
    inputs = make_inputs(case)
    inputs["v_theta"].requires_grad_()
    with torch.no_grad(), mock.patch("spc_fast.kernels.nft.nft_loss_forward", wraps=nft_loss_forward) as forward:
        loss = nft_loss(**inputs)
    assert forward.call_args.args[-1] is False  # fuse_grad: no gradient pass under no_grad
    flat = {k: v.reshape(2, -1) if isinstance(v, torch.Tensor) and v.dim() > 1 else v for k, v in inputs.items()}
    out = nft_loss_forward(flat["v_theta"], flat["v_old"], flat["v_target"], None, flat["t"], flat["r"], 1.0, 0.0,
                           False, False)
    assert out[2].numel() == 0
    torch.testing.assert_close(loss, out[0])
    torch.testing.assert_close(loss.double(), nft_loss_reference(**inputs), rtol=2e-6, atol=0)


def test_torch_fallback_matches_kernel():
    case = dict(shape=(3, 4, 5), dtype=torch.float32, t=[0.1, 0.5, 0.9], r=[0.0, 0.4, 1.0], beta=0.1,
                adaptive=True, kl_weight=0.5, close=True, seed=5)
    inputs = make_inputs(case)
    weights = torch.tensor([1.0, 0.5, 2.0])
    assert dispatch.use_triton(inputs["v_theta"])
    loss, grad = loss_and_grad(nft_loss, inputs, weights)
    with dispatch.torch_fallback():
        assert not dispatch.use_triton(inputs["v_theta"])
        fallback, fallback_grad = loss_and_grad(nft_loss, inputs, weights)
    assert fallback.dtype == torch.float32
    torch.testing.assert_close(fallback, loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(fallback_grad, grad, rtol=1e-5, atol=1e-6 * grad.abs().max().item())


def test_backward_through_a_tiny_qwen_image_transformer():
    from diffusers import QwenImageTransformer2DModel

    def build(seed):
        torch.manual_seed(seed)
        return QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
        )

    model, old_model = build(0), build(1).requires_grad_(False)
    batch, h, w = 2, 4, 6  # packed latents: (B, h·w, 4 channels × 2 × 2)
    gen = torch.Generator().manual_seed(7)
    x0 = torch.randn(batch, h * w, 16, generator=gen)
    noise = torch.randn(batch, h * w, 16, generator=gen)
    t = torch.tensor([0.25, 0.8])
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
    args = dict(
        hidden_states=x_t, encoder_hidden_states=torch.randn(batch, 5, 32, generator=gen),
        encoder_hidden_states_mask=torch.ones(batch, 5), timestep=t, img_shapes=[[(1, h, w)]] * batch,
        return_dict=False,
    )
    with torch.no_grad():
        v_old = old_model(**args)[0]
    r = optimality_from_advantage(torch.tensor([2.0, -1.0]))

    def param_grads(loss_fn):
        model.zero_grad()
        v_theta = model(**args)[0]
        loss_fn(v_theta, v_old, noise - x0, t, r, 0.1, True, v_old, 0.1).mean().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    assert dispatch.use_triton(x0)
    ours, truth = param_grads(nft_loss), param_grads(nft_loss_reference)
    assert len(ours) == len(truth) > 0
    for got, want in zip(ours, truth, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * want.abs().max().item() + 1e-12)


def test_optimality_from_advantage():
    a = torch.tensor([-10.0, -5.0, -2.5, 0.0, 2.5, 5.0, 10.0])
    torch.testing.assert_close(optimality_from_advantage(a), torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(v_old=torch.zeros(2, 4)), "v_old must be"),
        (dict(v_target=torch.zeros(2, 3, dtype=torch.int32)), "v_target must be"),
        (dict(t=torch.ones(3)), "t must be"),
        (dict(r=torch.ones(2, 1)), "r must be"),
        (dict(beta=0.0), "beta must be"),
        (dict(beta=torch.tensor(0.1)), "beta must be"),
        (dict(kl_weight=0.1), "needs v_ref"),
        (dict(v_theta=torch.zeros(0, 3)), "non-empty"),
    ],
)
def test_bad_input_raises_value_error(change, message):
    inputs = dict(v_theta=torch.zeros(2, 3), v_old=torch.zeros(2, 3), v_target=torch.zeros(2, 3), t=0.5, r=0.5,
                  beta=0.1)
    with pytest.raises(ValueError, match=message):
        nft_loss(**{**inputs, **change})


def test_opcheck():
    v = [torch.randn(2, 37) for _ in range(4)]
    t, r = torch.tensor([0.2, 0.7]), torch.tensor([0.0, 0.6])
    for adaptive, fuse in ((True, False), (False, True)):
        torch.library.opcheck(nft_loss_forward, (*v, t, r, 0.1, 0.5, adaptive, fuse))
    scales = torch.tensor([[0.5, 0.25], [1.5, 2.0]])
    torch.library.opcheck(nft_loss_backward, (torch.ones(2), *v, r, scales, 0.1, 0.5, True))


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")  # dispatch.triton_available
@pytest.mark.parametrize("adaptive", [True, False])
def test_compiles_fullgraph_without_recompiles(adaptive):
    torch._dynamo.reset()
    case = dict(shape=(2, 3, 5), dtype=torch.float32, t=[0.3, 0.6], r=[0.1, 0.9], beta=0.1, adaptive=adaptive,
                kl_weight=0.5, close=True, seed=6)
    inputs = make_inputs(case)
    compiled = torch.compile(nft_loss, fullgraph=True, backend="aot_eager", dynamic=False)
    weights = torch.ones(2)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in (6, 7):
            inputs = make_inputs({**case, "seed": seed})
            loss, grad = loss_and_grad(compiled, inputs, weights)
            eager, eager_grad = loss_and_grad(nft_loss, inputs, weights)
            torch.testing.assert_close(loss, eager)
            torch.testing.assert_close(grad, eager_grad)


def test_importing_the_package_does_not_import_triton():
    code = ("import sys, spc_fast.kernels as k, spc_fast.rl_losses, spc_fast.photometric, spc_fast.retouch; "
            "k.nft_loss; print('triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_quick_benchmark_rows(tmp_path):
    import json

    from spc_fast.bench import harness, runner

    def once(fn, device, **_):
        return harness.measure(fn, device, min_reps=1, budget_s=0.0, warmup=False)

    out = tmp_path / "bench.json"
    with mock.patch("spc_fast.bench.nft_loss.measure", once):
        assert runner.main(["--only", "nft_loss", "--quick", "--no-copy-bw", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["provider"] for r in rows} == {"diffusionnft-eager", "spc-fast torch", "spc-fast triton-interpret"}
    assert all(r["max_error"] < 1e-5 for r in rows)
    fused = next(r for r in rows if r["provider"] == "spc-fast triton-interpret")
    assert fused["bytes_moved"] == 7 * 2 * 16 * 32 * 32 * 4 and "diffusionnft-eager" in fused["speedup_vs"]


def test_public_names_are_exported():
    import spc_fast.kernels as kernels

    for name in ("nft_loss", "grpo_loss", "grpo_loss_from_logits", "token_logprobs", "group_advantages",
                 "optimality_from_advantage", "nft_loss_reference", "grpo_loss_reference"):
        assert callable(getattr(kernels, name))
    assert kernels.nft_loss.__module__ == "spc_fast.kernels.nft_entry"  # beside its kernel, not in rl_losses
    for name in kernels.__all__:  # rl_losses, the module the README documents, re-exports every op
        assert getattr(rl_losses, name) is getattr(kernels, name)
    assert rl_losses.token_logprobs_reference is kernels.references.token_logprobs_reference
    assert rl_losses.A_MAX == 5.0 and rl_losses.GROUP_STD_EPS == 1e-4
    assert issubclass(NFTLossFunction, torch.autograd.Function)


@pytest.mark.parametrize("multiprocessors", [132, 108])  # H100/H200, A100
@pytest.mark.parametrize("batch, num_elements", [(1, 16 * 128 * 128), (8, 16 * 128 * 128), (64, 16 * 128 * 128),
                                                 (4, 64 * 256 * 256)])
def test_launch_config_fills_the_device(monkeypatch, multiprocessors, batch, num_elements):
    monkeypatch.setattr(nft, "interpreting", lambda: False)
    monkeypatch.setattr(grid, "multiprocessor_count", lambda device: multiprocessors)
    config = nft.launch_config(batch, num_elements, torch.device("cuda", 0))
    assert config.block == nft.GPU_BLOCK and 1 <= config.chunks <= nft.MAX_CHUNKS
    programs = batch * -(-num_elements // (config.block * config.chunks))
    target = nft.PROGRAMS_PER_SM * multiprocessors
    blocks = batch * -(-num_elements // config.block)  # programs of one block each: the most there can be
    # rounding the chunks per program up gives at most the target, and never less than half of it
    assert min(target, blocks) // 2 <= programs <= target + batch, (programs, target)


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_spills():
    def pass_spec(dtype, **flags):
        pointers = ("theta_ptr", "old_ptr", "target_ptr", "ref_ptr", "r_ptr", "scale_ptr", "grad_out_ptr", "grad_ptr",
                    "partial_ptr")
        signature = {name: "*fp32" if name in ("r_ptr", "scale_ptr", "grad_out_ptr", "partial_ptr") else dtype
                     for name in pointers}
        signature.update(num_elements="i32", elements_per_program="i32", num_chunks="i32", beta="fp32",
                         kl_weight="fp32")
        constexprs = {"HAS_REF": False, "ADAPTIVE": False, "HAS_GRAD_OUT": False, "WRITE_SUMS": False,
                      "WRITE_GRAD": False, **flags, "IS_BFLOAT16": dtype == "*bf16", "BLOCK": 2048}
        signature.update({name: "constexpr" for name in constexprs})
        return dict(module="spc_fast.kernels.nft", kernel="_nft_pass_kernel", signature=signature,
                    constexprs=constexprs, num_warps=8)

    finalize = {"partial_ptr": "*fp32", "t_ptr": "*fp32", "r_ptr": "*fp32", "loss_ptr": "*fp32",
                "scale_ptr": "*fp32", "num_partials": "i32", "num_elements": "i32", "beta": "fp32",
                "kl_weight": "fp32", "ADAPTIVE": "constexpr", "BLOCK": "constexpr"}
    specs = [
        pass_spec(dtype, **flags)
        for dtype in ("*bf16", "*fp32")
        for flags in (dict(ADAPTIVE=True, WRITE_SUMS=True), dict(WRITE_SUMS=True, WRITE_GRAD=True, HAS_REF=True),
                      dict(ADAPTIVE=True, HAS_GRAD_OUT=True, WRITE_GRAD=True, HAS_REF=True))
    ] + [dict(module="spc_fast.kernels.nft", kernel="_nft_finalize_kernel", signature=finalize,
              constexprs={"ADAPTIVE": adaptive, "BLOCK": 256}, num_warps=4) for adaptive in (True, False)]
    for usage in compile_in_subprocess(specs):
        assert usage["spill_bytes"] == 0 and usage["registers"] <= 128, usage


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("adaptive", [True, False])
def test_compiled_kernel_on_cuda(dtype, adaptive, compiled_kernels):
    case = dict(shape=(3, 16, 33, 47), dtype=dtype, t=[0.001, 0.5, 0.999], r=[0.0, 0.3, 1.0], beta=0.1,
                adaptive=adaptive, kl_weight=0.5, close=True, seed=9)
    inputs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in make_inputs(case).items()}
    weights = torch.tensor([1.0, 0.5, 2.0], device="cuda")
    with compiled_kernels("_nft_pass_kernel", "_nft_finalize_kernel"):
        loss, grad = loss_and_grad(nft_loss, inputs, weights)
    truth, truth_grad = loss_and_grad(nft_loss_reference, inputs, weights, torch.float64)
    loss_rtol, grad_rtol, grad_atol, grad_floor = TOLERANCES[dtype]
    torch.testing.assert_close(loss.double(), truth, rtol=10 * loss_rtol, atol=0)
    torch.testing.assert_close(grad.double(), truth_grad, rtol=grad_rtol,
                               atol=grad_atol * truth_grad.abs().max().item() + grad_floor)


@pytest.mark.gpu
def test_inductor_compile_on_cuda(compiled_kernels):
    torch._dynamo.reset()
    case = dict(shape=(2, 16, 32, 32), dtype=torch.bfloat16, t=[0.3, 0.6], r=[0.1, 0.9], beta=0.1, adaptive=True,
                kl_weight=0.0, close=True, seed=6)
    inputs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in make_inputs(case).items()}
    compiled = torch.compile(nft_loss, fullgraph=True)
    with compiled_kernels("_nft_pass_kernel", "_nft_finalize_kernel"):
        loss, grad = loss_and_grad(compiled, inputs, torch.ones(2, device="cuda"))
    eager, eager_grad = loss_and_grad(nft_loss, inputs, torch.ones(2, device="cuda"))
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(grad, eager_grad)
