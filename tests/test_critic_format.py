"""The critic's output language (spc_fast/critic/format.py, SPEC.md §4): parse, render, retouch parameters."""

import signal
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spc_fast import colour, critic, executor
from spc_fast.critic import vocabulary
from spc_fast.critic.format import parse, parse_suggestions, render, suggestion_phrase
from spc_fast.critic.vocabulary import (
    BOKEH,
    CONTRAST,
    DEPTH_OF_FIELD,
    ENHANCE_LOW_LIGHT,
    EXPOSURE,
    MAGNITUDES,
    OPS,
    REMOVE_BLUR,
    REMOVE_COMPRESSION,
    REMOVE_HAZE,
    REMOVE_MOIRE,
    REMOVE_NOISE,
    REMOVE_SHADOW,
    RESTORATION_OPS,
    SATURATION,
    TAGS,
    TEMPERATURE,
    TONE_OPS,
    CriticOutput,
    Suggestion,
)
from spc_fast.executor import retouch_parameters

SPEC_EXAMPLE = (
    "<think>1. The subject is underexposed.\n2. The light is cold.</think>\n"
    "<edit_start>\n"
    "1. moderately increase light&exposure;\n"
    "2. change color temperature to slightly warmer\n"
    "</edit_end>\n"
    "<answer>82</answer>"
)


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging if parsing ever goes super-linear (generous: no timing claim is made)."""

    def expire(signum, frame):
        raise TimeoutError(f"parse took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_public_names():
    assert critic.parse is parse and critic.render is render
    assert executor.retouch_parameters is retouch_parameters
    assert TONE_OPS == ("exposure", "contrast", "saturation", "temperature")
    assert set(OPS) == {*TONE_OPS, *RESTORATION_OPS, DEPTH_OF_FIELD, BOKEH}
    assert MAGNITUDES == ("slightly", "moderately", "significantly")


# ---- the release format ------------------------------------------------------------------------------------


def test_spec_example_parses():
    out = parse(SPEC_EXAMPLE)
    assert out == CriticOutput(
        reasoning="1. The subject is underexposed.\n2. The light is cold.",
        suggestions=[Suggestion(EXPOSURE, 1, "moderately"), Suggestion(TEMPERATURE, 1, "slightly")],
        score=82.0,
        errors=[],
    )


def test_render_writes_the_release_format_exactly():
    assert render(parse(SPEC_EXAMPLE)) == SPEC_EXAMPLE


def test_render_without_suggestions_or_score():
    out = CriticOutput("fine as is", [], None, [])
    text = render(out)
    assert text == "<think>fine as is</think>\n<edit_start>\n</edit_end>\n<answer></answer>"
    again = parse(text)
    assert again.suggestions == [] and again.score is None
    assert again.errors == ["score: empty <answer>"]


@pytest.mark.parametrize(
    ("score", "text"),
    [(82.0, "82"), (82.5, "82.5"), (100.0, "100"), (0.0, "0"), (1e-5, "0.00001"), (12.25, "12.25")],
)
def test_scores_render_without_trailing_zero_or_exponent(score, text):
    assert render(CriticOutput("", [], score, [])).endswith(f"<answer>{text}</answer>")


def test_render_rejects_what_the_format_cannot_carry():
    with pytest.raises(ValueError, match="unknown op"):
        render(CriticOutput("", [Suggestion("sharpen", 1)], 5.0, []))
    with pytest.raises(ValueError, match="magnitude"):
        render(CriticOutput("", [Suggestion(EXPOSURE, 1, "hugely")], 5.0, []))
    with pytest.raises(ValueError, match="direction"):
        render(CriticOutput("", [Suggestion(REMOVE_BLUR, -1)], 5.0, []))
    with pytest.raises(ValueError, match="direction"):
        render(CriticOutput("", [Suggestion(CONTRAST, 0)], 5.0, []))
    with pytest.raises(ValueError, match="</think>"):
        render(CriticOutput("a </think> b", [], 5.0, []))


# ---- scores ------------------------------------------------------------------------------------------------


def answer(content: str) -> str:
    return f"<think>t</think><edit_start>increase contrast</edit_end><answer>{content}</answer>"


@pytest.mark.parametrize(
    ("content", "score"),
    [
        ("82", 82.0),
        ("82.5", 82.5),
        (" 82 ", 82.0),
        ("\n82\n", 82.0),
        ("82/100", 82.0),
        ("82 / 100", 82.0),
        ("0", 0.0),
        ("100", 100.0),
        ("+7", 7.0),
        ("100.0", 100.0),
    ],
)
def test_readable_scores(content, score):
    out = parse(answer(content))
    assert out.score == score and out.errors == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("eighty", "cannot read"),
        ("", "empty"),
        ("   ", "empty"),
        ("8/10", "cannot read"),
        ("82%", "cannot read"),
        ("1e2", "cannot read"),
        ("nan", "cannot read"),
        ("٨٢", "cannot read"),
        ("82 points", "cannot read"),
        ("150", "outside"),
        ("-3", "outside"),
        ("100.5", "outside"),
        ("9" * 400, "outside"),
    ],
)
def test_unreadable_or_out_of_range_scores_are_none_with_an_error(content, message):
    out = parse(answer(content))
    assert out.score is None
    assert len(out.errors) == 1 and out.errors[0].startswith("score:") and message in out.errors[0]
    assert len(out.errors[0]) < 200


# ---- tags --------------------------------------------------------------------------------------------------


def test_truncated_answer_gives_no_score():
    out = parse("<think>r</think><edit_start>1. increase contrast</edit_end><answer>8")
    assert out.score is None and out.suggestions == [Suggestion(CONTRAST, 1)]
    assert any("<answer> is not closed" in e for e in out.errors)
    assert any(e.startswith("score:") for e in out.errors)


def test_truncated_edit_block_keeps_the_complete_items():
    out = parse("<think>r</think>\n<edit_start>\n1. slightly reduce saturation;\n2. significantly incr")
    assert out.suggestions == [Suggestion(SATURATION, -1, "slightly")]
    assert "tags: <edit_start> is not closed by </edit_end> (truncated?)" in out.errors
    assert "tags: missing <answer>" in out.errors
    assert any(e.startswith("edits:") for e in out.errors)


def test_unclosed_think_ends_at_the_next_section():
    out = parse("<think>analysis <edit_start>increase contrast</edit_end><answer>50</answer>")
    assert out.reasoning == "analysis" and out.suggestions == [Suggestion(CONTRAST, 1)] and out.score == 50.0
    assert out.errors == ["tags: <think> is not closed by </think> (truncated?)"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "tags: missing <think>"),
        ("<edit_start>increase contrast</edit_end><answer>5</answer>", "tags: missing <think>"),
        ("<think>a</think><answer>5</answer>", "tags: missing <edit_start>"),
        ("<think>a</think><edit_start>increase contrast</edit_end>", "tags: missing <answer>"),
        (
            "<think>a</think><think>b</think><edit_start>increase contrast</edit_end><answer>5</answer>",
            "tags: <think> appears 2 times; the first is used",
        ),
        (
            "<answer>5</answer><think>a</think><edit_start>increase contrast</edit_end>",
            "tags: <answer> must come after </edit_end>",
        ),
        (
            "<think>a <answer>5</answer></think><edit_start>increase contrast</edit_end>",
            "tags: <answer> must come after </edit_end>",
        ),
        (
            "<edit_start>increase contrast</edit_end><think>a</think><answer>5</answer>",
            "tags: <edit_start> must come after </think>",
        ),
        (
            "<THINK>a</THINK><edit_start>increase contrast</edit_end><answer>5</answer>",
            "tags: missing <think>",
        ),
        (
            "<think>a</think><edit_start>increase contrast</edit_start><answer>5</answer>",
            "tags: <edit_start> is not closed by </edit_end> (truncated?)",
        ),
    ],
)
def test_tag_problems_are_reported(text, expected):
    assert expected in parse(text).errors


def test_nested_duplicate_uses_the_first_occurrence():
    out = parse("<think>a<think>b</think>c</think><edit_start>raise contrast</edit_end><answer>5</answer>")
    assert out.reasoning == "a<think>b"
    assert "tags: <think> appears 2 times; the first is used" in out.errors
    assert "tags: </think> appears 2 times; the first is used" in out.errors
    assert out.suggestions == [Suggestion(CONTRAST, 1)] and out.score == 5.0


def test_unicode_survives_in_reasoning():
    out = parse(
        "<think>Ünïcødé 😀 analysis\u2028line</think><edit_start>1. remove moiré</edit_end><answer>3</answer>"
    )
    assert out.reasoning == "Ünïcødé 😀 analysis\u2028line"
    assert out.suggestions == [Suggestion(REMOVE_MOIRE, 1)] and out.errors == []


def test_non_string_input_is_an_error_not_an_exception():
    assert parse(None).errors == ["tags: expected a string, got NoneType"]  # type: ignore[arg-type]


# ---- suggestion grammar ------------------------------------------------------------------------------------

M, S, L = "moderately", "slightly", "significantly"

PHRASES = [
    # SPEC.md §4 table: every phrase of every tone/colour op
    ("moderately increase light&exposure", EXPOSURE, 1, M),
    ("increase light & exposure", EXPOSURE, 1, M),
    ("slightly decrease exposure", EXPOSURE, -1, S),
    ("significantly increase brightness", EXPOSURE, 1, L),
    ("increase contrast", CONTRAST, 1, M),
    ("slightly decrease contrast", CONTRAST, -1, S),
    ("significantly increase saturation", SATURATION, 1, L),
    ("moderately decrease vibrance", SATURATION, -1, M),
    ("change color temperature to slightly warmer", TEMPERATURE, 1, S),
    ("change colour temperature to significantly cooler", TEMPERATURE, -1, L),
    ("adjust the color temperature to be cooler", TEMPERATURE, -1, M),
    ("warmer", TEMPERATURE, 1, M),
    ("slightly cooler", TEMPERATURE, -1, S),
    ("make the image a little warmer", TEMPERATURE, 1, S),
    # direction verbs
    ("raise exposure", EXPOSURE, 1, M),
    ("boost saturation", SATURATION, 1, M),
    ("slightly brighten the image", EXPOSURE, 1, S),
    ("more contrast", CONTRAST, 1, M),
    ("higher saturation", SATURATION, 1, M),
    ("enhance contrast", CONTRAST, 1, M),
    ("reduce exposure", EXPOSURE, -1, M),
    ("lower the contrast", CONTRAST, -1, M),
    ("darken the photo", EXPOSURE, -1, M),
    ("less saturation", SATURATION, -1, M),
    ("decrease brightness", EXPOSURE, -1, M),
    # magnitude synonyms
    ("slight increase in contrast", CONTRAST, 1, S),
    ("increase contrast a bit", CONTRAST, 1, S),
    ("subtly reduce vibrance", SATURATION, -1, S),
    ("moderate increase of exposure", EXPOSURE, 1, M),
    ("strongly increase contrast", CONTRAST, 1, L),
    ("greatly reduce saturation", SATURATION, -1, L),
    ("boost vibrance a lot", SATURATION, 1, L),
    ("Light&Exposure: raise substantially", EXPOSURE, 1, L),
    # restoration ops (direction +1 whatever the verb)
    ("remove blur", REMOVE_BLUR, 1, M),
    ("remove the motion blur", REMOVE_BLUR, 1, M),
    ("deblur", REMOVE_BLUR, 1, M),
    ("remove noise", REMOVE_NOISE, 1, M),
    ("significantly reduce noise", REMOVE_NOISE, 1, L),
    ("denoise", REMOVE_NOISE, 1, M),
    ("remove haze", REMOVE_HAZE, 1, M),
    ("dehaze slightly", REMOVE_HAZE, 1, S),
    ("remove moire", REMOVE_MOIRE, 1, M),
    ("remove moiré patterns", REMOVE_MOIRE, 1, M),
    ("remove shadow", REMOVE_SHADOW, 1, M),
    ("remove the shadows", REMOVE_SHADOW, 1, M),
    ("enhance low light", ENHANCE_LOW_LIGHT, 1, M),
    ("enhance low-light", ENHANCE_LOW_LIGHT, 1, M),
    ("increase depth of field", DEPTH_OF_FIELD, 1, M),
    ("slightly decrease depth of field", DEPTH_OF_FIELD, -1, S),
    ("add bokeh", BOKEH, 1, M),
    ("reduce bokeh", BOKEH, -1, M),
    # numbering, bullets, case, punctuation
    ("3) INCREASE CONTRAST.", CONTRAST, 1, M),
    ("- slightly increase exposure,", EXPOSURE, 1, S),
    ("**Contrast**: increase slightly", CONTRAST, 1, S),
]


@pytest.mark.parametrize(("phrase", "op", "direction", "magnitude"), PHRASES)
def test_phrase_table(phrase, op, direction, magnitude):
    assert parse_suggestions(phrase) == ([Suggestion(op, direction, magnitude)], [])


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("increase contrast and saturation", [Suggestion(CONTRAST, 1), Suggestion(SATURATION, 1)]),
        (
            "slightly increase contrast and saturation",
            [Suggestion(CONTRAST, 1, S), Suggestion(SATURATION, 1, S)],
        ),
        ("contrast increase, saturation decrease", [Suggestion(CONTRAST, 1), Suggestion(SATURATION, -1)]),
        (
            "significantly increase contrast while slightly lowering saturation",
            [Suggestion(CONTRAST, 1, L), Suggestion(SATURATION, -1, S)],
        ),
        ("remove noise and haze", [Suggestion(REMOVE_NOISE, 1), Suggestion(REMOVE_HAZE, 1)]),
        (
            "1. increase contrast; 2. remove blur\n3. cooler",
            [Suggestion(CONTRAST, 1), Suggestion(REMOVE_BLUR, 1), Suggestion(TEMPERATURE, -1)],
        ),
        ("1. increase contrast;\n\n;;\n2.", [Suggestion(CONTRAST, 1)]),
    ],
)
def test_items_and_clauses(block, expected):
    assert parse_suggestions(block) == (expected, [])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("sharpen the details", "no operation recognised"),
        ("increase color temperature", "no 'warmer' or 'cooler'"),
        ("make it warmer cooler", "both warmer and cooler"),
        ("contrast", "no direction"),
        ("do not increase contrast", "negated"),
        ("don't touch the saturation", "negated"),
        ("increase noise", "noise can only be removed"),
        ("slightly", "no operation recognised"),
    ],
)
def test_unrecognised_lines_are_errors(line, message):
    block = f"1. increase exposure;\n2. {line};\n3. reduce saturation"
    suggestions, errors = parse_suggestions(block)
    assert suggestions == [Suggestion(EXPOSURE, 1), Suggestion(SATURATION, -1)]
    assert len(errors) == 1 and errors[0].startswith("edits: ") and message in errors[0]


def test_errors_are_capped_and_counted():
    suggestions, errors = parse_suggestions("\n".join(["gibberish"] * 100 + ["increase contrast"]))
    assert suggestions == [Suggestion(CONTRAST, 1)]
    assert len(errors) == vocabulary.MAX_ERRORS_PER_KIND + 1
    assert errors[-1] == f"edits: {100 - vocabulary.MAX_ERRORS_PER_KIND} more problems not listed"


def test_runaway_blocks_are_cut_off():
    suggestions, errors = parse_suggestions("increase contrast;" * (vocabulary.MAX_ITEMS + 5))
    assert len(suggestions) == vocabulary.MAX_ITEMS
    assert errors == [f"edits: more than {vocabulary.MAX_ITEMS} items in the edit block; the rest is ignored"]
    suggestions, errors = parse_suggestions("increase contrast " * vocabulary.MAX_ITEM_WORDS)
    assert suggestions == [] and "too many for one suggestion" in errors[0]


# ---- properties --------------------------------------------------------------------------------------------

_ALL_TAGS = [tag for pair in TAGS.values() for tag in pair]

suggestions_st = st.one_of(
    st.builds(
        Suggestion,
        st.sampled_from(TONE_OPS + (DEPTH_OF_FIELD, BOKEH)),
        st.sampled_from([1, -1]),
        st.sampled_from(MAGNITUDES),
    ),
    st.builds(Suggestion, st.sampled_from(RESTORATION_OPS), st.just(1), st.sampled_from(MAGNITUDES)),
)
reasoning_st = (
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
    .map(str.strip)
    .filter(lambda r: not any(tag in r for tag in _ALL_TAGS))
)
score_st = st.one_of(
    st.integers(0, 100).map(float), st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False)
)


@given(reasoning_st, st.lists(suggestions_st, max_size=6), score_st)
def test_parse_inverts_render(reasoning, suggestions, score):
    out = CriticOutput(reasoning, suggestions, score, [])
    assert parse(render(out)) == out


@given(st.text())
def test_parse_never_raises_on_arbitrary_text(text):
    out = parse(text)
    assert isinstance(out, CriticOutput) and all(isinstance(e, str) for e in out.errors)


_FRAGMENTS = [
    *_ALL_TAGS,
    "<think",
    "</edit_",
    "<answer>8",
    "<edit_end>",
    "</edit_start>",
    "<",
    ">",
    "/",
    "\n",
    ";",
    ",",
    " and ",
    "1. ",
    "82",
    "82.5",
    "/100",
    "-5",
    "eighty",
    "slightly",
    "significantly",
    "increase",
    "decrease",
    "light&exposure",
    "color temperature",
    "warmer",
    "cooler",
    "remove",
    "blur",
    "low light",
    "not",
    "é",
    "😀",
    "\u2028",
    "\r\n",
    "a little",
    "depth of field",
]


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join))
def test_parse_never_raises_on_tag_soup(text):
    out = parse(text)
    assert out.score is None or 0.0 <= out.score <= 100.0
    assert all(s.op in OPS and s.direction in (1, -1) and s.magnitude in MAGNITUDES for s in out.suggestions)


def _megabyte(unit: str) -> str:
    return unit * (1_000_000 // len(unit) + 1)


@pytest.mark.parametrize(
    "text",
    [
        _megabyte("<think>"),
        "<think>" + _megabyte("<"),
        "<edit_start>" + _megabyte("increase contrast "),
        "<edit_start>" + _megabyte("a;"),
        "<edit_start>" + _megabyte("x, "),
        "<edit_start>" + _megabyte("\n"),
        "<edit_start>" + _megabyte("é"),
        "<edit_start>" + _megabyte("change color temperature to slightly warmer;\n"),
        "<answer>" + _megabyte("9") + "</answer>",
        "<answer>82" + _megabyte(" ") + "x</answer>",
        _megabyte("<answer></edit_end><think>82/100;"),
    ],
    ids=lambda t: repr(t[:24]),
)
def test_one_megabyte_adversarial_strings_parse(text):
    assert len(text) >= 1_000_000
    with deadline(30):
        out = parse(text)
    assert len(out.errors) <= 3 * (vocabulary.MAX_ERRORS_PER_KIND + 2)
    assert len(out.suggestions) <= vocabulary.MAX_ITEMS


# ---- retouch parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "key", "steps", "multiplicative"),
    [
        (EXPOSURE, "exposure", (0.3, 0.6, 1.0), False),
        (CONTRAST, "contrast", (1.1, 1.25, 1.5), True),
        (SATURATION, "saturation", (1.15, 1.35, 1.7), True),
        (TEMPERATURE, "temperature", (10, 25, 50), False),
    ],
)
def test_retouch_parameters_follow_the_spec_steps(op, key, steps, multiplicative):
    for magnitude, step in zip(MAGNITUDES, steps, strict=True):
        for direction in (1, -1):
            params, conflicts = retouch_parameters([Suggestion(op, direction, magnitude)])
            expected = step**direction if multiplicative else direction * step
            assert conflicts == [] and params[key] == pytest.approx(expected)
            neutral = {"exposure": 0.0, "contrast": 1.0, "saturation": 1.0, "temperature": 0.0}
            assert {k: v for k, v in params.items() if k != key} == {
                k: v for k, v in neutral.items() if k != key
            }


def test_warmer_is_positive_mired():
    params, _ = retouch_parameters(parse(SPEC_EXAMPLE).suggestions)
    assert params == {"exposure": 0.6, "contrast": 1.0, "saturation": 1.0, "temperature": 10.0}


def test_same_direction_suggestions_combine():
    params, conflicts = retouch_parameters(
        [
            Suggestion(EXPOSURE, 1, S),
            Suggestion(EXPOSURE, 1, L),
            Suggestion(CONTRAST, -1, M),
            Suggestion(CONTRAST, -1, S),
            Suggestion(TEMPERATURE, -1, M),
            Suggestion(TEMPERATURE, -1, M),
        ]
    )
    assert conflicts == []
    assert params["exposure"] == pytest.approx(1.3)
    assert params["contrast"] == pytest.approx(1 / (1.25 * 1.1))
    assert params["temperature"] == pytest.approx(-50.0)
    assert params["saturation"] == 1.0


def test_opposite_directions_conflict_and_stay_neutral():
    params, conflicts = retouch_parameters(
        [Suggestion(SATURATION, 1, L), Suggestion(SATURATION, -1, S), Suggestion(EXPOSURE, 1, S)]
    )
    assert params["saturation"] == 1.0 and params["exposure"] == pytest.approx(0.3)
    assert len(conflicts) == 1 and conflicts[0].startswith("saturation")


def test_temperature_beyond_the_operator_range_is_clamped_and_reported():
    # 12 x 50 mired: the parameters must stay valid for retouch.apply, which refuses the raw sum
    for direction, limit in ((1, colour.TEMPERATURE_DELTA_MAX), (-1, colour.TEMPERATURE_DELTA_MIN)):
        params, conflicts = retouch_parameters([Suggestion(TEMPERATURE, direction, L)] * 12)
        assert params["temperature"] == limit
        assert len(conflicts) == 1 and conflicts[0].startswith("temperature:") and "clamped" in conflicts[0]
        colour.temperature_matrix(params["temperature"])


def test_restoration_ops_are_not_executed():
    params, conflicts = retouch_parameters([Suggestion(REMOVE_BLUR, 1), Suggestion(BOKEH, -1)])
    assert (
        params == {"exposure": 0.0, "contrast": 1.0, "saturation": 1.0, "temperature": 0.0}
        and conflicts == []
    )


def test_every_canonical_phrase_parses_back():
    for op in OPS:
        for direction in (1,) if op in RESTORATION_OPS else (1, -1):
            for magnitude in MAGNITUDES:
                s = Suggestion(op, direction, magnitude)
                assert parse_suggestions(suggestion_phrase(s)) == ([s], [])


# ---- "no edit needed" and compression artifacts (SPEC.md §4) -------------------------------------------------------


@pytest.mark.parametrize("item", ["1. no edit needed", "1. No edit needed.", "  - NO EDIT NEEDED ; "])
def test_no_edit_needed_is_an_explicit_empty_answer(item):
    out = parse(f"<think>fine</think>\n<edit_start>\n{item}\n</edit_end>\n<answer>95</answer>")
    assert out.suggestions == [] and out.no_edit and out.errors == []
    assert parse(render(out)) == out and "1. no edit needed" in render(out)


def test_empty_edit_block_is_not_no_edit():
    out = parse("<think>x</think>\n<edit_start>\n</edit_end>\n<answer>95</answer>")
    assert out.suggestions == [] and not out.no_edit


def test_no_edit_among_suggestions_is_an_error():
    block = "1. no edit needed;\n2. increase contrast"
    out = parse(f"<think>x</think>\n<edit_start>\n{block}\n</edit_end>\n<answer>5</answer>")
    assert not out.no_edit and out.suggestions == [Suggestion(CONTRAST, 1, "moderately")]
    assert any("only item" in e for e in out.errors)
    with pytest.raises(ValueError, match="no_edit"):
        render(CriticOutput("x", [Suggestion(CONTRAST, 1)], 50.0, no_edit=True))


@pytest.mark.parametrize(
    "phrase", ["remove compression artifacts", "slightly remove JPEG artifacts", "reduce compression artefacts"]
)
def test_compression_artifacts_are_a_restoration_op(phrase):
    (suggestion,), errors = parse_suggestions(phrase)
    assert errors == [] and suggestion.op == REMOVE_COMPRESSION and suggestion.direction == 1
    assert REMOVE_COMPRESSION in RESTORATION_OPS
    assert parse_suggestions(suggestion_phrase(suggestion))[0] == [suggestion]
