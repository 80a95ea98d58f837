"""Photos without colour, or with one deliberate tone, come back without a cast: the analytic critic's neutrality
test (``measures.colour_variety`` against ``rules.NEUTRAL_VARIETY``) and the enhancer on monochrome photos."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from spc_fast import colour_torch, retouch
from spc_fast.critic.analytic import AnalyticCritic
from spc_fast.critic.measures import CONTENT_MEASURES, colour_variety, content_measures
from spc_fast.critic.rules import DEFAULT_RULES, NEUTRAL_VARIETY, AnalyticCriticConfig, held_back
from spc_fast.critic.vocabulary import SATURATION, TEMPERATURE
from spc_fast.pipeline import Pipeline

SIDE = 160
COLOUR_OPS = {SATURATION, TEMPERATURE}
# Lab chroma components of an enhanced monochrome photo: a grey pixel measures |a*|, |b*| ~ 1e-4 (the matrix's white
# and the Lab white differ in the 7th digit); 0.5 is a fifth of a just-noticeable difference (2.3).
NEUTRAL_AB = 0.5

pytestmark = pytest.mark.usefixtures("torch_path")


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


def _small(image: Image.Image) -> Image.Image:
    scale = SIDE / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BOX)


def _grayscale(name: str) -> torch.Tensor:
    """A bundled photo as a grayscale file holds it (Pillow's "L" conversion), read back as RGB, uint8."""
    import skimage.data

    photo = getattr(skimage.data, name)()
    gray = _small(Image.fromarray(photo).convert("L"))
    return _tensor(np.asarray(gray.convert("RGB")))


def _toned(gray: torch.Tensor, tone: str) -> torch.Tensor:
    x = gray.float() / 255.0
    if tone == "sepia":  # the common sepia matrix (clips in the highlights)
        m = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
        return torch.einsum("ij,jhw->ihw", m, x).clamp(0.0, 1.0)
    dark = torch.tensor([0.05, 0.15, 0.35])[:, None, None]  # cyanotype: Prussian blue to paper white
    return dark + (1.0 - dark) * x[:1]


@pytest.fixture(scope="module")
def monochrome() -> dict[str, torch.Tensor]:
    """Grayscale photos and flat fields: no colour at all."""
    photos = {f"gray {name}": _grayscale(name) for name in ("astronaut", "chelsea", "coffee", "rocket", "camera",
                                                            "moon", "page")}
    ramp = torch.linspace(0, 255, 200).round().to(torch.uint8)
    return {
        **photos,
        "white": torch.full((3, 40, 60), 255, dtype=torch.uint8),
        "grey": torch.full((3, 40, 60), 128, dtype=torch.uint8),
        "black": torch.zeros(3, 40, 60, dtype=torch.uint8),
        "grey gradient": ramp.expand(3, 50, 200).contiguous(),
    }


@pytest.fixture(scope="module")
def toned(monochrome) -> dict[str, torch.Tensor]:
    """Deliberately toned photos: one colour, set by lightness."""
    return {f"{tone} {name}": _toned(monochrome[f"gray {name}"], tone)
            for tone in ("sepia", "cyanotype") for name in ("astronaut", "coffee", "camera")}


@pytest.fixture(scope="module")
def critic() -> AnalyticCritic:
    return AnalyticCritic(AnalyticCriticConfig(sample_pixels=8192))


def _lab(image: torch.Tensor) -> torch.Tensor:
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    return colour_torch.linear_to_lab(colour_torch.srgb_to_linear(x.double()[None]))[0]  # [3, H, W]


def test_colour_variety_measures_colour_off_the_tone_curve(monochrome, toned):
    assert CONTENT_MEASURES == ("colour_variety",) and set(content_measures(monochrome["grey"][None])) == {
        "colour_variety"}
    for name, image in {**monochrome, **toned}.items():
        assert float(colour_variety(image[None])) < 0.8 * NEUTRAL_VARIETY, name  # a margin below the limit
    flat_red = torch.tensor([200, 40, 30], dtype=torch.uint8)[:, None, None].expand(3, 20, 20)
    assert float(colour_variety(flat_red[None])) < 1e-3  # one colour is one tone
    import skimage.data

    photo = _tensor(np.asarray(_small(Image.fromarray(skimage.data.coffee()))))
    full = float(colour_variety(photo[None]))
    halved = float(colour_variety(retouch.apply(photo, saturation=0.5)[None]))
    assert full > 2 * NEUTRAL_VARIETY and halved > NEUTRAL_VARIETY
    assert halved / full == pytest.approx(0.5, abs=0.05)  # chroma off the curve scales with saturation


def test_colour_variety_of_a_batch_is_per_image(monochrome):
    pair = torch.stack([monochrome["grey"], torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8,
                                                          generator=torch.Generator().manual_seed(0))])
    values = colour_variety(pair)
    assert values.shape == (2,) and values.dtype == torch.float32
    assert float(values[0]) == 0.0 and float(values[1]) > 4 * NEUTRAL_VARIETY
    assert torch.equal(values, torch.cat([colour_variety(x[None]) for x in pair]))


def test_every_colour_rule_waits_for_colour_and_no_tone_rule_does():
    for rule in DEFAULT_RULES:
        gated = ("colour_variety", NEUTRAL_VARIETY) in rule.only_if
        assert gated == (rule.op in COLOUR_OPS), rule.name
    too_cool = next(r for r in DEFAULT_RULES if r.name == "too cool")
    m = {"illuminant_shift": torch.tensor([0.0, 0.0, 30.0]), "colour_variety": torch.tensor([0.0, 9.0, 0.0])}
    assert held_back(too_cool, m).tolist() == [True, False, False]


def test_unknown_only_if_measure_is_rejected():
    bad = dataclasses.replace(DEFAULT_RULES[-1], only_if=(("colourfulness", 1.0),))
    with pytest.raises(ValueError, match="unknown measure"):
        AnalyticCritic(AnalyticCriticConfig(rules=(bad,)))


def test_critic_suggests_no_colour_edit_for_monochrome_photos(critic, monochrome, toned):
    analyses = critic.analyse(list({**monochrome, **toned}.values()))
    for name, analysis in zip({**monochrome, **toned}, analyses, strict=True):
        assert not COLOUR_OPS & {s.op for s in analysis.output.suggestions}, (name, analysis.text)
        assert analysis.parameters["saturation"] == 1.0 and analysis.parameters["temperature"] == 0.0, name
        assert analysis.measured["colour_variety"] < NEUTRAL_VARIETY
        assert not {"too cool", "too warm", "washed-out", "over-saturated"} & set(analysis.fired), name
    gray = analyses[0].output.reasoning  # gray astronaut: its white is D65, which the colour rules call too cool
    assert "too cool" in gray and "left alone: colour variety (C* off the tone curve) 0.0 is not above 5.0" in gray


def test_enhance_leaves_monochrome_photos_neutral(monochrome):
    result = Pipeline(AnalyticCritic(AnalyticCriticConfig(sample_pixels=8192)), rescore=False).enhance(
        list(monochrome.values()))
    for (name, image), edited in zip(monochrome.items(), result.images, strict=True):
        assert edited.shape == image.shape and edited.dtype == image.dtype, name
        ab = _lab(edited)[1:].abs().amax()
        assert float(ab) < NEUTRAL_AB, (name, float(ab))


def test_enhance_keeps_the_tone_of_toned_photos(toned):
    result = Pipeline(AnalyticCritic(AnalyticCriticConfig(sample_pixels=8192)), rescore=False).enhance(
        list(toned.values()))
    for name, edited, record in zip(toned, result.images, result.records, strict=True):
        assert record.parameters["temperature"] == 0.0 and record.parameters["saturation"] == 1.0, name
        assert float(colour_variety(edited[None])) < NEUTRAL_VARIETY, name


def test_colour_photos_are_still_corrected(critic):
    import skimage.data

    photo = _tensor(np.asarray(_small(Image.fromarray(skimage.data.coffee()))))
    casts = [retouch.apply(photo, temperature=-40.0), retouch.apply(photo, saturation=0.5)]
    cool, washed = critic.analyse(casts)
    assert any(s.op == TEMPERATURE and s.direction == 1 for s in cool.output.suggestions)
    assert any(s.op == SATURATION and s.direction == 1 for s in washed.output.suggestions)
