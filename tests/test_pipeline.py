"""The pipeline: interchangeable critic and artist, the rule executor, the records, and a small version of
bench/enhance_quality.py as a quality regression check."""

from __future__ import annotations

import math

import pytest
import torch

from spc_fast import retouch
from spc_fast.artists import RuleArtist
from spc_fast.bench import enhance_quality
from spc_fast.config import PipelineConfig
from spc_fast.critic.analytic import AnalyticCritic
from spc_fast.critic.format import parse, render
from spc_fast.critic.rules import AnalyticCriticConfig
from spc_fast.critic.vocabulary import CriticOutput, Suggestion
from spc_fast.executor import retouch_parameters
from spc_fast.pipeline import EnhanceRecord, EnhanceResult, Pipeline
from spc_fast.roles import Artist, Critic, Judgement

SIDE = 128


pytestmark = pytest.mark.usefixtures("torch_path")


@pytest.fixture(scope="module")
def small_photos():
    return enhance_quality.load_photos(enhance_quality.REFERENCES, SIDE)


class FixedCritic:
    """A stand-in for the neural critic: answers the same text for every image."""

    def __init__(self, text: str) -> None:
        self.output = parse(text)
        self.calls = 0

    def critique(self, images):
        self.calls += 1
        return Judgement([render(self.output)] * len(images), [self.output for _ in images])


def test_protocols_are_satisfied_by_the_defaults_and_by_stand_ins():
    pipeline = Pipeline()
    assert isinstance(pipeline.critic, Critic) and isinstance(pipeline.artist, Artist)
    assert isinstance(pipeline.critic, AnalyticCritic) and isinstance(pipeline.artist, RuleArtist)
    assert isinstance(FixedCritic("<think></think>"), Critic)


def test_rescoring_is_opt_in(small_photos):
    critic = FixedCritic("<think>x</think>\n<edit_start>\n1. increase contrast\n</edit_end>\n<answer>50</answer>")
    record = Pipeline(critic).enhance([small_photos["chelsea.png"]]).records[0]
    assert critic.calls == 1 and record.score_after is None and "rank" not in record.rewards
    assert Pipeline.from_config(PipelineConfig()).rescore is False
    Pipeline(critic, rescore=True).enhance([small_photos["chelsea.png"]])
    assert critic.calls == 3


def test_rule_artist_executes_the_suggestions(small_photos):
    text = ("<think>x</think>\n<edit_start>\n1. slightly increase light&exposure;\n"
            "2. change color temperature to slightly warmer\n</edit_end>\n<answer>70</answer>")
    photo = small_photos["chelsea.png"]
    result = Pipeline(FixedCritic(text), rescore=False).enhance([photo])
    expected = retouch.apply(photo, exposure=0.3, temperature=10.0)
    assert torch.equal(result.images[0], expected)
    record = result.records[0]
    assert record.parameters == {"exposure": 0.3, "contrast": 1.0, "saturation": 1.0, "temperature": 10.0}
    assert record.rewards == {"compliance": 1.0, "format": 1.0}
    assert record.attributes_after["exposure"] > record.attributes_before["exposure"] + 1.0
    assert record.score_after is None and record.critic_text == render(parse(text))


def test_conflicts_and_restoration_ops_are_recorded_not_executed(small_photos):
    text = ("<think>x</think>\n<edit_start>\n1. increase contrast;\n2. decrease contrast;\n3. remove noise;\n"
            "4. significantly increase saturation\n</edit_end>\n<answer>40</answer>")
    photo = small_photos["coffee.png"]
    result = Pipeline(FixedCritic(text), rescore=False).enhance(photo[None])
    record = result.records[0]
    assert record.conflicts == ["contrast: both directions suggested; left neutral"]
    assert record.not_executed == ["moderately remove noise"]
    assert record.parameters["contrast"] == 1.0 and record.parameters["saturation"] == pytest.approx(1.7)
    assert torch.equal(result.images[0], retouch.apply(photo, saturation=1.7))


def test_temperature_beyond_the_operator_is_clamped_and_reported():
    too_cool = CriticOutput("x", [Suggestion("temperature", -1, "significantly")] * 3, 50.0)
    params, conflicts = retouch_parameters(too_cool.suggestions)
    assert params["temperature"] > -150 and "clamped" in conflicts[0]


def test_default_pipeline_records_and_keeps_dtype(small_photos):
    photo = small_photos["astronaut.png"]
    dark = retouch.apply(photo, exposure=-1.0)
    images = [photo.half(), dark, (dark * 255).round().to(torch.uint8)]
    result = Pipeline(rescore=True).enhance(images)
    assert isinstance(result, EnhanceResult) and len(result.records) == 3
    assert [x.dtype for x in result.images] == [torch.float16, torch.float32, torch.uint8]
    assert result.images[0] is images[0]  # nothing to do: the very same tensor
    for record in result.records:
        assert isinstance(record, EnhanceRecord)
        assert parse(record.critic_text) == record.critique
        payload = record.to_json()
        assert payload["critique"]["score"] == record.critique.score
        assert set(payload["attributes_before"]) == {"exposure", "contrast", "saturation", "cct"}
    dark_record = result.records[1]
    assert dark_record.rewards["compliance"] == 1.0 and dark_record.rewards["rank"] == 1.0
    assert dark_record.score_after > dark_record.critique.score
    untouched = result.records[0]
    assert untouched.critique.no_edit and untouched.rewards["format"] == 1.0  # "1. no edit needed" is well formed


def test_quality_regression(small_photos):
    """The small version of bench/enhance_quality.py: mean fraction undone >= 0.5, nothing moved further away,
    unperturbed photos untouched."""
    names = ("under-exposed", "over-exposed", "flat", "washed-out", "over-saturated", "warm cast",
             "dark + flat", "flat + washed-out")
    perturbations = {name: enhance_quality.PERTURBATIONS[name] for name in names}
    pipeline = Pipeline(AnalyticCritic(AnalyticCriticConfig(sample_pixels=8192, restore=False)), rescore=False)
    cases = enhance_quality.evaluate(small_photos, perturbations, pipeline)
    summary = enhance_quality.summarize(cases)
    assert summary.mean_undone >= 0.5, enhance_quality.format_report(cases, summary)
    assert summary.moved_further_away == []
    assert summary.mean_psnr_gain > 3.0
    for photo, info in summary.unperturbed.items():
        assert math.isinf(info["psnr"]) and info["suggestions"] == [], photo


@pytest.mark.parametrize(("op", "direction"), [("exposure", 1), ("exposure", -1), ("contrast", 1), ("saturation", 1)])
def test_repeated_suggestions_are_clamped_to_the_operator_range(op, direction):
    params, conflicts = retouch_parameters([Suggestion(op, direction, "significantly")] * 40)
    low, high = retouch.RANGES[op]
    assert params[op] == (high if direction == 1 else low) and "clamped" in conflicts[0]
    retouch.apply(torch.zeros(1, 3, 2, 2), **params)  # a value the operator accepts
