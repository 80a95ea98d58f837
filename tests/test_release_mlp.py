"""The release's feed-forward activation (SPEC.md §6): `x · σ(1.702 x)` in place of tanh-GELU, switched in place
on the Qwen-Image DiT. References: the formula written out, a hand-built feed-forward on the model's own weights,
and, where DiffSynth is installed, DiffSynth's own `QwenImageDiT` through `model_fn_qwen_image`."""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch
from torch import nn

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from diffusers.models.attention import FeedForward  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

from spc_fast.artist import (  # noqa: E402
    SigmoidGELU,
    add_lora,
    merge_lora,
    pack_latents,
    predict_velocity,
    unpack_latents,
    use_real_rope,
    use_release_mlp,
)
from spc_fast.artist.mlp import uses_release_mlp  # noqa: E402
from spc_fast.config import ArtistConfig, PipelineConfig, from_dict, override, to_dict  # noqa: E402
from spc_fast.models import factory  # noqa: E402
from spc_fast.models.qwen_image import TINY_DIT_CONFIG, tiny_artist_components  # noqa: E402

H, W = 8, 12  # noisy latents [16, 8, 12]: 4 x 6 tokens
EDIT_H, EDIT_W = 8, 16  # the source (edit image) latents: 4 x 8 tokens, after the noisy ones


@pytest.fixture(scope="module")
def dit():
    return tiny_artist_components(0)[0]


def release_ff(ff: FeedForward, x: torch.Tensor) -> torch.Tensor:
    """The release's feed-forward from the module's weights: W2 · a(W1 x + b1) + b2, a(h) = h / (1 + e^(−1.702 h))."""
    proj, out = ff.net[0].proj, ff.net[2]
    hidden = x @ proj.weight.T + proj.bias
    return (hidden / (1 + torch.exp(-1.702 * hidden))) @ out.weight.T + out.bias


def inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        latents=torch.randn(1, 16, H, W, generator=g),
        edit=torch.randn(1, 16, EDIT_H, EDIT_W, generator=g),
        h_c=torch.randn(1, 7, TINY_DIT_CONFIG["joint_attention_dim"], generator=g),
        timestep=torch.tensor([700.0]),  # the scheduler's timestep (1000 σ)
    )


def our_velocity(transformer, x: dict) -> torch.Tensor:
    """Our DiT's velocity in DiffSynth's layout: [1, 16, H, W] latents, timestep / 1000, edit tokens appended."""
    shapes = [[(1, H // 2, W // 2), (1, EDIT_H // 2, EDIT_W // 2)]]
    tokens = predict_velocity(
        transformer, pack_latents(x["latents"]), pack_latents(x["edit"]), x["timestep"] / 1000, x["h_c"], None, shapes
    )
    return unpack_latents(tokens, H, W)


def test_activation_is_x_sigmoid_1702x():
    x = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    act = SigmoidGELU(nn.Identity())
    torch.testing.assert_close(act(x), x / (1 + torch.exp(-1.702 * x)), atol=1e-15, rtol=1e-13)
    assert act(torch.tensor([1.0], dtype=torch.float64)).item() == pytest.approx(1 / (1 + math.exp(-1.702)), abs=1e-15)
    x32 = x.float()
    assert torch.equal(act(x32), x32 * torch.sigmoid(1.702 * x32))  # DiffSynth's expression, bit for bit
    tanh_gelu = torch.nn.functional.gelu(x, approximate="tanh")
    assert 0.01 < (act(x) - tanh_gelu).abs().max() < 0.03  # a different function from Qwen's tanh-GELU


def test_switch_keeps_weights_keys_and_is_idempotent(dit):
    model = copy.deepcopy(dit)
    before = model.state_dict()
    assert not uses_release_mlp(model)
    assert use_release_mlp(model) is model
    switched = [ff.net[0] for ff in model.modules() if isinstance(ff, FeedForward)]
    assert len(switched) == 2 * TINY_DIT_CONFIG["num_layers"] and uses_release_mlp(model)
    assert all(isinstance(act, SigmoidGELU) for act in switched)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert "transformer_blocks.0.img_mlp.net.0.proj.weight" in after
    use_release_mlp(model)
    assert [ff.net[0] for ff in model.modules() if isinstance(ff, FeedForward)] == switched


def test_every_feed_forward_equals_the_hand_built_one(dit):
    model = use_release_mlp(copy.deepcopy(dit))
    x = torch.randn(2, 5, model.inner_dim, generator=torch.Generator().manual_seed(1))
    for block in model.transformer_blocks:
        for ff in (block.img_mlp, block.txt_mlp):
            with torch.no_grad():
                torch.testing.assert_close(ff(x), release_ff(ff, x), atol=1e-6, rtol=0)


def test_dit_equals_the_hand_built_release_dit_and_differs_from_tanh_gelu(dit):
    """The unmodified diffusers DiT with every feed-forward's output replaced by `release_ff` is the reference."""
    reference = use_real_rope(copy.deepcopy(dit))
    for ff in reference.modules():
        if isinstance(ff, FeedForward):
            ff.register_forward_hook(lambda module, args, _out: release_ff(module, args[0]))
    ours = use_release_mlp(use_real_rope(copy.deepcopy(dit)))
    tanh = use_real_rope(copy.deepcopy(dit))
    x = inputs()
    with torch.no_grad():
        v, v_ref, v_tanh = our_velocity(ours, x), our_velocity(reference, x), our_velocity(tanh, x)
    torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=0)
    relative = ((v - v_tanh).norm() / v.norm()).item()
    assert 1e-5 < relative < 1e-2, relative  # small, as between the two activations, yet far above float32 noise


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")  # two adapters, on purpose
def test_lora_layers_survive_the_switch(dit):
    model = add_lora(copy.deepcopy(dit), "attn")  # the release's LoRA (attention projections) before the switch
    model.add_adapter(
        LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=["net.0.proj"]), adapter_name="ff"
    )
    keys = list(model.state_dict())
    use_release_mlp(model)
    assert list(model.state_dict()) == keys
    proj = model.transformer_blocks[0].img_mlp.net[0].proj
    assert isinstance(proj, LoraLayer)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer) and "ff" in module.lora_B:
                module.lora_B["ff"].weight.copy_(0.1 * torch.randn(module.lora_B["ff"].weight.shape, generator=g))
    model.set_adapter("ff")
    x = torch.randn(1, 5, model.inner_dim, generator=g)
    ff = model.transformer_blocks[0].img_mlp
    with torch.no_grad():
        base = release_ff(dit.transformer_blocks[0].img_mlp, x)
        adapted = ff(x)
        assert (adapted - base).abs().max() > 1e-3  # the adapter on the kept projection is live
        merge_lora(model, "ff")  # folds into the projection's weight, which release_ff reads
        torch.testing.assert_close(adapted, release_ff(ff, x), atol=1e-5, rtol=0)


def test_compiles_fullgraph(dit):
    model = use_release_mlp(use_real_rope(copy.deepcopy(dit)))
    x = inputs(3)
    with torch.no_grad():
        eager = our_velocity(model, x)
        torch._dynamo.reset()
        counters = torch._dynamo.utils.counters
        counters.clear()
        compiled = our_velocity(torch.compile(model, fullgraph=True, backend="aot_eager"), x)
    assert not counters["graph_break"]
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="found no feed-forward.*QwenImageTransformer2DModel"):
        use_release_mlp(nn.Linear(4, 4))
    exact = nn.Sequential(FeedForward(8, activation_fn="gelu"))
    with pytest.raises(ValueError, match=r"0.net.0 is GELU\(approximate='none'\), not the tanh-GELU"):
        use_release_mlp(exact)


def test_config_option_reaches_the_built_artist():
    assert ArtistConfig().release_mlp is False
    config = override(PipelineConfig(), ["artist.release_mlp=true"])
    assert config.artist.release_mlp is True and from_dict(PipelineConfig, to_dict(config)) == config
    release = factory.tiny_artist(config=ArtistConfig(release_mlp=True, device="cpu", dtype="float32"))
    default = factory.tiny_artist()
    assert uses_release_mlp(release.transformer) and not uses_release_mlp(default.transformer)


# ---- DiffSynth's own DiT (the release's implementation), when it is installed ----


def diffsynth_tiny_dit(state_dict: dict[str, torch.Tensor]):
    """DiffSynth's `QwenImageDiT` at the tiny config's sizes (its constructor fixes the full sizes, so its parts are
    built at ours), filled with our weights under the same names."""
    from diffsynth.models import qwen_image_dit as ds
    from diffsynth.models.general_modules import AdaLayerNorm, RMSNorm, TimestepEmbeddings

    cfg = TINY_DIT_CONFIG
    heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
    dim = heads * head_dim
    with torch.device("meta"):
        model = ds.QwenImageDiT(num_layers=0)
    model.pos_embed = ds.QwenEmbedRope(theta=10000, axes_dim=list(cfg["axes_dims_rope"]), scale_rope=True)
    model.time_text_embed = TimestepEmbeddings(256, dim, diffusers_compatible_format=True, scale=1000)
    model.txt_norm = RMSNorm(cfg["joint_attention_dim"], eps=1e-6)
    model.img_in = nn.Linear(cfg["in_channels"], dim)
    model.txt_in = nn.Linear(cfg["joint_attention_dim"], dim)
    model.transformer_blocks = nn.ModuleList(
        ds.QwenImageTransformerBlock(dim, heads, head_dim) for _ in range(cfg["num_layers"])
    )
    model.norm_out = AdaLayerNorm(dim, single=True)
    model.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * cfg["out_channels"])
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@pytest.mark.skipif(importlib.util.find_spec("diffsynth") is None, reason="DiffSynth-Studio is not installed")
@pytest.mark.parametrize("timestep", [700.0, 125.0])
def test_equals_diffsynth_model_fn(dit, timestep):
    from diffsynth.pipelines.qwen_image import model_fn_qwen_image

    reference = diffsynth_tiny_dit(dit.state_dict())
    ours = use_release_mlp(use_real_rope(copy.deepcopy(dit)))
    x = dict(inputs(4), timestep=torch.tensor([timestep]))
    with torch.no_grad():
        expected = model_fn_qwen_image(
            dit=reference,
            latents=x["latents"],
            timestep=x["timestep"],
            prompt_emb=x["h_c"],
            prompt_emb_mask=torch.ones(1, x["h_c"].shape[1], dtype=torch.long),
            height=8 * H,
            width=8 * W,
            edit_latents=x["edit"],
        )
        v, v_tanh = our_velocity(ours, x), our_velocity(use_real_rope(copy.deepcopy(dit)), x)
    torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)
    assert (v_tanh - expected).abs().max() > 1e-4  # diffusers' own activation is not the release's


def test_release_mlp_flag_maps_onto_the_artist_config():
    from spc_fast import cli

    parser = cli.build_parser()
    models = ["enhance", "in.jpg", "-o", "out.jpg", "--critic", "tiny", "--artist", "tiny"]
    assert cli.pipeline_config(parser.parse_args(models)).artist.release_mlp is False
    assert cli.pipeline_config(parser.parse_args([*models, "--release-mlp"])).artist.release_mlp is True
