"""A critic directory says which instruction texts it was trained with: spc-fast's exports record them
(``qwen_vl.PROMPT_FILE``), so loading one with the same texts is silent, with other texts names the record and the
flag that uses it, and the release's checkpoint (no record) keeps its notice about the release's own wording."""

import logging

import pytest

from spc_fast import notices
from spc_fast.config import CriticConfig, read_prompts
from spc_fast.critic.prompts import ANALYSIS_PROMPT, SYSTEM_PROMPT
from spc_fast.models import build_critic, qwen_vl
from spc_fast.models.factory import tiny_critic_corpus


@pytest.fixture(scope="module")
def saved_critic(tmp_path_factory):
    directory = tmp_path_factory.mktemp("critic")
    model, processor = qwen_vl.build_tiny_critic(0, corpus=tiny_critic_corpus())
    qwen_vl.save_critic(model, processor, directory)
    return directory


def _notices(directory, caplog, **prompts) -> list[str]:
    notices.forget()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spc_fast"):
        build_critic(CriticConfig(weights=str(directory), device="cpu", dtype="float32", **prompts))
    return [r.getMessage() for r in caplog.records if "instruction" in r.getMessage()]


def test_the_release_checkpoint_keeps_its_notice(saved_critic, caplog):
    (saved_critic / qwen_vl.PROMPT_FILE).unlink(missing_ok=True)
    (message,) = _notices(saved_critic, caplog)
    assert "release's own system line" in message and "--critic-prompt FILE" in message


def test_a_recorded_prompt_is_silent_when_it_runs_as_trained(saved_critic, caplog):
    qwen_vl.write_prompt(saved_critic, SYSTEM_PROMPT, ANALYSIS_PROMPT)
    assert read_prompts(saved_critic / qwen_vl.PROMPT_FILE) == {"system_prompt": SYSTEM_PROMPT,
                                                                "instruction": ANALYSIS_PROMPT}
    assert _notices(saved_critic, caplog) == []


def test_a_recorded_prompt_names_itself_when_it_runs_with_other_texts(saved_critic, caplog):
    qwen_vl.write_prompt(saved_critic, "You grade photos.", "What is wrong with this photo?")
    (message,) = _notices(saved_critic, caplog)
    record = saved_critic / qwen_vl.PROMPT_FILE
    assert str(record) in message and f"--critic-prompt {record}" in message
