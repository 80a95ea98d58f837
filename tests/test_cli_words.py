"""What reaches the user is one line per problem in command-line words: flags named as flags, bad numbers said as
such, no Python keyword advice, no traceback for bad input."""

from __future__ import annotations

import pytest

from spc_fast import cli, commands

ENHANCE = ["enhance", "in.png", "-o", "out.png"]


def _usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*ENHANCE, "--batch", "x"], "argument --batch: expected a whole number, got 'x'"),
        ([*ENHANCE, "--batch", "0"], "argument --batch: must be at least 1, got 0"),
        ([*ENHANCE, "--batch", "2.5"], "argument --batch: expected a whole number, got '2.5'"),
        ([*ENHANCE, "--steps", "many"], "argument --steps: expected a whole number, got 'many'"),
        ([*ENHANCE, "--steps", "1"], "argument --steps: must be at least 2, got 1"),
        ([*ENHANCE, "--pixels", "1e6"], "argument --pixels: expected a whole number, got '1e6'"),
        ([*ENHANCE, "--seed", "0.5"], "argument --seed: expected a whole number, got '0.5'"),
        ([*ENHANCE, "--max-new-tokens", ""], "argument --max-new-tokens: expected a whole number, got ''"),
        (["critique", "a.png", "--max-new-tokens", "-3"], "argument --max-new-tokens: must be at least 1, got -3"),
        (["retouch", "a.png", "-o", "b.png", "--exposure", "bright"], "argument --exposure: expected a number, got"),
        (["retouch", "a.png", "-o", "b.png", "--contrast", "1,2"], "argument --contrast: expected a number, got '1,2'"),
        (["retouch", "a.png", "-o", "b.png", "--saturation", "x"], "argument --saturation: expected a number"),
        (["retouch", "a.png", "-o", "b.png", "--temperature", "warm"], "argument --temperature: expected a number"),
    ],
)
def test_numeric_flags_say_what_they_expected(capsys, argv, message):
    err = _usage_error(capsys, argv)
    assert message in err and "invalid" not in err and "parse" not in err


def test_whole_numbers_accept_underscores_and_signs():
    parser = cli.build_parser()
    args = parser.parse_args([*ENHANCE, "--pixels", "1_048_576", "--seed", "-7", "--batch", "+3"])
    assert (args.pixels, args.seed, args.batch) == (1048576, -7, 3)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (PermissionError(13, "Permission denied", "cfg.toml"), "cfg.toml: permission denied; check the path"),
        (IsADirectoryError(21, "Is a directory", "models"), "models: is a directory; check the path"),
        (FileNotFoundError("critic/vlm: missing config.json; pass the release folder"), "critic/vlm: missing"),
        (MemoryError(), "out of memory; free memory, or use a smaller --batch, --pixels or image"),
    ],
)
def test_errors_that_end_a_command_are_one_line(monkeypatch, capsys, error, line):
    def fail(args, config):
        raise error

    monkeypatch.setattr(commands, "run_analyze", fail)
    assert cli.main(["analyze", "a.png"]) == 1
    err = capsys.readouterr().err
    assert err == f"spc-fast: error: {line}" + err.split(line, 1)[1] and err.count("\n") == 1


def test_ctrl_c_outside_a_batch_is_a_line_and_status_130(monkeypatch, capsys):
    def interrupted(args, config):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "run_analyze", interrupted)
    assert cli.main(["analyze", "a.png"]) == 130
    assert capsys.readouterr().err == "spc-fast: interrupted by SIGINT\n"


def test_existing_output_names_the_flag_not_a_keyword(tmp_path, capsys):
    import numpy as np

    from spc_fast.imagefiles import save_image

    source = save_image(tmp_path / "a.png", np.full((8, 8, 3), 90, np.uint8))
    (tmp_path / "b.png").write_bytes(b"keep")
    assert cli.main(["retouch", str(source), "-o", str(tmp_path / "b.png")]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--exposure", "200", "--exposure=200 EV is out of range; use a value in [-20, 20] EV"),
        ("--contrast", "0", "--contrast must be > 0, got 0.0"),
        ("--saturation", "1e9", "--saturation=1e+09 is out of range"),
        ("--temperature", "-500", "--temperature=-500 mired is out of range"),
    ],
)
def test_retouch_values_out_of_range_name_the_flag(capsys, tmp_path, flag, value, message):
    out = tmp_path / "b.png"
    assert cli.main(["retouch", str(tmp_path / "missing.png"), "-o", str(out), flag, value]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()  # checked before the input is even read
