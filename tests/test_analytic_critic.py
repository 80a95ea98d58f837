"""The analytic critic: its measures, its answers (always parseable, citing what it measured) and the direction
of its suggestions for known perturbations and degradations."""

from __future__ import annotations

import math

import pytest
import torch

from spc_fast import degrade, photometric, retouch, rewards
from spc_fast.critic import analytic
from spc_fast.critic.analytic import Analysis, AnalyticCritic, op_attribute, simulate
from spc_fast.critic.format import parse, render
from spc_fast.critic.measures import (
    DEGRADATION_MEASURES,
    TONE_MEASURES,
    degradation_measures,
    gamut_relative_chroma,
    haze,
    noise_sigma,
    pixel_sample,
    sharpness,
    tone_measures,
)
from spc_fast.critic.rules import (
    DECISION_ORDER,
    DEFAULT_RESTORATION,
    DEFAULT_RULES,
    PRESETS,
    AnalyticCriticConfig,
    RestorationRule,
    ToneRule,
    candidates,
    severity,
)
from spc_fast.critic.vocabulary import (
    CONTRAST,
    ENHANCE_LOW_LIGHT,
    EXPOSURE,
    REMOVE_BLUR,
    REMOVE_HAZE,
    REMOVE_NOISE,
    SATURATION,
    TEMPERATURE,
    TONE_OPS,
    Suggestion,
)
from spc_fast.executor import STEPS, retouch_parameters
from spc_fast.images import as_image_list

SIDE = 160


pytestmark = pytest.mark.usefixtures("torch_path")


@pytest.fixture(scope="module")
def small_photos():
    from spc_fast.bench.enhance_quality import REFERENCES, load_photos

    return load_photos(REFERENCES, SIDE)


@pytest.fixture(scope="module")
def critic():
    return AnalyticCritic(AnalyticCriticConfig(sample_pixels=8192))


def test_public_names():
    assert callable(analytic.AnalyticCritic) and isinstance(PRESETS["default"], AnalyticCriticConfig)
    assert {r.op for r in DEFAULT_RULES} == set(TONE_OPS) == set(DECISION_ORDER)
    assert all(isinstance(r, ToneRule) for r in DEFAULT_RULES)
    assert all(isinstance(r, RestorationRule) for r in DEFAULT_RESTORATION)
    assert set(DEGRADATION_MEASURES) == {"sharpness", "noise_sigma", "haze"}
    assert callable(Analysis) and callable(severity) and callable(simulate) and callable(as_image_list)
    assert [op_attribute(op) for op in TONE_OPS] == list(photometric.ATTRIBUTE_NAMES)
    with pytest.raises(AttributeError):
        AnalyticCriticConfig().sweeps = 3  # frozen


def test_config_with_unknown_names_is_rejected():
    import dataclasses

    bad = dataclasses.replace(DEFAULT_RULES[0], aim="brightness")
    with pytest.raises(ValueError, match="unknown measure"):
        AnalyticCritic(AnalyticCriticConfig(rules=(bad,)))
    with pytest.raises(ValueError, match="op must be"):
        AnalyticCritic(AnalyticCriticConfig(rules=(dataclasses.replace(DEFAULT_RULES[0], op="bokeh"),)))
    with pytest.raises(ValueError, match="at least 1"):
        AnalyticCritic(AnalyticCriticConfig(sweeps=0))
    tone_only = AnalyticCritic(PRESETS["tone-only"])
    assert tone_only.config.restore is False


@pytest.mark.parametrize("op", TONE_OPS)
@pytest.mark.parametrize("direction", [1, -1])
def test_candidates_are_what_the_executor_runs(op, direction):
    options = candidates(op, direction)
    assert len(options) == 6
    sizes = [abs(math.log(v)) if op in (CONTRAST, SATURATION) else abs(v) for _, v in options]
    assert sizes == sorted(sizes)
    for magnitudes, value in options:
        params, conflicts = retouch_parameters([Suggestion(op, direction, m) for m in magnitudes])
        assert conflicts == [] and params[op] == pytest.approx(value)
    assert options[0][1] == pytest.approx(STEPS[op][0] ** direction if op in (CONTRAST, SATURATION)
                                          else direction * STEPS[op][0])


# ---- measures ----------------------------------------------------------------------------------------------


def test_pixel_sample_is_deterministic_and_fixed_size(small_photos):
    photo = small_photos["astronaut.png"]
    a, b = pixel_sample(photo, 1000), pixel_sample(photo[None], 1000)
    assert a.shape == (1, 3, 1, 1000) and a.dtype == torch.float32 and torch.equal(a, b)
    assert torch.equal(pixel_sample(photo[None].to(memory_format=torch.channels_last), 1000), a)
    tiny = pixel_sample(torch.full((3, 1, 1), 128, dtype=torch.uint8), 64)
    assert tiny.shape == (1, 3, 1, 64) and torch.allclose(tiny, torch.tensor(128 / 255.0))
    sample = pixel_sample(photo, 8192)
    full = photometric.attributes(photo)
    assert photometric.attributes(sample)[0, :3].sub(full[:3]).abs().max() < 1.0


def test_gamut_relative_chroma_of_known_colours():
    from spc_fast import colour_torch

    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 1.0], [0.2, 0.8, 0.3]]).T[None]  # [1, 3, 4]
    lab = colour_torch.linear_to_lab(colour_torch.srgb_to_linear(rgb))
    rho = gamut_relative_chroma(lab)[0].tolist()
    assert rho[0] == pytest.approx(1.0, abs=2e-3) and rho[2] == pytest.approx(1.0, abs=2e-3)
    assert rho[1] == 0.0
    half = torch.cat([lab[:, :1], lab[:, 1:] * 0.5], 1)
    assert gamut_relative_chroma(half)[0, 3].item() == pytest.approx(0.5 * rho[3], abs=2e-3)


def test_tone_measures_follow_the_operators(small_photos):
    photo = small_photos["coffee.png"]
    batch = torch.stack([photo, retouch.apply(photo, exposure=-1.0), retouch.apply(photo, saturation=0.5)])
    m = tone_measures(batch, 8192)
    assert set(m) == set(TONE_MEASURES) and all(v.shape == (3,) and v.dtype == torch.float32 for v in m.values())
    assert float(m["headroom_ev"][1] - m["headroom_ev"][0]) == pytest.approx(1.0, abs=0.05)
    assert float(m["gamut_saturation"][2] / m["gamut_saturation"][0]) == pytest.approx(0.5, abs=0.03)
    warmer = tone_measures(retouch.apply(photo, temperature=30.0), 8192)["illuminant_shift"]
    assert float(warmer[0] - m["illuminant_shift"][0]) == pytest.approx(30.0, abs=8.0)


def test_degradation_measures_see_their_degradation(small_photos):
    photo = small_photos["astronaut.png"][None]
    clean = degradation_measures(photo)
    assert set(clean) == set(DEGRADATION_MEASURES)
    generator = torch.Generator().manual_seed(0)
    assert sharpness(degrade.gaussian_blur(photo, 2.0)) < clean["sharpness"] / 5
    assert noise_sigma(degrade.gaussian_noise(photo, 0.03, generator=generator)) > 3 * clean["noise_sigma"]
    assert haze(degrade.haze(photo, 0.6)) > clean["haze"] + 0.2
    # uint8 and float inputs measure alike
    as_uint8 = (photo * 255).round().to(torch.uint8)
    for name, value in degradation_measures(as_uint8).items():
        assert float(value) == pytest.approx(float(clean[name]), rel=0.1, abs=1e-3)


# ---- answers -----------------------------------------------------------------------------------------------


def _assert_round_trip(critique: Analysis) -> None:
    text = critique.text
    reparsed = parse(text)
    assert reparsed.errors == []
    assert reparsed == critique.output
    assert render(reparsed) == text


def test_references_are_left_alone(critic, small_photos):
    for critique in critic.analyse(list(small_photos.values())):
        _assert_round_trip(critique)
        assert critique.output.suggestions == [] and critique.output.score == 100.0
        assert critique.parameters == retouch.NEUTRAL
        assert "no tone or colour edit needed" in critique.output.reasoning


def test_reasoning_cites_the_measured_values(critic, small_photos):
    photo = retouch.apply(small_photos["chelsea.png"], exposure=-1.0)
    critique = critic.analyse([photo])[0]
    _assert_round_trip(critique)
    exposure, contrast, saturation, cct = photometric.attributes(photo).tolist()
    reasoning = critique.output.reasoning
    assert f"mean L* {exposure:.1f}" in reasoning and f"L* standard deviation {contrast:.1f}" in reasoning
    assert f"mean chroma C* {saturation:.1f}" in reasoning and f"gray-world CCT {cct:.0f} K" in reasoning
    assert f"highlight headroom {critique.measured['headroom_ev']:.2f} EV" in reasoning
    assert "under-exposed" in reasoning and "Score: 100 - " in reasoning
    lines = reasoning.splitlines()
    assert [line.split(".")[0] for line in lines] == [str(i) for i in range(1, len(lines) + 1)]
    assert critique.output.score < 100


# (perturbation, op expected, direction expected), on coffee: every one of these is detected there.
CASES = [
    ({"exposure": -1.0}, EXPOSURE, 1),
    ({"exposure": 1.0}, EXPOSURE, -1),
    ({"contrast": 0.6}, CONTRAST, 1),
    ({"contrast": 1.5}, CONTRAST, -1),
    ({"saturation": 0.5}, SATURATION, 1),
    ({"saturation": 1.7}, SATURATION, -1),
    ({"temperature": 40.0}, TEMPERATURE, -1),
    ({"temperature": -40.0}, TEMPERATURE, 1),
]


def test_suggestions_point_back_for_each_perturbation(critic, small_photos):
    photo = small_photos["coffee.png"]
    perturbed = [retouch.apply(photo, **p) for p, _, _ in CASES]
    for (p, op, direction), critique in zip(CASES, critic.analyse(perturbed), strict=True):
        _assert_round_trip(critique)
        mine = [s for s in critique.output.suggestions if s.op == op]
        assert mine and all(s.direction == direction for s in mine), (p, critique.output.suggestions)
        params, conflicts = retouch_parameters(critique.output.suggestions)
        assert conflicts == [] and params == pytest.approx(critique.parameters)
        before = critique.output.score
        after = critic.analyse([retouch.apply(perturbed[CASES.index((p, op, direction))], **params)])[0]
        assert after.output.score > before, (p, before, after.output.score)


def test_restoration_ops_are_suggested_for_degradations(critic, small_photos):
    photo = small_photos["astronaut.png"]
    generator = torch.Generator().manual_seed(1)
    degraded = {
        "gaussian_blur": degrade.gaussian_blur(photo, 2.0),
        "gaussian_noise": degrade.gaussian_noise(photo, 0.03, generator=generator),
        "haze": degrade.haze(photo, 0.6),
        "low_light": degrade.low_light(photo, -2.5, 0.01, generator=generator),
    }
    expected = {"gaussian_blur": REMOVE_BLUR, "gaussian_noise": REMOVE_NOISE, "haze": REMOVE_HAZE,
                "low_light": ENHANCE_LOW_LIGHT}
    critiques = critic.analyse(list(degraded.values()))
    for (name, _), critique in zip(degraded.items(), critiques, strict=True):
        _assert_round_trip(critique)
        assert expected[name] in {s.op for s in critique.output.suggestions}, name
    reward = rewards.restoration_constraint_reward([c.output.suggestions for c in critiques], list(degraded))
    assert reward.tolist() == [1.0] * 4
    low = critiques[-1].output.suggestions
    assert any(s.op == EXPOSURE and s.direction == 1 for s in low)  # and the executor brightens it


@pytest.mark.parametrize(
    "image",
    [
        torch.zeros(3, 8, 8),
        torch.ones(3, 5, 7),
        torch.full((3, 1, 1), 0.5),
        torch.rand(3, 17, 13, generator=torch.Generator().manual_seed(0)).half(),
        torch.randint(0, 256, (3, 9, 31), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)),
    ],
    ids=["black", "white", "one-pixel", "float16-noise", "uint8-noise"],
)
def test_odd_images_give_well_formed_answers(image):
    critique = AnalyticCritic(PRESETS["fast"]).analyse([image])[0]
    _assert_round_trip(critique)
    assert 0.0 <= critique.output.score <= 100.0
    assert all(math.isfinite(v) for v in critique.measured.values())


def test_batch_and_list_agree_and_bad_input_is_rejected(critic, small_photos):
    photos = [small_photos["astronaut.png"], small_photos["astronaut.png"].flip(-1)]
    as_batch = critic.critique(torch.stack(photos))
    as_list = critic.critique(photos)
    assert as_batch.outputs == as_list.outputs and as_batch.texts == as_list.texts
    assert torch.equal(as_batch.attributes, as_list.attributes) and as_batch.hidden is None
    assert as_batch.attributes.shape == (2, 4) and [parse(t) for t in as_batch.texts] == as_batch.outputs
    with pytest.raises(ValueError, match="no images"):
        critic.critique([])
    with pytest.raises(ValueError, match="batch of 2"):
        critic.critique([torch.stack(photos)])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        critic.critique([photos[0] * 2])
