"""The suggestion grammar of the critic's edit block (SPEC.md §4); ``format.parse`` calls it.

The block splits into items at newlines and ";"; numbering, bullets, punctuation, case and accents are ignored.
An item splits into clauses at "," and "and". In a clause, each operation phrase takes the nearest direction word
and magnitude adverb before it (else after it, within the clause; else the previous operation's in the same item,
so "increase contrast and saturation" is two increases). A clause with a negation is rejected as an error rather
than misread. The block that is the single item "no edit needed" is the explicit empty answer.
"""

from __future__ import annotations

import re
import unicodedata

from spc_fast.critic.vocabulary import (
    DEFAULT_MAGNITUDE,
    DIR,
    ENHANCE_LOW_LIGHT,
    EXPOSURE,
    LONGEST_PHRASE,
    MAG,
    MAX_ERRORS_PER_KIND,
    MAX_ITEM_WORDS,
    MAX_ITEMS,
    NEG,
    NO_EDIT,
    OP,
    RESTORATION_OPS,
    TEMPERATURE,
    VOCABULARY,
    Suggestion,
)

_TOKEN = re.compile(r"[a-z]+|&|,")
NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?", re.ASCII)


class Errors:
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
        suffix = "" if where is None else f" in {quote(where)}"
        self.items.append(f"{kind}: {message}{suffix}")

    def finish(self) -> list[str]:
        return self.items + [f"{kind}: {n} more problems not listed" for kind, n in self.dropped.items()]


def quote(text: str, limit: int = 60) -> str:
    text = " ".join(text[: 4 * limit].split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _tokens(text: str) -> list[str]:
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
    return _TOKEN.findall(text.lower())


_WORD, _BREAK = "word", "break"
_BREAKS = frozenset({",", "and"})
_FIRST_TOKENS = frozenset(phrase[0] for phrase in VOCABULARY) | _BREAKS


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
        for length in range(min(LONGEST_PHRASE, n - i), 0, -1):
            hit = VOCABULARY.get(tuple(tokens[i : i + length]))
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
        if event[0] != OP:
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
    elif any(e[0] == DIR and e[2] for e in pending):
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


def _parse_item(item: str, errors: Errors) -> list[Suggestion]:
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
        if any(e[0] == NEG for e in clause):
            errors.add("edits", "negated suggestion not understood", item)
            continue
        mentions = _mentions(clause)
        if not mentions:
            errors.add("edits", "no operation recognised", item)
            continue
        for op, inherent, before, after in mentions:
            local_direction = _nearest(DIR, before, after)
            direction = local_direction if local_direction is not None else carried_direction
            magnitude = _nearest(MAG, before, after) or carried_magnitude or DEFAULT_MAGNITUDE
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
    errors = Errors()
    suggestions, _ = read_block(block, errors)
    return suggestions, errors.finish()


def _item_text(item: str) -> str:
    # an item without its numbering, bullets and punctuation, lower case: "1. No edit needed." -> "no edit needed"
    return " ".join(t for t in _tokens(item) if t not in _BREAKS)


def read_block(block: str, errors: Errors) -> tuple[list[Suggestion], bool]:
    """Suggestions of an edit block, and whether the block is the explicit "no edit needed" item alone."""
    items = [item for line in block.splitlines() for item in line.split(";") if item and not item.isspace()]
    if len(items) == 1 and _item_text(items[0]) == NO_EDIT:
        return [], True
    if any(_item_text(item) == NO_EDIT for item in items[:MAX_ITEMS]):
        errors.add("edits", f"'{NO_EDIT}' must be the only item of the edit block", always=True)
    suggestions: list[Suggestion] = []
    for count, item in enumerate(items, 1):
        if count > MAX_ITEMS:
            errors.add("edits", f"more than {MAX_ITEMS} items in the edit block; the rest is ignored", always=True)
            break
        if _item_text(item) != NO_EDIT:
            suggestions.extend(_parse_item(item, errors))
    return suggestions, False
