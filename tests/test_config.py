"""One configuration: dataclass defaults, presets, TOML files, ``key=value`` overrides and the command line mapping."""

from __future__ import annotations

import dataclasses

import pytest

from spc_fast import cli
from spc_fast.config import (
    ATTENTION_BACKENDS,
    PRESETS,
    ArtistConfig,
    CriticConfig,
    PipelineConfig,
    from_dict,
    load_toml,
    override,
    resolve,
    to_dict,
)
from spc_fast.critic.prompts import ANALYSIS_PROMPT, SYSTEM_PROMPT


def test_defaults_follow_the_release():
    config = PipelineConfig()
    assert config.critic.max_new_tokens == 1280 and config.critic.temperature == 0.0
    assert config.critic.system_prompt == SYSTEM_PROMPT and config.critic.instruction == ANALYSIS_PROMPT
    assert config.artist.steps == 20 and config.artist.guidance == 1.0 and config.artist.pixels == 1024 * 1024
    assert config.rescore is False and config.critic.weights is None and config.artist.weights is None


def test_configs_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        CriticConfig(None, 12)  # the point is the positional call
    with pytest.raises(dataclasses.FrozenInstanceError):
        ArtistConfig().steps = 3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CriticConfig(max_new_tokens=0), "max_new_tokens"),
        (lambda: CriticConfig(top_p=0.0), "top_p"),
        (lambda: CriticConfig(attention="fast"), "attention"),
        (lambda: ArtistConfig(dtype="float64"), "dtype"),
        (lambda: ArtistConfig(pixels=10), "pixels"),
        (lambda: ArtistConfig(steps=1), "at least 2"),
        (lambda: ArtistConfig(guidance=3.0), "negative prompt"),
        (lambda: PipelineConfig(artist=ArtistConfig(weights="tiny")), "critic.weights"),
        (lambda: PipelineConfig(batch_size=0), "batch_size"),
    ],
)
def test_invalid_values_name_the_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_overrides_parse_toml_values_and_bare_strings():
    config = override(PRESETS["tiny"], ["artist.steps=4", "rescore=true", "critic.attention=sdpa",
                                        "critic.device=none", "critic.weights=/models/my critic", "critic.top_p=1",
                                        "artist.release=2509"])
    assert config.artist.steps == 4 and config.rescore is True and config.critic.attention == "sdpa"
    assert config.critic.device is None and config.critic.weights == "/models/my critic"
    assert config.critic.top_p == 1.0 and isinstance(config.critic.top_p, float)
    assert config.artist.release == "2509"  # a string field takes what is written, digits too


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("artist.steps=x", "artist.steps: expected int"),
        ("critic.steps=3", "no setting 'critic.steps'"),
        ("artist=3", "is a section"),
        ("steps", "key=value"),
        ("critic.compile=1", "expected bool"),
    ],
)
def test_bad_overrides_are_clear(assignment, message):
    with pytest.raises(ValueError, match=message):
        override(PipelineConfig(), [assignment])


def test_toml_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('rescore = true\n[critic]\nweights = "/m/critic"\nmax_new_tokens = 64\n[artist]\nsteps = 8\n')
    config = load_toml(PipelineConfig, path)
    assert config.rescore and config.critic.max_new_tokens == 64 and config.artist.steps == 8
    assert from_dict(PipelineConfig, to_dict(config)) == config
    assert resolve(file=path, overrides=["artist.steps=6"]).artist.steps == 6
    on_tiny = resolve("tiny", file=path)  # the file's settings over the preset's, table by table
    assert on_tiny.artist.steps == 8 and on_tiny.artist.pixels == PRESETS["tiny"].artist.pixels
    assert on_tiny.critic.weights == "/m/critic" and on_tiny.critic.dtype == "float32"
    path.write_text("[critic]\nmax_tokens = 3\n")
    with pytest.raises(ValueError, match="unknown setting critic.max_tokens"):
        load_toml(PipelineConfig, path)
    path.write_text("[critic\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_toml(PipelineConfig, path)
    with pytest.raises(ValueError, match="unknown preset"):
        resolve("huge")


def test_command_line_maps_flags_onto_the_config(tmp_path):
    parser = cli.build_parser()
    args = parser.parse_args(["enhance", "x.png", "-o", "y.png", "--critic", "tiny", "--artist", "tiny",
                              "--steps", "3", "--attention", "sdpa", "--set", "artist.pixels=4096", "--rescore"])
    config = cli.pipeline_config(args)
    assert config.critic.weights == config.artist.weights == "tiny" and config.artist.steps == 3
    assert config.critic.attention == config.artist.attention == "sdpa" and config.artist.pixels == 4096
    assert config.rescore is True and config.critic.max_new_tokens == CriticConfig().max_new_tokens
    stray = parser.parse_args(["enhance", "x.png", "-o", "y.png", "--steps", "3"])
    with pytest.raises(ValueError, match="--steps configure the neural artist"):
        cli.pipeline_config(stray)


def test_one_list_of_attention_backends():
    from spc_fast import attention

    assert attention.BACKENDS == ATTENTION_BACKENDS


def test_flags_combine_with_the_preset_and_refuse_what_cannot_run():
    parser = cli.build_parser()
    args = parser.parse_args(["enhance", "x.png", "-o", "y", "--preset", "tiny", "--artist", "t2"])
    on_tiny = cli.pipeline_config(args)
    assert on_tiny.critic.weights == "tiny" and on_tiny.artist.weights == "t2"  # the preset's critic counts
    with pytest.raises(ValueError, match="--artist needs --critic"):
        cli.pipeline_config(parser.parse_args(["enhance", "x.png", "-o", "y", "--artist", "a"]))
    with pytest.raises(ValueError, match="xformers applies to the diffusion artist only"):
        cli.pipeline_config(parser.parse_args(["critique", "x.png", "--critic", "c", "--attention", "xformers"]))
    both = cli.pipeline_config(parser.parse_args(
        ["enhance", "x.png", "-o", "y", "--critic", "c", "--artist", "a", "--attention", "xformers"]))
    assert both.artist.attention == "xformers" and both.critic.attention == "auto"


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_prompt_file_sets_the_critic_texts(tmp_path, suffix):
    path = tmp_path / f"prompts{suffix}"
    if suffix == ".json":
        path.write_text('{"system": "You judge photos.", "instruction": "Say what to edit."}')
    else:
        path.write_text('system = "You judge photos."\ninstruction = """Say what to edit."""\n')
    config = cli.pipeline_config(cli.build_parser().parse_args(
        ["critique", "x.png", "--critic", "c", "--critic-prompt", str(path)]))
    assert config.critic.system_prompt == "You judge photos." and config.critic.instruction == "Say what to edit."
    with pytest.raises(ValueError, match="--critic-prompt configure the neural critic"):
        cli.pipeline_config(cli.build_parser().parse_args(["critique", "x.png", "--critic-prompt", str(path)]))


def test_bad_prompt_files_are_named(tmp_path):
    from spc_fast.config import read_prompts

    path = tmp_path / "p.toml"
    path.write_text('system = "x"\n')
    with pytest.raises(ValueError, match="exactly two non-empty strings"):
        read_prompts(path)
    path.write_text("system = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        read_prompts(path)
    with pytest.raises(ValueError, match="cannot read the prompt file"):
        read_prompts(tmp_path / "missing.json")
