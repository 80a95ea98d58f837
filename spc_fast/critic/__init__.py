"""The image critic: its output language (``format``) lives here; the model wrapper joins it later.

``from spc_fast.critic import parse, render`` reads and writes the tagged answer (SPEC.md §4).
"""

from spc_fast.critic.format import CriticOutput, Suggestion, parse, render, retouch_parameters

__all__ = ["CriticOutput", "Suggestion", "parse", "render", "retouch_parameters"]
