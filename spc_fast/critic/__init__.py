"""The image critic: its output language (``format``) and the weight-free analytic critic (``measures``,
``rules``, ``analytic``: ``from spc_fast.critic.analytic import AnalyticCritic``) and the neural critic
(``from spc_fast.critic.model import ImageCritic``; its static-cache decode loop is ``generate``).

``from spc_fast.critic import parse, render`` reads and writes the tagged answer (SPEC.md §4).
"""

from spc_fast.critic.format import CriticOutput, Suggestion, parse, render, retouch_parameters

__all__ = ["CriticOutput", "Suggestion", "parse", "render", "retouch_parameters"]
