"""Instruction (manual) mode: ``spc-fast edit --instruction TEXT`` parses the instruction with the suggestion grammar,
runs the rule executor without weights, and with the neural critic hands the diffusion artist H_c of one forward
pass over the chat holding the image and the instruction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_runs import run_cli

from spc_fast import imagefiles, retouch
from spc_fast.critic.vocabulary import OPS, RESTORATION_OPS, TEMPERATURE
from spc_fast.executor import retouch_parameters
from spc_fast.instruct import InstructionCritic, known_operations, parse_instruction
from spc_fast.pipeline import Pipeline


@pytest.fixture
def photo(tmp_path, photos):
    path = tmp_path / "chelsea.png"
    imagefiles.save_image(path, torch.from_numpy(photos["chelsea"][:48, :64]).permute(2, 0, 1).contiguous())
    return path


def test_rule_edit_runs_the_parsed_instruction(photo, tmp_path, capsys, torch_path):
    instruction = "1. slightly increase light&exposure;\n2. significantly decrease saturation; warmer"
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    code, stdout, err = run_cli(capsys, "edit", photo, "-o", out, "--instruction", instruction, "--report", report)
    assert code == 0, err
    parameters = {"exposure": 0.3, "contrast": 1.0, "saturation": 1 / 1.7, "temperature": 25.0}
    assert retouch_parameters(parse_instruction(instruction).suggestions) == (pytest.approx(parameters), [])
    expected = retouch.apply(imagefiles.load_tensor(photo)[None], **parameters)[0]
    assert torch.equal(imagefiles.load_tensor(out), expected)
    phrases = (
        "slightly increase light&exposure; significantly decrease saturation; change color temperature to "
        "moderately warmer"
    )
    assert f"{photo} -> {out}: {phrases}\n" in stdout and "score" not in stdout and "warning" not in err
    data = json.loads(report.read_text())
    assert data["instruction"] == instruction and data["critic"] == "InstructionCritic"
    record = data["images"][0]
    assert record["critic_text"] == instruction and record["parameters"] == pytest.approx(parameters)
    assert record["critique"] == {"reasoning": "", "suggestions": phrases.split("; "), "score": None, "errors": []}
    assert set(record["rewards"]) == {"compliance"}  # no format reward: nothing generated an answer
    assert record["not_executed"] == [] and record["score_after"] is None


def test_instruction_file_and_a_folder(photo, tmp_path, capsys, torch_path):
    instruction = tmp_path / "edits.txt"
    instruction.write_text("increase contrast\n\n", encoding="utf-8")
    code, stdout, err = run_cli(
        capsys, "edit", photo.parent, "-o", tmp_path / "edited", "--instruction-file", instruction, "--batch", 2
    )
    assert code == 0, err
    expected = retouch.apply(imagefiles.load_tensor(photo)[None], contrast=1.25)[0]
    assert torch.equal(imagefiles.load_tensor(tmp_path / "edited" / photo.name), expected)
    assert "moderately increase contrast" in stdout
    # the same run again: outputs are never replaced without --overwrite, --skip-existing leaves them
    code, _, err = run_cli(capsys, "edit", photo, "-o", tmp_path / "edited" / photo.name, "--instruction", "warmer")
    assert code == 1 and "--overwrite" in err
    code, _, err = run_cli(
        capsys, "edit", photo.parent, "-o", tmp_path / "edited", "--instruction", "warmer", "--skip-existing"
    )
    assert code == 0 and "whose output exists" in err


def test_ctrl_c_stops_an_edit_as_it_stops_enhance(photo, tmp_path, monkeypatch, capsys, torch_path):
    imagefiles.save_image(photo.parent / "second.png", imagefiles.load_tensor(photo).flip(-1))
    edit, calls = Pipeline.enhance, []

    def stopping(self, images):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return edit(self, images)

    monkeypatch.setattr(Pipeline, "enhance", stopping)
    out, report = tmp_path / "out", tmp_path / "report.json"
    code, _, err = run_cli(capsys, "edit", photo.parent, "-o", out, "--instruction", "warmer", "--report", report)
    assert code == 130 and "interrupted by SIGINT: 1 written, 0 failed, 1 not started" in err
    data = json.loads(report.read_text())
    assert data["interrupted"] == "SIGINT" and data["not_started"] == [str(photo.parent / "second.png")]
    assert sorted(p.name for p in out.iterdir()) == [photo.name]


def test_unknown_phrase_lists_the_operations_before_any_file_is_read(tmp_path, capsys):
    out = tmp_path / "new" / "folder"
    missing = tmp_path / "missing.png"  # never read: the instruction is refused first
    code, stdout, err = run_cli(
        capsys, "edit", missing, tmp_path, "-o", out, "--instruction", "slightly increase light&exposure; make it pop"
    )
    assert code == 1 and stdout == "" and err.count("\n") == 1
    assert "no operation recognised in 'make it pop'" in err and "missing.png" not in err
    assert all(phrase in err for phrase in known_operations())
    assert not out.exists() and not out.parent.exists()


@pytest.mark.parametrize(
    ("instruction", "message"),
    [
        ("   ", "the instruction is empty"),
        ("no edit needed", "asks for no edit"),
        ("don't increase contrast", "negated suggestion not understood"),
        ("increase contrast; slightly decrease contrast", r"both directions of contrast \(moderately .+\); keep one"),
        ("more haze", "haze can only be removed"),
        ("change the color temperature", "no 'warmer' or 'cooler'"),
    ],
)
def test_instructions_that_are_refused(instruction, message):
    with pytest.raises(ValueError, match=message) as error:
        InstructionCritic(instruction)
    if "both directions" not in message:  # a refusal of what is not understood says what can be written
        assert "remove haze" in str(error.value)


def test_every_listed_operation_is_understood():
    phrases = known_operations()
    assert len(phrases) == len(OPS)
    for op, phrase in zip(OPS, phrases, strict=True):
        alternatives = "warmer/cooler" if op == TEMPERATURE else "increase/decrease"
        variants = (
            [phrase] if op in RESTORATION_OPS else [phrase.replace(alternatives, w) for w in alternatives.split("/")]
        )
        for direction, variant in zip((1, -1), variants, strict=False):
            (suggestion,) = parse_instruction(f"slightly {variant}").suggestions
            assert (suggestion.op, suggestion.direction, suggestion.magnitude) == (op, direction, "slightly")


def test_restoration_without_the_neural_artist_is_reported_not_executed(photo, tmp_path, capsys, torch_path):
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    code, _, err = run_cli(
        capsys, "edit", photo, "-o", out, "--instruction", "remove haze; denoise", "--report", report
    )
    assert code == 0
    assert "warning: not executed without the neural artist: moderately remove haze; moderately remove noise" in err
    record = json.loads(report.read_text())["images"][0]
    assert record["not_executed"] == ["moderately remove haze", "moderately remove noise"]
    assert torch.equal(imagefiles.load_tensor(out), imagefiles.load_tensor(photo))  # nothing the rules can do


def test_flags_that_make_no_sense_in_edit_mode(photo, tmp_path, capsys):
    out = tmp_path / "out.png"
    edit = ["edit", photo, "-o", out, "--instruction", "warmer"]
    code, _, err = run_cli(capsys, *edit, "--set", "rescore=true")
    assert code == 1 and "no critic judges the result" in err
    code, _, err = run_cli(capsys, *edit, "--critic", "tiny")
    assert code == 1 and "--critic without --artist" in err
    for flag in (["--rescore"], ["--max-new-tokens", "8"]):
        with pytest.raises(SystemExit):
            run_cli(capsys, *edit, *flag)
        assert "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(capsys, "edit", photo, "-o", out)
    assert "one of the arguments --instruction --instruction-file is required" in capsys.readouterr().err
    assert not out.exists()


# ---- the neural path: H_c of the chat holding the image and the instruction ----


@pytest.fixture(scope="module")
def critic():
    pytest.importorskip("peft")
    from spc_fast.config import CriticConfig
    from spc_fast.models import tiny_critic

    return tiny_critic(config=CriticConfig(device="cpu", dtype="float32"))


def _reference_states(critic, image: np.ndarray, instruction: str) -> torch.Tensor:
    """[L, D] the last hidden states of one forward over the chat, built from the processor and the model alone."""
    from spc_fast.images import edit_image

    messages = [
        {"role": "system", "content": [{"type": "text", "text": critic.config.system_prompt}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
    ]
    chat = critic.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|im_start|>assistant\n") and chat.index("<|image_pad|>") < chat.index(instruction)
    inputs = critic.processor(text=[chat], images=[edit_image(image)], return_tensors="pt")
    with torch.no_grad():
        out = critic.model(**inputs, output_hidden_states=True)
    return out.hidden_states[-1][0]


def test_instruction_states_are_one_forward_over_the_chat(critic):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in ((60, 90), (28, 28))]
    instructions = ["slightly increase light&exposure; remove haze", "warmer"]
    hidden, mask = critic.instruction_states(images, instructions)
    lengths = []
    for i, (image, instruction) in enumerate(zip(images, instructions, strict=True)):
        expected = _reference_states(critic, image, instruction)
        n = expected.shape[0]
        lengths.append(n)
        torch.testing.assert_close(hidden[i, :n], expected, atol=2e-4, rtol=0)
        assert mask[i, :n].all() and not mask[i, n:].any() and (hidden[i, n:] == 0).all()
    assert lengths[0] != lengths[1] and hidden.shape[:2] == mask.shape == (2, max(lengths))
    assert mask.dtype == torch.long
    # one instruction for every image; the InstructionCritic hands exactly these states over
    single, single_mask = critic.instruction_states(images[1:], instructions[1])
    torch.testing.assert_close(single[0], hidden[1, : lengths[1]], atol=2e-4, rtol=0)
    judgement = InstructionCritic(instructions[1], critic).critique([torch.from_numpy(images[1]).permute(2, 0, 1)])
    torch.testing.assert_close(judgement.hidden, single, atol=1e-6, rtol=0)
    assert torch.equal(judgement.mask, single_mask) and judgement.texts == ["warmer"]
    assert judgement.outputs[0].score is None and judgement.attributes is None
    with pytest.raises(ValueError, match="got 1 instructions for 2 images"):
        critic.instruction_states(images, instructions[:1])


def test_edit_with_the_tiny_neural_models(photo, tmp_path, capsys):
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    instruction = "slightly increase light&exposure; remove haze"
    argv = ["edit", photo, "-o", out, "--preset", "tiny", "--instruction", instruction, "--report", report]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "not executed" not in err  # the diffusion artist executes restoration edits
    assert imagefiles.load_tensor(out).shape == imagefiles.load_tensor(photo).shape
    assert f"{photo} -> {out}: slightly increase light&exposure; moderately remove haze" in stdout
    data = json.loads(report.read_text())
    assert (data["critic"], data["artist"]) == ("InstructionCritic", "DiffusionArtist")
    assert data["critic_attention"] == "sdpa" and data["instruction"] == instruction
    assert set(data["images"][0]["rewards"]) == {"compliance"}
    assert data["images"][0]["not_executed"] == []
