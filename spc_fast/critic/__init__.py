"""The image critic: its language (``vocabulary``, ``grammar``, ``format``), the weight-free analytic critic
(``measures``, ``rules``, ``reasoning``, ``analytic``: ``from spc_fast.critic.analytic import AnalyticCritic``) and
the neural critic (``from spc_fast.critic.model import ImageCritic``; its static-cache decode loop is ``generate``).
Both critics answer ``critique(images)`` with one ``spc_fast.roles.Judgement``.

``from spc_fast.critic import parse, render`` reads and writes the tagged answer (SPEC.md §4).
"""

from spc_fast.critic.format import CriticOutput, Suggestion, parse, render

__all__ = ["CriticOutput", "Suggestion", "parse", "render"]
