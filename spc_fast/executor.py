"""The rule executor's policy (SPEC.md §4): how the critic's tone/colour suggestions become the parameters of
``spc_fast.retouch.apply``. The analytic critic simulates it, the ``RuleArtist`` runs it, the suggestion reward
compares its result with the reference.
"""

from __future__ import annotations

from collections.abc import Iterable

from spc_fast.critic.vocabulary import CONTRAST, EXPOSURE, MAGNITUDES, SATURATION, TEMPERATURE, Suggestion
from spc_fast.retouch import NEUTRAL as NEUTRAL_PARAMETERS
from spc_fast.retouch import RANGES

# Executor parameter per magnitude (slightly, moderately, significantly), SPEC.md §4.
STEPS = {
    EXPOSURE: (0.3, 0.6, 1.0),  # ev, signed by direction
    CONTRAST: (1.1, 1.25, 1.5),  # c = step or 1 / step
    SATURATION: (1.15, 1.35, 1.7),  # s = step or 1 / step
    TEMPERATURE: (10.0, 25.0, 50.0),  # delta_mired, warmer +
}
_MULTIPLICATIVE = (CONTRAST, SATURATION)

__all__ = ["NEUTRAL_PARAMETERS", "STEPS", "retouch_parameters"]


def retouch_parameters(suggestions: Iterable[Suggestion]) -> tuple[dict[str, float], list[str]]:
    """Keyword parameters of ``spc_fast.retouch.apply`` executing the tone/colour suggestions, and conflicts.

    Suggestions on one attribute in one direction combine (ev and mired add, contrast and saturation factors
    multiply). Opposite directions on one attribute are a conflict: reported, and that attribute left neutral.
    A value beyond the operator's range (``retouch.RANGES``: a critic repeating "significantly warmer" or
    "significantly increase exposure" many times) is clamped to it and reported. Restoration, depth-of-field and
    bokeh suggestions are not executed here.
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
    for op, value in params.items():
        low, high = RANGES[op]
        clamped = min(max(value, low), high)
        if clamped != value:
            conflicts.append(f"{op}: {value:+.4g} is beyond the operator's range [{low:g}, {high:g}]; clamped to "
                             f"{clamped:+.4g}")
            params[op] = clamped
    return params, conflicts
