"""The critic's output language (SPEC.md §4): parse and render its tagged answer, and turn its
suggestions into retouch parameters.

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

Suggestion grammar. The edit block splits into items at newlines and ";"; numbering, bullets, punctuation,
case and accents are ignored. An item splits into clauses at "," and "and". In a clause, each operation
phrase takes the nearest direction word and magnitude adverb before it (else after it, within the clause;
else the previous operation's in the same item, so "increase contrast and saturation" is two increases).
Vocabulary:

- operations: exposure ("light&exposure", "exposure", "brightness"), contrast, saturation ("saturation",
  "vibrance"), temperature ("color/colour temperature … warmer/cooler", "warmer", "cooler", "warm",
  "cool"); restoration (direction +1): "remove blur" (also "deblur"), "remove noise" ("denoise"),
  "remove haze" ("dehaze"), "remove moire", "remove shadow(s)", "enhance low light"; "depth of field" and
  "bokeh" with a direction. Restoration objects need no verb ("remove", "reduce", "fix", …); an increasing
  verb on them is an error.
- directions: +1 increase, raise, boost, more, higher, enhance, add; -1 decrease, reduce, lower, less.
  "brighten"/"brighter" (+1) and "darken"/"darker" (-1) also imply exposure in a clause naming no
  operation. A temperature's direction comes only from warmer/cooler ("increase color temperature" is
  ambiguous: an error).
- magnitudes: "slightly" (also "slight", "a little", "a bit", "subtly", "mildly", "somewhat"),
  "moderately" ("moderate"), "significantly" ("significant", "strongly", "greatly", "substantially",
  "considerably", "dramatically", "heavily", "a lot"); "moderately" when absent.
- a clause with "not", "no", "don't", "never" or "avoid" is rejected as an error rather than misread.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from spc_fast import colour

EXPOSURE = "exposure"
CONTRAST = "contrast"
SATURATION = "saturation"
TEMPERATURE = "temperature"
REMOVE_BLUR = "remove_blur"
REMOVE_NOISE = "remove_noise"
REMOVE_HAZE = "remove_haze"
REMOVE_MOIRE = "remove_moire"
REMOVE_SHADOW = "remove_shadow"
ENHANCE_LOW_LIGHT = "enhance_low_light"
DEPTH_OF_FIELD = "depth_of_field"
BOKEH = "bokeh"

# Same order as photometric.ATTRIBUTE_NAMES: the tone op at index k moves attribute k.
TONE_OPS = (EXPOSURE, CONTRAST, SATURATION, TEMPERATURE)
RESTORATION_OPS = (REMOVE_BLUR, REMOVE_NOISE, REMOVE_HAZE, REMOVE_MOIRE, REMOVE_SHADOW, ENHANCE_LOW_LIGHT)
OPS = (*TONE_OPS, *RESTORATION_OPS, DEPTH_OF_FIELD, BOKEH)

SLIGHTLY, MODERATELY, SIGNIFICANTLY = "slightly", "moderately", "significantly"
MAGNITUDES = (SLIGHTLY, MODERATELY, SIGNIFICANTLY)
DEFAULT_MAGNITUDE = MODERATELY

# Executor parameter per magnitude (slightly, moderately, significantly), SPEC.md §4.
STEPS = {
    EXPOSURE: (0.3, 0.6, 1.0),  # ev, signed by direction
    CONTRAST: (1.1, 1.25, 1.5),  # c = step or 1 / step
    SATURATION: (1.15, 1.35, 1.7),  # s = step or 1 / step
    TEMPERATURE: (10.0, 25.0, 50.0),  # delta_mired, warmer +
}
NEUTRAL_PARAMETERS = {EXPOSURE: 0.0, CONTRAST: 1.0, SATURATION: 1.0, TEMPERATURE: 0.0}
_MULTIPLICATIVE = (CONTRAST, SATURATION)

TAGS = {
    "think": ("<think>", "</think>"),
    "edit": ("<edit_start>", "</edit_end>"),
    "answer": ("<answer>", "</answer>"),
}
_SECTIONS = tuple(TAGS)

# Bounds that keep a runaway generation cheap to parse: errors kept per kind (the rest are counted), items
# read from the edit block, words in one item. A real answer has a handful of items of a few words each.
MAX_ERRORS_PER_KIND = 20
MAX_ITEMS = 256
MAX_ITEM_WORDS = 128


@dataclass(frozen=True)
class Suggestion:
    op: str
    direction: int
    magnitude: str = DEFAULT_MAGNITUDE


@dataclass
class CriticOutput:
    reasoning: str
    suggestions: list[Suggestion]
    score: float | None
    errors: list[str] = field(default_factory=list)


# ---- vocabulary --------------------------------------------------------------------------------------------

_OP, _DIR, _MAG, _FIX, _NEG = range(5)

_OP_PHRASES = {
    "light & exposure": (EXPOSURE, 0),
    "exposure": (EXPOSURE, 0),
    "brightness": (EXPOSURE, 0),
    "contrast": (CONTRAST, 0),
    "saturation": (SATURATION, 0),
    "vibrance": (SATURATION, 0),
    "color temperature": (TEMPERATURE, 0),
    "colour temperature": (TEMPERATURE, 0),
    "temperature": (TEMPERATURE, 0),
    "warmer": (TEMPERATURE, 1),
    "warm": (TEMPERATURE, 1),
    "cooler": (TEMPERATURE, -1),
    "cool": (TEMPERATURE, -1),
    "blur": (REMOVE_BLUR, 0),
    "blurriness": (REMOVE_BLUR, 0),
    "deblur": (REMOVE_BLUR, 0),
    "noise": (REMOVE_NOISE, 0),
    "denoise": (REMOVE_NOISE, 0),
    "haze": (REMOVE_HAZE, 0),
    "dehaze": (REMOVE_HAZE, 0),
    "moire": (REMOVE_MOIRE, 0),
    "shadow": (REMOVE_SHADOW, 0),
    "shadows": (REMOVE_SHADOW, 0),
    "low light": (ENHANCE_LOW_LIGHT, 0),
    "lowlight": (ENHANCE_LOW_LIGHT, 0),
    "depth of field": (DEPTH_OF_FIELD, 0),
    "bokeh": (BOKEH, 0),
}
_DIRECTION_WORDS = {
    **dict.fromkeys(
        ["increase", "increased", "increasing", "raise", "boost", "more", "higher", "enhance", "add"], 1
    ),
    **dict.fromkeys(
        ["decrease", "decreased", "decreasing", "reduce", "reducing", "lower", "lowering", "less"], -1
    ),
}
_EXPOSURE_VERBS = {"brighten": 1, "brighter": 1, "darken": -1, "darker": -1}
_MAGNITUDE_WORDS = {
    **dict.fromkeys(
        ["slightly", "slight", "a little", "a bit", "a little bit", "subtly", "mildly", "somewhat"], SLIGHTLY
    ),
    **dict.fromkeys(["moderately", "moderate"], MODERATELY),
    **dict.fromkeys(
        [
            "significantly",
            "significant",
            "strongly",
            "greatly",
            "substantially",
            "considerably",
            "dramatically",
            "heavily",
            "a lot",
        ],
        SIGNIFICANTLY,
    ),
}
_FIX_WORDS = ("remove", "eliminate", "fix", "correct", "clean")
_NEGATIONS = ("not", "no", "don", "never", "avoid")

_VOCABULARY: dict[tuple[str, ...], tuple] = {}
for _phrase, (_op, _inherent) in _OP_PHRASES.items():
    _VOCABULARY[tuple(_phrase.split())] = (_OP, _op, _inherent)
for _word, _d in {**_DIRECTION_WORDS, **_EXPOSURE_VERBS}.items():
    _VOCABULARY[(_word,)] = (_DIR, _d, _word in _EXPOSURE_VERBS)
for _phrase, _m in _MAGNITUDE_WORDS.items():
    _VOCABULARY[tuple(_phrase.split())] = (_MAG, _m)
for _word in _FIX_WORDS:
    _VOCABULARY[(_word,)] = (_FIX,)
for _word in _NEGATIONS:
    _VOCABULARY[(_word,)] = (_NEG,)
_LONGEST_PHRASE = max(len(k) for k in _VOCABULARY)

_TOKEN = re.compile(r"[a-z]+|&|,")
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?", re.ASCII)

# Canonical phrase of each op (render); "{m}" is the magnitude, "{v}" the verb or warmer/cooler.
_CANONICAL = {
    EXPOSURE: "{m} {v} light&exposure",
    CONTRAST: "{m} {v} contrast",
    SATURATION: "{m} {v} saturation",
    TEMPERATURE: "change color temperature to {m} {v}",
    REMOVE_BLUR: "{m} remove blur",
    REMOVE_NOISE: "{m} remove noise",
    REMOVE_HAZE: "{m} remove haze",
    REMOVE_MOIRE: "{m} remove moire",
    REMOVE_SHADOW: "{m} remove shadow",
    ENHANCE_LOW_LIGHT: "{m} enhance low light",
    DEPTH_OF_FIELD: "{m} {v} depth of field",
    BOKEH: "{m} {v} bokeh",
}


# ---- parsing -----------------------------------------------------------------------------------------------


class _Errors:
    """Error list with a per-kind cap: beyond MAX_ERRORS_PER_KIND only a count is kept."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped: dict[str, int] = {}
        self.kept: dict[str, int] = {}

    def add(self, kind: str, message: str, where: str | None = None, always: bool = False) -> None:
        """Record ``message`` (followed by a short quote of ``where``, built only if the error is kept)."""
        if self.kept.get(kind, 0) >= MAX_ERRORS_PER_KIND and not always:
            self.dropped[kind] = self.dropped.get(kind, 0) + 1
            return
        self.kept[kind] = self.kept.get(kind, 0) + 1
        suffix = "" if where is None else f" in {_quote(where)}"
        self.items.append(f"{kind}: {message}{suffix}")

    def finish(self) -> list[str]:
        return self.items + [f"{kind}: {n} more problems not listed" for kind, n in self.dropped.items()]


def _quote(text: str, limit: int = 60) -> str:
    text = " ".join(text[: 4 * limit].split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _tokens(text: str) -> list[str]:
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
    return _TOKEN.findall(text.lower())


_WORD, _BREAK = "word", "break"
_BREAKS = frozenset({",", "and"})
_FIRST_TOKENS = frozenset(phrase[0] for phrase in _VOCABULARY) | _BREAKS


def _events(tokens: list[str]) -> list[tuple]:
    """Longest-match vocabulary lookup. Runs of other words collapse into one ("word",) event; "," and "and"
    become ("break",) events that separate clauses."""
    events: list[tuple] = []
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        if token not in _FIRST_TOKENS:
            if not events or events[-1][0] != _WORD:
                events.append((_WORD,))
            i += 1
            continue
        for length in range(min(_LONGEST_PHRASE, n - i), 0, -1):
            hit = _VOCABULARY.get(tuple(tokens[i : i + length]))
            if hit is not None:
                events.append(hit)
                i += length
                break
        else:
            events.append((_BREAK,) if token in _BREAKS else (_WORD,))
            i += 1
    return events


def _clauses(events: list[tuple]) -> list[list[tuple]]:
    clauses, current = [], []
    for event in events:
        if event[0] == _BREAK:
            clauses.append(current)
            current = []
        else:
            current.append(event)
    clauses.append(current)
    return [c for c in clauses if c]


def _mentions(clause: list[tuple]) -> list[tuple[str, set[int], list[tuple], list[tuple]]]:
    """Operation mentions of a clause as (op, inherent directions, events before, events after).

    Consecutive temperature phrases ("color temperature … warmer") merge into one mention.
    """
    mentions: list[list] = []
    pending: list[tuple] = []
    for event in clause:
        if event[0] != _OP:
            pending.append(event)
            continue
        _, op, inherent = event
        if mentions and op == TEMPERATURE and mentions[-1][0] == TEMPERATURE:
            mentions[-1][2].extend(pending)
        else:
            if mentions:
                mentions[-1][3] = pending
            mentions.append([op, set(), pending, []])
        pending = []
        if inherent:
            mentions[-1][1].add(inherent)
    if mentions:
        mentions[-1][3] = pending
    elif any(e[0] == _DIR and e[2] for e in pending):
        mentions.append([EXPOSURE, set(), pending, []])
    return [tuple(m) for m in mentions]


def _nearest(kind: int, before: list[tuple], after: list[tuple]):
    for event in reversed(before):
        if event[0] == kind:
            return event[1]
    for event in after:
        if event[0] == kind:
            return event[1]
    return None


def _parse_item(item: str, errors: _Errors) -> list[Suggestion]:
    tokens = _tokens(item)
    if len(tokens) > MAX_ITEM_WORDS:
        errors.add("edits", f"{len(tokens)} words are too many for one suggestion", item)
        return []
    if _FIRST_TOKENS.isdisjoint(tokens):
        if any(t not in _BREAKS for t in tokens):
            errors.add("edits", "no operation recognised", item)
        return []
    events = _events(tokens)
    out: list[Suggestion] = []
    carried_direction, carried_magnitude = None, None
    for clause in _clauses(events):
        if any(e[0] == _NEG for e in clause):
            errors.add("edits", "negated suggestion not understood", item)
            continue
        mentions = _mentions(clause)
        if not mentions:
            errors.add("edits", "no operation recognised", item)
            continue
        for op, inherent, before, after in mentions:
            local_direction = _nearest(_DIR, before, after)
            direction = local_direction if local_direction is not None else carried_direction
            magnitude = _nearest(_MAG, before, after) or carried_magnitude or DEFAULT_MAGNITUDE
            if op == TEMPERATURE:
                if len(inherent) != 1:
                    problem = "both warmer and cooler" if inherent else "no 'warmer' or 'cooler'"
                    errors.add("edits", f"color temperature with {problem}", item)
                    continue
                direction = inherent.pop()
            elif op in RESTORATION_OPS:
                if op != ENHANCE_LOW_LIGHT and local_direction == 1:
                    errors.add("edits", f"{op.split('_', 1)[1]} can only be removed", item)
                    continue
                direction = 1
            elif direction is None:
                errors.add("edits", f"no direction (increase/decrease) for {op}", item)
                continue
            else:
                carried_direction = direction
            carried_magnitude = magnitude
            out.append(Suggestion(op, direction, magnitude))
    return out


def parse_suggestions(block: str) -> tuple[list[Suggestion], list[str]]:
    """Suggestions of an edit block (the text between the edit tags) and the problems found in it."""
    errors = _Errors()
    suggestions = _parse_block(block, errors)
    return suggestions, errors.finish()


def _parse_block(block: str, errors: _Errors) -> list[Suggestion]:
    suggestions: list[Suggestion] = []
    items = 0
    for line in block.splitlines():
        if not line or line.isspace():
            continue
        for item in line.split(";"):
            if not item or item.isspace():
                continue
            items += 1
            if items > MAX_ITEMS:
                errors.add(
                    "edits",
                    f"more than {MAX_ITEMS} items in the edit block; the rest is ignored",
                    always=True,
                )
                return suggestions
            suggestions.extend(_parse_item(item, errors))
    return suggestions


def _parse_score(content: str, errors: _Errors) -> float | None:
    text = content.strip()
    if not text:
        errors.add("score", "empty <answer>")
        return None
    number, slash, denominator = text.partition("/")
    number = number.strip()
    if (slash and denominator.strip() != "100") or _NUMBER.fullmatch(number) is None:
        errors.add("score", f"cannot read a score from {_quote(text)}; expected e.g. 82, 82.5 or 82/100")
        return None
    score = float(number)
    if not 0.0 <= score <= 100.0:
        errors.add("score", f"score {number[:20]} is outside [0, 100]")
        return None
    return score


def _find_sections(text: str, errors: _Errors) -> dict[str, tuple[int, int, int, bool]]:
    """First occurrence of each section: (open tag position, content start, content end, closed)."""
    found = {}
    for name in _SECTIONS:
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
            later = [text.find(TAGS[other][0], start) for other in _SECTIONS if other != name]
            end = min([p for p in later if p >= 0], default=len(text))
        found[name] = (position, start, end, closed)
    present = [name for name in _SECTIONS if name in found]
    for first, second in zip(present, present[1:], strict=False):
        first_end = found[first][2] + (len(TAGS[first][1]) if found[first][3] else 0)
        if first_end > found[second][0]:
            errors.add("tags", f"{TAGS[second][0]} must come after {TAGS[first][1]}")
    return found


def parse(text: str) -> CriticOutput:
    """Read a critic answer; never raises. Problems are listed in ``errors`` (see the module docstring)."""
    errors = _Errors()
    if not isinstance(text, str):
        errors.add("tags", f"expected a string, got {type(text).__name__}")
        return CriticOutput("", [], None, errors.finish())
    sections = _find_sections(text, errors)
    reasoning, suggestions, score = "", [], None
    if "think" in sections:
        _, start, end, _ = sections["think"]
        reasoning = text[start:end].strip()
    if "edit" in sections:
        _, start, end, _ = sections["edit"]
        suggestions = _parse_block(text[start:end], errors)
    if "answer" in sections:
        _, start, end, closed = sections["answer"]
        if closed:
            score = _parse_score(text[start:end], errors)
        else:
            errors.add("score", "not read from an unclosed <answer>")
    return CriticOutput(reasoning, suggestions, score, errors.finish())


# ---- rendering ---------------------------------------------------------------------------------------------


def suggestion_phrase(suggestion: Suggestion) -> str:
    """The canonical phrase of a suggestion, e.g. "moderately increase light&exposure"."""
    op, direction, magnitude = suggestion.op, suggestion.direction, suggestion.magnitude
    if op not in _CANONICAL:
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
    return _CANONICAL[op].format(m=magnitude, v=verb)


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
    lines = [f"{i}. {suggestion_phrase(s)}" for i, s in enumerate(output.suggestions, 1)]
    edits = "\n".join(
        ["<edit_start>", ";\n".join(lines), "</edit_end>"] if lines else ["<edit_start>", "</edit_end>"]
    )
    score = "" if output.score is None else _format_score(output.score)
    return f"<think>{output.reasoning}</think>\n{edits}\n<answer>{score}</answer>"


# ---- execution ---------------------------------------------------------------------------------------------


def retouch_parameters(suggestions: Iterable[Suggestion]) -> tuple[dict[str, float], list[str]]:
    """Keyword parameters of ``spc_fast.retouch.apply`` executing the tone/colour suggestions, and conflicts.

    Suggestions on one attribute in one direction combine (ev and mired add, contrast and saturation factors
    multiply). Opposite directions on one attribute are a conflict: reported, and that attribute left neutral.
    A temperature shift beyond the operator's range (``colour.TEMPERATURE_DELTA_MIN``/``MAX``) is clamped to
    it and reported. Restoration, depth-of-field and bokeh suggestions are not executed here.
    """
    by_op: dict[str, list[Suggestion]] = {}
    for s in suggestions:
        if s.op in STEPS:
            by_op.setdefault(s.op, []).append(s)
    params = dict(NEUTRAL_PARAMETERS)
    conflicts = []
    for op, group in by_op.items():
        if len({s.direction for s in group}) > 1:
            conflicts.append(f"{op}: both directions suggested; left neutral")
            continue
        value = params[op]
        for s in group:
            step = STEPS[op][MAGNITUDES.index(s.magnitude)]
            value = value * step**s.direction if op in _MULTIPLICATIVE else value + s.direction * step
        params[op] = value
    shift = params[TEMPERATURE]
    clamped = min(max(shift, colour.TEMPERATURE_DELTA_MIN), colour.TEMPERATURE_DELTA_MAX)
    if clamped != shift:
        conflicts.append(f"temperature: {shift:+.0f} mired is beyond the operator's range; clamped to {clamped:+.0f}")
        params[TEMPERATURE] = clamped
    return params, conflicts
