"""Rewards (spc_fast/rewards/, SPEC.md §5): hand-computed branches, batching, devices, LPIPS."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spc_fast import retouch, rewards
from spc_fast.critic.format import parse
from spc_fast.critic.vocabulary import (
    CONTRAST,
    ENHANCE_LOW_LIGHT,
    EXPOSURE,
    REMOVE_BLUR,
    REMOVE_HAZE,
    REMOVE_NOISE,
    RESTORATION_OPS,
    SATURATION,
    TEMPERATURE,
    CriticOutput,
    Suggestion,
)
from spc_fast.photometric import attributes
from spc_fast.rewards import (
    ALEXNET_FILE,
    BACKBONE_ENV,
    DEFAULT_TAU,
    artist_reward,
    compliance_from_attributes,
    compliance_reward,
    corrective_op,
    format_reward,
    load_lpips,
    perceptual_reward,
    photometric_control_from_attributes,
    photometric_control_reward,
    rank_reward,
    restoration_constraint_reward,
    suggestion_reward,
    to_mired,
)

BASE = (50.0, 20.0, 30.0, 5000.0)  # exposure L*, contrast L*, saturation C*, cct K (200 mired)


def attrs(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def with_value(k: int, value: float) -> tuple:
    row = list(BASE)
    row[k] = value
    return tuple(row)


@pytest.fixture(scope="module")
def images(photos):
    """Three 32 x 32 crops as a uint8 batch [3, 3, 32, 32]."""
    crops = [photos[name][100:132, 150:182] for name in ("astronaut", "chelsea", "coffee")]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def lpips_random():
    return load_lpips(random_backbone=True)


def test_defaults_follow_the_spec():
    assert DEFAULT_TAU == (1.0, 0.5, 1.0, 5.0)
    assert rewards.DEFAULT_EPS == 1e-6
    assert (rewards.LAMBDA_PHOTO, rewards.LAMBDA_PERC) == (1.0, 0.5)


def test_to_mired():
    assert to_mired(attrs(BASE)).tolist() == [[50.0, 20.0, 30.0, 200.0]]


# ---- photometric control (eq. 10-12) -----------------------------------------------------------------------

# (k, value of X_gt, value of X_e, r_k): the other three attributes do not move, so r_photo = (3 + r_k) / 4.
EQ11_CASES = [
    # |Δgt| < τ and |Δe| <= τ -> 1
    (0, 50.5, 50.9, 1.0),
    (0, 50.5, 51.0, 1.0),
    (1, 20.4, 19.6, 1.0),
    (3, 1e6 / 201.0, 1e6 / 204.0, 1.0),
    # |Δgt| < τ and |Δe| > τ -> 0
    (0, 50.5, 51.5, 0.0),
    (2, 30.0, 28.9, 0.0),
    (3, 1e6 / 201.0, 1e6 / 206.0, 0.0),
    # |Δgt| >= τ: max(0, 1 - |Δe - Δgt| / (|Δgt| + ε))
    (0, 60.0, 60.0, 1.0),  # exact match
    (0, 60.0, 55.0, 0.5),
    (0, 60.0, 65.0, 0.5),
    (0, 60.0, 50.0, 0.0),  # no change at all
    (0, 60.0, 75.0, 0.0),  # overshoot: 1 - 15/10 clamps at 0
    (0, 60.0, 40.0, 0.0),  # wrong direction
    (0, 51.0, 50.0, 0.0),  # |Δgt| == τ exactly takes the formula branch, not "keep"
    (2, 20.0, 22.5, 0.75),
    (3, 1e6 / 250.0, 1e6 / 225.0, 0.5),  # warmer target (+50 mired), half-way there
    (3, 1e6 / 150.0, 1e6 / 250.0, 0.0),  # cooler target, warmer edit
]


@pytest.mark.parametrize(("k", "gt", "edit", "r_k"), EQ11_CASES)
def test_photometric_control_branches(k, gt, edit, r_k):
    r = photometric_control_from_attributes(attrs(BASE), attrs(with_value(k, edit)), attrs(with_value(k, gt)))
    assert r.dtype == torch.float32 and r.shape == (1,)
    assert r.item() == pytest.approx((3.0 + r_k) / 4.0, abs=1e-5)


def test_photometric_control_is_the_mean_over_attributes():
    a_x = attrs(BASE)
    a_gt = attrs((60.0, 21.0, 30.0, 1e6 / 250.0))  # exposure +10, contrast +1, saturation 0, +50 mired
    a_e = attrs((55.0, 21.0, 35.0, 1e6 / 250.0))  # 0.5, 1, 0 (|Δe| > τ with flat target), 1
    r = photometric_control_from_attributes(a_x, a_e, a_gt)
    assert r.item() == pytest.approx(2.5 / 4.0, abs=1e-5)


def test_photometric_control_tau_and_eps_are_configurable():
    a_x, a_e, a_gt = attrs(BASE), attrs(with_value(0, 52.0)), attrs(with_value(0, 51.5))
    assert photometric_control_from_attributes(a_x, a_e, a_gt).item() == pytest.approx(
        (3 + 1 - 0.5 / 1.5) / 4
    )
    loose = photometric_control_from_attributes(a_x, a_e, a_gt, tau=(3.0, 0.5, 1.0, 5.0))
    assert loose.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one tolerance per attribute"):
        photometric_control_from_attributes(a_x, a_e, a_gt, tau=(1.0, 1.0))


attribute_st = st.tuples(
    st.integers(0, 800).map(lambda i: i / 8),  # exposure
    st.integers(0, 400).map(lambda i: i / 8),  # contrast
    st.integers(0, 800).map(lambda i: i / 8),  # saturation
    st.integers(2000, 20000).map(float),  # cct K
)


@given(attribute_st, attribute_st, attribute_st, st.tuples(*[st.sampled_from([0.0, 0.25, 0.5, 1.0])] * 4))
def test_moving_every_attribute_towards_the_target_never_lowers_r_photo(a_x, a_gt, a_e, t):
    a_x, a_gt, a_e = attrs(a_x), attrs(a_gt), attrs(a_e)
    closer = a_e + torch.tensor(t, dtype=torch.float64) * (a_gt - a_e)
    before = photometric_control_from_attributes(a_x, a_e, a_gt)
    after = photometric_control_from_attributes(a_x, closer, a_gt)
    assert after.item() >= before.item() - 1e-6
    assert photometric_control_from_attributes(a_x, a_gt, a_gt).item() == pytest.approx(1.0)


# ---- compliance (eq. 8-9) ----------------------------------------------------------------------------------


def test_compliance_is_one_without_tone_suggestions():
    a = attrs(BASE, BASE)
    r = compliance_from_attributes(a, a, [[], [Suggestion(REMOVE_BLUR, 1), Suggestion(ENHANCE_LOW_LIGHT, 1)]])
    assert r.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("k", "edit", "suggestion", "complied"),
    [
        (0, 51.5, Suggestion(EXPOSURE, 1), 1.0),
        (0, 50.9, Suggestion(EXPOSURE, 1), 0.0),  # moved, but not beyond τ
        (0, 51.0, Suggestion(EXPOSURE, 1), 0.0),  # strictly greater than τ
        (0, 48.0, Suggestion(EXPOSURE, -1), 1.0),
        (0, 52.0, Suggestion(EXPOSURE, -1), 0.0),
        (1, 20.6, Suggestion(CONTRAST, 1), 1.0),
        (1, 19.6, Suggestion(CONTRAST, -1), 0.0),
        (2, 28.0, Suggestion(SATURATION, -1), 1.0),
        (3, 4000.0, Suggestion(TEMPERATURE, 1), 1.0),  # lower CCT = more mired = warmer
        (3, 4000.0, Suggestion(TEMPERATURE, -1), 0.0),
        (3, 6000.0, Suggestion(TEMPERATURE, -1), 1.0),
        (3, 4950.0, Suggestion(TEMPERATURE, 1), 0.0),  # +2 mired < τ = 5
    ],
)
def test_compliance_per_suggestion(k, edit, suggestion, complied):
    r = compliance_from_attributes(attrs(BASE), attrs(with_value(k, edit)), [[suggestion]])
    assert r.tolist() == [complied]


def test_compliance_is_the_mean_over_tone_suggestions():
    a_x = attrs(BASE, BASE)
    a_e = attrs((52.0, 20.0, 33.0, 5000.0), BASE)
    suggestions = [
        [
            Suggestion(EXPOSURE, 1),
            Suggestion(SATURATION, 1),
            Suggestion(CONTRAST, 1),
            Suggestion(REMOVE_NOISE, 1),
        ],
        [Suggestion(EXPOSURE, 1)],
    ]
    r = compliance_from_attributes(a_x, a_e, suggestions)
    assert r.dtype == torch.float32
    assert r.tolist() == pytest.approx([2 / 3, 0.0])


def test_compliance_needs_one_list_per_image():
    with pytest.raises(ValueError, match="one list per image"):
        compliance_from_attributes(attrs(BASE), attrs(BASE), [[], []])


def test_compliance_on_images_warmer_lowers_cct(images):
    warm = retouch.apply(images, temperature=40.0)
    assert (attributes(warm)[:, 3] < attributes(images)[:, 3]).all()
    warmer = [[Suggestion(TEMPERATURE, 1)]] * 3
    cooler = [[Suggestion(TEMPERATURE, -1)]] * 3
    assert compliance_reward(images, warm, warmer).tolist() == [1.0, 1.0, 1.0]
    assert compliance_reward(images, warm, cooler).tolist() == [0.0, 0.0, 0.0]


# ---- batches, devices, dtypes ------------------------------------------------------------------------------


def test_batch_equals_per_image(images, lpips_random):
    edit = retouch.apply(images, exposure=torch.tensor([0.5, -0.4, 0.0]), saturation=1.3)
    ref = retouch.apply(images, exposure=0.6, temperature=torch.tensor([20.0, 0.0, -30.0]))
    suggestions = [[Suggestion(EXPOSURE, 1)], [Suggestion(SATURATION, 1), Suggestion(TEMPERATURE, -1)], []]
    batched = {
        "photo": photometric_control_reward(images, edit, ref),
        "comp": compliance_reward(images, edit, suggestions),
        "perc": perceptual_reward(edit, ref, lpips_random),
        "artist": artist_reward(images, edit, ref, suggestions, lpips_random),
        "suggestion": suggestion_reward(images, ref, suggestions),
    }
    for i in range(3):
        one = slice(i, i + 1)
        single = {
            "photo": photometric_control_reward(images[one], edit[one], ref[one]),
            "comp": compliance_reward(images[one], edit[one], suggestions[one]),
            "perc": perceptual_reward(edit[one], ref[one], lpips_random),
            "artist": artist_reward(images[one], edit[one], ref[one], suggestions[one], lpips_random),
            "suggestion": suggestion_reward(images[one], ref[one], suggestions[one]),
        }
        for name, value in single.items():
            assert value.shape == (1,)
            torch.testing.assert_close(value, batched[name][one], atol=1e-5, rtol=1e-5, msg=name)


def test_outputs_are_float32_vectors_on_the_input_device(images, lpips_random):
    floats = images.float() / 255
    texts = [parse("<think>a</think><edit_start>increase contrast</edit_end><answer>5</answer>")] * 3
    outputs = [
        photometric_control_reward(images, floats, images),
        compliance_reward(floats, images, [[]] * 3),
        perceptual_reward(floats, images, lpips_random),
        artist_reward(images, floats, images, [[]] * 3, lpips_random),
        suggestion_reward(floats, images, [[Suggestion(CONTRAST, 1)]] * 3),
        format_reward(texts),
        rank_reward(torch.tensor([1.0, 2.0, 3.0]), [2.0, 2.0, None]),
        restoration_constraint_reward([[]] * 3, [None] * 3),
        photometric_control_from_attributes(attrs(BASE), attrs(BASE), attrs(BASE)).expand(3),
    ]
    for out in outputs:
        assert out.dtype == torch.float32 and out.shape == (3,) and out.device == images.device


@pytest.mark.gpu
def test_rewards_stay_on_cuda(images):
    x = images.cuda()
    edit = retouch.apply(x, exposure=0.5)
    lpips_model = load_lpips(random_backbone=True).cuda()
    r = artist_reward(x, edit, x, [[Suggestion(EXPOSURE, 1)]] * 3, lpips_model)
    assert r.device == x.device and r.dtype == torch.float32
    torch.testing.assert_close(
        r.cpu(),
        artist_reward(
            images, edit.cpu(), images, [[Suggestion(EXPOSURE, 1)]] * 3, load_lpips(random_backbone=True)
        ),
        atol=1e-4,
        rtol=1e-4,
    )
    assert rank_reward(torch.tensor([1.0], device="cuda"), [2.0]).device == x.device


def test_mismatched_batches_are_rejected(images):
    with pytest.raises(ValueError, match="different numbers of images"):
        photometric_control_reward(images, images[:2], images)


# ---- perceptual (eq. 13) and LPIPS loading -----------------------------------------------------------------


def test_perceptual_reward_with_random_backbone_is_one_for_identical_images(images, lpips_random):
    assert perceptual_reward(images, images, lpips_random).tolist() == pytest.approx([1.0] * 3)
    other = perceptual_reward(images, images.roll(1, 0), lpips_random)
    assert ((other > 0) & (other < 1)).all()


def test_perceptual_reward_with_random_backbone_equal_for_uint8_and_float(images, lpips_random):
    edit = retouch.apply(images, exposure=0.7)
    torch.testing.assert_close(
        perceptual_reward(edit, images, lpips_random),
        perceptual_reward(edit.float() / 255, images.float() / 255, lpips_random),
    )


def test_perceptual_reward_checks_its_inputs(images, lpips_random):
    with pytest.raises(ValueError, match="differ in shape"):
        perceptual_reward(images, images[..., :31], lpips_random)
    with pytest.raises(ValueError, match="at least 31 pixels"):
        perceptual_reward(images[..., :16, :], images[..., :16, :], lpips_random)


def _no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a code path tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_missing_backbone_weights_say_which_file_goes_where(tmp_path, monkeypatch):
    _no_downloads(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(BACKBONE_ENV, raising=False)
    expected = tmp_path / "hub" / "checkpoints" / ALEXNET_FILE
    with pytest.raises(FileNotFoundError) as info:
        load_lpips()
    message = str(info.value)
    assert str(expected) in message and BACKBONE_ENV in message and "never downloads" in message
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_lpips(tmp_path / "nowhere.pth")


def test_backbone_weights_are_read_from_the_torch_cache_or_the_env(tmp_path, monkeypatch):
    import torchvision

    _no_downloads(monkeypatch)
    full = torchvision.models.alexnet(weights=None).state_dict()
    state = {k: v for k, v in full.items() if k.startswith("features.")}  # the classifier is not needed
    cached = tmp_path / "hub" / "checkpoints" / ALEXNET_FILE
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(BACKBONE_ENV, raising=False)
    model = load_lpips()
    torch.testing.assert_close(model.net.slice1[0].weight, state["features.0.weight"], atol=0, rtol=0)
    torch.testing.assert_close(model.net.slice5[0].bias, state["features.10.bias"], atol=0, rtol=0)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training

    elsewhere = tmp_path / "alexnet.pth"
    state["features.3.weight"] = torch.zeros_like(state["features.3.weight"])
    torch.save(state, elsewhere)
    monkeypatch.setenv(BACKBONE_ENV, str(elsewhere))
    assert (load_lpips().net.slice2[1].weight == 0).all()

    torch.save({"classifier.1.weight": torch.zeros(1)}, elsewhere)
    with pytest.raises(ValueError, match="not torchvision's AlexNet"):
        load_lpips(elsewhere)


def test_random_backbone_is_explicit(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        load_lpips(tmp_path / "a.pth", random_backbone=True)


# ---- artist total (eq. 7) ----------------------------------------------------------------------------------


def test_artist_reward_combines_its_terms(images, lpips_random):
    edit = retouch.apply(images, exposure=0.6, contrast=1.2)
    ref = retouch.apply(images, exposure=0.6)
    suggestions = [[Suggestion(EXPOSURE, 1)], [Suggestion(EXPOSURE, -1)], [Suggestion(CONTRAST, 1)]]
    comp = compliance_reward(images, edit, suggestions)
    photo = photometric_control_reward(images, edit, ref)
    perc = perceptual_reward(edit, ref, lpips_random)
    torch.testing.assert_close(
        artist_reward(images, edit, ref, suggestions, lpips_random), comp * (photo + 0.5 * perc)
    )
    torch.testing.assert_close(
        artist_reward(images, edit, ref, suggestions, lpips_random, lambda_photo=0.2, lambda_perc=2.0),
        comp * (0.2 * photo + 2.0 * perc),
    )
    assert comp[1] == 0.0


# ---- critic rewards ----------------------------------------------------------------------------------------

GOOD = "<think>a</think>\n<edit_start>\n1. slightly increase contrast\n</edit_end>\n<answer>70</answer>"


@pytest.mark.parametrize(
    ("text", "reward"),
    [
        (GOOD, 1.0),
        (
            GOOD.replace("1. slightly", "1. sharpen the details;\n2. slightly"),
            1.0,
        ),  # content errors do not count
        (GOOD.replace("70", "82/100"), 1.0),
        (GOOD.replace("70", "170"), 0.0),
        (GOOD.replace("70", "seventy"), 0.0),
        (GOOD.replace("</answer>", ""), 0.0),
        (GOOD.replace("1. slightly increase contrast", ""), 0.0),  # no suggestion
        (GOOD.replace("1. slightly increase contrast", "1. sharpen"), 0.0),
        (GOOD.replace("<think>a</think>", ""), 0.0),
        (GOOD + "<answer>5</answer>", 0.0),
        ("<answer>70</answer>" + GOOD.replace("<answer>70</answer>", ""), 0.0),
        ("", 0.0),
    ],
)
def test_format_reward(text, reward):
    assert format_reward([text]).tolist() == [reward]


def test_format_reward_accepts_parsed_outputs():
    parsed = parse(GOOD)
    assert format_reward([parsed, GOOD, CriticOutput("", [], None, [])]).tolist() == [1.0, 1.0, 0.0]
    assert format_reward([]).shape == (0,)


def test_format_reward_accepts_the_explicit_no_edit_answer():
    no_edit = GOOD.replace("1. slightly increase contrast", "1. No edit needed")
    assert format_reward([no_edit, CriticOutput("a", [], 90.0, [], no_edit=True)]).tolist() == [1.0, 1.0]
    assert format_reward([no_edit.replace("<answer>70", "<answer>170")]).tolist() == [0.0]


def test_rank_reward():
    assert rank_reward([50.0, 80.0, None, 10.0], [60.0, 70.0, 90.0, 10.0]).tolist() == [1.0, 0.0, 0.0, 0.0]
    r = rank_reward(torch.tensor([1.0, float("nan")]), torch.tensor([2.0, 3.0]))
    assert r.tolist() == [1.0, 0.0] and r.dtype == torch.float32
    with pytest.raises(ValueError, match="one per image"):
        rank_reward([1.0], [1.0, 2.0])


def test_suggestion_reward_executes_the_critics_own_suggestions(images):
    ref = retouch.apply(images, exposure=0.6, temperature=25.0)
    right = [Suggestion(EXPOSURE, 1, "moderately"), Suggestion(TEMPERATURE, 1, "moderately")]
    wrong = [Suggestion(EXPOSURE, -1, "moderately"), Suggestion(TEMPERATURE, -1, "moderately")]
    conflicting = [Suggestion(EXPOSURE, 1), Suggestion(EXPOSURE, -1), Suggestion(TEMPERATURE, 1)]
    r = suggestion_reward(images, ref, [right, wrong, conflicting])
    assert r[0].item() == pytest.approx(1.0)
    assert r[1].item() < 0.6
    nothing = suggestion_reward(images, ref, [[]] * 3)
    # the conflict leaves exposure neutral (like doing nothing) but still executes the temperature shift
    assert nothing[2] < r[2] < 1.0


def test_suggestion_reward_clamps_extreme_temperature(images):
    many = [[Suggestion(TEMPERATURE, 1, "significantly")] * 12] * 3  # 600 mired, beyond the operator's range
    r = suggestion_reward(images, images, many)
    assert r.shape == (3,) and torch.isfinite(r).all()


def test_every_degradation_has_a_restoration_op():
    from spc_fast.degrade import DEGRADATIONS

    for name in DEGRADATIONS:
        assert corrective_op(name) in RESTORATION_OPS
    assert corrective_op("gaussian_blur") == REMOVE_BLUR
    assert corrective_op("haze") == REMOVE_HAZE
    assert corrective_op("low_light") == ENHANCE_LOW_LIGHT


def test_restoration_constraint_reward():
    suggestions = [
        [Suggestion(REMOVE_BLUR, 1), Suggestion(EXPOSURE, 1)],
        [Suggestion(EXPOSURE, 1)],
        [],
        [Suggestion(REMOVE_NOISE, 1), Suggestion(ENHANCE_LOW_LIGHT, 1)],
        [Suggestion(REMOVE_NOISE, 1)],
    ]
    degradations = ["motion_blur", "haze", None, ["gaussian_noise", "low_light"], ["poisson_noise", "haze"]]
    assert restoration_constraint_reward(suggestions, degradations).tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="unknown degradation"):
        restoration_constraint_reward([[]], ["lens_flare"])
    with pytest.raises(ValueError, match="one of each"):
        restoration_constraint_reward([[]], [None, None])
