"""The critic's output format (SPEC.md §4): ``parse`` reads a tagged answer into a ``CriticOutput``, ``render`` writes
one back.

The critic answers::

    <think>…numbered analysis…</think>
    <edit_start>
    1. moderately increase light&exposure;
    2. change color temperature to slightly warmer
    </edit_end>
    <answer>82</answer>

Tags are matched exactly (case-sensitive); the first occurrence of each is used and every irregularity
(missing, repeated, unclosed, out of order, overlapping) is recorded in ``CriticOutput.errors`` as
``"tags: …"``. An unclosed section runs to the next opening tag or the end of the text (a truncated
generation). Scores read "82", "82.5", " 82 " and "82/100"; anything else, an unclosed ``<answer>`` (the
number may be cut off) and scores outside [0, 100] give ``score=None`` and a ``"score: …"`` error, never a
clamped value. Suggestion problems are ``"edits: …"`` errors; they never drop the rest of the parse. Work is
linear in the text and capped: only the first MAX_ITEMS items of the edit block are read and an item of more
than MAX_ITEM_WORDS words is rejected, so a runaway 1 MB generation parses in milliseconds.

The suggestion grammar and its vocabulary are in ``grammar`` and ``vocabulary`` (their docstrings list the words).
An edit block holding only ``1. no edit needed`` is the explicit empty answer (``CriticOutput.no_edit``).
"""

from __future__ import annotations

import numpy as np

from spc_fast.critic.grammar import NUMBER, Errors, parse_suggestions, quote, read_block
from spc_fast.critic.vocabulary import (
    CANONICAL,
    MAGNITUDES,
    NO_EDIT,
    OPS,
    RESTORATION_OPS,
    SECTIONS,
    TAGS,
    TEMPERATURE,
    CriticOutput,
    Suggestion,
)

__all__ = ["CriticOutput", "Suggestion", "parse", "parse_suggestions", "render", "suggestion_phrase"]


# ---- parsing -----------------------------------------------------------------------------------------------


def _parse_score(content: str, errors: Errors) -> float | None:
    text = content.strip()
    if not text:
        errors.add("score", "empty <answer>")
        return None
    number, slash, denominator = text.partition("/")
    number = number.strip()
    if (slash and denominator.strip() != "100") or NUMBER.fullmatch(number) is None:
        errors.add("score", f"cannot read a score from {quote(text)}; expected e.g. 82, 82.5 or 82/100")
        return None
    score = float(number)
    if not 0.0 <= score <= 100.0:
        errors.add("score", f"score {number[:20]} is outside [0, 100]")
        return None
    return score


def _find_sections(text: str, errors: Errors) -> dict[str, tuple[int, int, int, bool]]:
    """First occurrence of each section: (open tag position, content start, content end, closed)."""
    found = {}
    for name in SECTIONS:
        open_tag, close_tag = TAGS[name]
        for tag in (open_tag, close_tag):
            count = text.count(tag)
            if count > 1:
                errors.add("tags", f"{tag} appears {count} times; the first is used")
        position = text.find(open_tag)
        if position < 0:
            errors.add("tags", f"missing {open_tag}")
            continue
        start = position + len(open_tag)
        end = text.find(close_tag, start)
        closed = end >= 0
        if not closed:
            errors.add("tags", f"{open_tag} is not closed by {close_tag} (truncated?)")
            later = [text.find(TAGS[other][0], start) for other in SECTIONS if other != name]
            end = min([p for p in later if p >= 0], default=len(text))
        found[name] = (position, start, end, closed)
    present = [name for name in SECTIONS if name in found]
    for first, second in zip(present, present[1:], strict=False):
        first_end = found[first][2] + (len(TAGS[first][1]) if found[first][3] else 0)
        if first_end > found[second][0]:
            errors.add("tags", f"{TAGS[second][0]} must come after {TAGS[first][1]}")
    return found


def parse(text: str) -> CriticOutput:
    """Read a critic answer; never raises. Problems are listed in ``errors`` (see the module docstring)."""
    errors = Errors()
    if not isinstance(text, str):
        errors.add("tags", f"expected a string, got {type(text).__name__}")
        return CriticOutput("", [], None, errors.finish())
    sections = _find_sections(text, errors)
    reasoning, suggestions, score, no_edit = "", [], None, False
    if "think" in sections:
        _, start, end, _ = sections["think"]
        reasoning = text[start:end].strip()
    if "edit" in sections:
        _, start, end, _ = sections["edit"]
        suggestions, no_edit = read_block(text[start:end], errors)
    if "answer" in sections:
        _, start, end, closed = sections["answer"]
        if closed:
            score = _parse_score(text[start:end], errors)
        else:
            errors.add("score", "not read from an unclosed <answer>")
    return CriticOutput(reasoning, suggestions, score, errors.finish(), no_edit)


# ---- rendering ---------------------------------------------------------------------------------------------


def suggestion_phrase(suggestion: Suggestion) -> str:
    """The canonical phrase of a suggestion, e.g. "moderately increase light&exposure"."""
    op, direction, magnitude = suggestion.op, suggestion.direction, suggestion.magnitude
    if op not in CANONICAL:
        raise ValueError(f"unknown op {op!r}; use one of {', '.join(OPS)}")
    if magnitude not in MAGNITUDES:
        raise ValueError(f"unknown magnitude {magnitude!r}; use one of {', '.join(MAGNITUDES)}")
    if direction not in (1, -1) or (op in RESTORATION_OPS and direction != 1):
        allowed = "+1" if op in RESTORATION_OPS else "+1 or -1"
        raise ValueError(f"direction of {op} must be {allowed}, got {direction!r}")
    if op == TEMPERATURE:
        verb = "warmer" if direction == 1 else "cooler"
    else:
        verb = "increase" if direction == 1 else "decrease"
    return CANONICAL[op].format(m=magnitude, v=verb)


def _format_score(score: float) -> str:
    return np.format_float_positional(float(score), trim="-")


def render(output: CriticOutput) -> str:
    """Write ``output`` in the release's tag format; ``parse(render(x)) == x`` for every well-formed ``x``.

    Raises ValueError for what the format cannot carry: an invalid suggestion, or reasoning containing a tag.
    """
    for open_tag, close_tag in TAGS.values():
        for tag in (open_tag, close_tag):
            if tag in output.reasoning:
                raise ValueError(
                    f"reasoning contains the tag {tag}; it would end or confuse the <think> section"
                )
    if output.no_edit and output.suggestions:
        raise ValueError("an answer with suggestions cannot also say no edit is needed; set no_edit=False")
    phrases = [suggestion_phrase(s) for s in output.suggestions] or ([NO_EDIT] if output.no_edit else [])
    lines = [f"{i}. {phrase}" for i, phrase in enumerate(phrases, 1)]
    edits = "\n".join(
        ["<edit_start>", ";\n".join(lines), "</edit_end>"] if lines else ["<edit_start>", "</edit_end>"]
    )
    score = "" if output.score is None else _format_score(output.score)
    return f"<think>{output.reasoning}</think>\n{edits}\n<answer>{score}</answer>"


