"""The artist reward's trusted path (spc_fast/rewards/artist.py): suggestions as a dense tensor, validation once
at the boundary, and r_PA compiled with torch.compile(fullgraph=True) without graph breaks or recompiles."""

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spc_fast import retouch, rewards
from spc_fast.critic.vocabulary import (
    CONTRAST,
    EXPOSURE,
    REMOVE_BLUR,
    REMOVE_NOISE,
    SATURATION,
    TEMPERATURE,
    TONE_OPS,
    Suggestion,
)


def compliance_reference(a_x, a_edit, suggestions, tau=rewards.DEFAULT_TAU) -> list[float]:
    """Eq. 8-9 written out per suggestion: the mean of c_i over an image's tone/colour suggestions, 1 if none."""
    delta = rewards.to_mired(a_edit.double()) - rewards.to_mired(a_x.double())
    out = []
    for b, image_suggestions in enumerate(suggestions):
        hits = [
            float(s.direction * float(delta[b, TONE_OPS.index(s.op)]) > tau[TONE_OPS.index(s.op)])
            for s in image_suggestions
            if s.op in TONE_OPS
        ]
        out.append(sum(hits) / len(hits) if hits else 1.0)
    return out


def test_suggestion_tensor_counts_each_direction_of_each_tone_op():
    suggestions = [
        [Suggestion(EXPOSURE, 1), Suggestion(EXPOSURE, 1, "slightly"), Suggestion(TEMPERATURE, -1)],
        [Suggestion(REMOVE_BLUR, 1), Suggestion(CONTRAST, -1), Suggestion(CONTRAST, 1)],
        [],
    ]
    counts = rewards.suggestion_tensor(suggestions)
    expected = torch.zeros(3, 4, 2)
    expected[0, 0, 0] = 2  # a repeated suggestion counts each time
    expected[0, 3, 1] = 1
    expected[1, 1, 0] = expected[1, 1, 1] = 1  # restoration ops are not counted
    assert counts.dtype == torch.float32 and torch.equal(counts, expected)
    assert rewards.suggestion_tensor([]).shape == (0, 4, 2)


def test_suggestion_tensor_rejects_a_direction_that_is_not_a_sign():
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        rewards.suggestion_tensor([[Suggestion(SATURATION, 0)]])


suggestion_st = st.builds(
    Suggestion, st.sampled_from([*TONE_OPS, REMOVE_NOISE]), st.sampled_from([1, -1]), st.just("moderately")
)
change_st = st.lists(st.sampled_from([-8.0, -1.0, -0.5, 0.0, 0.5, 1.0, 5.0, 8.0]), min_size=4, max_size=4)


@given(st.lists(st.tuples(change_st, st.lists(suggestion_st, max_size=6)), min_size=1, max_size=5))
def test_compliance_from_the_tensor_equals_the_per_suggestion_definition(cases):
    a_x = torch.tensor([[50.0, 20.0, 30.0, 5000.0]] * len(cases), dtype=torch.float64)
    changes = torch.tensor([c for c, _ in cases], dtype=torch.float64)
    a_edit = a_x + changes * torch.tensor([1.0, 1.0, 1.0, -20.0], dtype=torch.float64)  # cct: -20 K ~ +0.8 mired
    suggestions = [s for _, s in cases]
    from_tensor = rewards.compliance_from_attributes(a_x, a_edit, rewards.suggestion_tensor(suggestions))
    from_lists = rewards.compliance_from_attributes(a_x, a_edit, suggestions)
    assert torch.equal(from_tensor, from_lists) and from_tensor.dtype == torch.float32
    assert from_tensor.tolist() == pytest.approx(compliance_reference(a_x, a_edit, suggestions), abs=1e-7)


@pytest.fixture(scope="module")
def lpips_random():
    torch.manual_seed(0)
    return rewards.load_lpips(random_backbone=True)


def triple(seed: int, batch: int = 2, side: int = 32):
    """Input (uint8), edit (float32, as the artist decodes it) and reference (uint8) images."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, generator=g)
    edit = retouch.apply(x, exposure=0.4, temperature=20.0).float() / 255
    gt = retouch.apply(x, exposure=torch.linspace(0.2, 0.6, batch, dtype=torch.float64), contrast=1.2)
    return x, edit, gt


SUGGESTIONS = [
    [Suggestion(EXPOSURE, 1), Suggestion(TEMPERATURE, 1)],
    [Suggestion(CONTRAST, -1), Suggestion(REMOVE_BLUR, 1)],
]


def test_trusted_path_equals_the_validated_one(lpips_random):
    x, edit, gt = triple(1)
    validated = rewards.artist_reward(x, edit, gt, SUGGESTIONS, lpips_random)
    trusted = rewards.artist_reward(x, edit, gt, rewards.suggestion_tensor(SUGGESTIONS), lpips_random, validate=False)
    assert torch.equal(validated, trusted)
    assert validated[0] > 0 and validated[1] == 0  # the contrast decrease was not followed


def test_boundary_checks(lpips_random):
    x, edit, gt = triple(2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rewards.artist_reward(x, edit * 2, gt, SUGGESTIONS, lpips_random)
    with pytest.raises(TypeError, match="suggestion_tensor"):
        rewards.artist_reward(x, edit, gt, SUGGESTIONS, lpips_random, validate=False)
    with pytest.raises(ValueError, match="expected \\(2, 4, 2\\)"):
        rewards.artist_reward(x, edit, gt, rewards.suggestion_tensor(SUGGESTIONS[:1]), lpips_random, validate=False)
    with pytest.raises(ValueError, match="one list per image"):
        rewards.artist_reward(x, edit, gt, SUGGESTIONS[:1], lpips_random)


@pytest.mark.usefixtures("torch_path")  # trace the torch path of photometric.attributes
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_artist_reward_compiles_as_one_graph(backend, lpips_random):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(rewards.artist_reward, fullgraph=True, backend=backend)
    tolerance = {"atol": 0.0, "rtol": 0.0} if backend == "aot_eager" else {"atol": 1e-5, "rtol": 1e-5}
    x, edit, gt = triple(3)
    counts = rewards.suggestion_tensor(SUGGESTIONS)
    eager = rewards.artist_reward(x, edit, gt, counts, lpips_random, validate=False)
    torch.testing.assert_close(compiled(x, edit, gt, counts, lpips_random, validate=False), eager, **tolerance)
    assert not torch._dynamo.utils.counters["graph_break"]

    # other pixels and other suggestions reuse the graph: the suggestions are data, not guards
    x, edit, gt = triple(4)
    counts = rewards.suggestion_tensor([[Suggestion(SATURATION, -1)] * 3, []])
    with torch.compiler.set_stance("fail_on_recompile"):
        again = compiled(x, edit, gt, counts, lpips_random, validate=False)
    torch.testing.assert_close(
        again, rewards.artist_reward(x, edit, gt, counts, lpips_random, validate=False), **tolerance
    )
    torch._dynamo.reset()


@pytest.mark.gpu
def test_trusted_path_never_syncs_on_cuda(lpips_random):
    x, edit, gt = (t.cuda() for t in triple(5))
    model = copy.deepcopy(lpips_random).cuda()
    counts = rewards.suggestion_tensor(SUGGESTIONS, "cuda")
    expected = rewards.artist_reward(x, edit, gt, counts, model, validate=False)  # builds the per-device constants
    torch.cuda.set_sync_debug_mode("error")
    try:
        r = rewards.artist_reward(x, edit, gt, counts, model, validate=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(r, expected)
