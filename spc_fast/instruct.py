"""Instruction (manual) mode: the user says which edits to make, in the critic's own suggestion language, and the
pipeline runs unchanged with an ``InstructionCritic`` in the critic's role.

The instruction is read by the suggestion grammar (``spc_fast.critic.grammar``): phrases separated by ";" or new
lines, a leading "1." optional, e.g. "slightly increase light&exposure; remove haze". Without weights the
``RuleArtist`` executes its tone/colour edits exactly as it executes a critic's suggestions; with a neural critic the
judgement carries H_c of one forward pass over the chat holding the image and the instruction
(``ImageCritic.instruction_states``, SPEC.md §6), which the ``DiffusionArtist`` is conditioned on as in automatic mode.
An instruction the grammar cannot read entirely is refused when the critic is built, before any image is touched.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from spc_fast.critic.format import parse_suggestions, suggestion_phrase
from spc_fast.critic.vocabulary import CANONICAL, MAGNITUDES, OPS, RESTORATION_OPS, TEMPERATURE, CriticOutput
from spc_fast.images import as_image_list
from spc_fast.roles import Images, Judgement

if TYPE_CHECKING:
    from spc_fast.critic.model import ImageCritic

__all__ = ["InstructionCritic", "known_operations", "parse_instruction"]


def known_operations() -> list[str]:
    """One phrase per operation an instruction may ask for, its direction words shown as alternatives: "increase/
    decrease contrast", "change color temperature to warmer/cooler", "remove haze", ... (the grammar's canonical
    phrases without a magnitude)."""
    phrases = []
    for op in OPS:
        verbs = "" if op in RESTORATION_OPS else "warmer/cooler" if op == TEMPERATURE else "increase/decrease"
        phrases.append(" ".join(CANONICAL[op].format(m="", v=verbs).split()))
    return phrases


def _how_to_write() -> str:
    return (
        f"write one edit per phrase, separated by ';' or new lines, from: {', '.join(known_operations())}; each "
        f"may say how much ({', '.join(MAGNITUDES)}; moderately when not said), e.g. "
        '"slightly increase light&exposure; remove haze"'
    )


def parse_instruction(instruction: str) -> CriticOutput:
    """The edits ``instruction`` asks for, as a critic answer with no reasoning and no score. Raises ValueError when
    the instruction is empty, asks for no edit, holds a phrase the grammar does not read, or asks for both directions
    of one operation; the message lists the known operations."""
    if not instruction.strip():
        raise ValueError(f"the instruction is empty; {_how_to_write()}")
    suggestions, errors = parse_suggestions(instruction)
    if errors:
        problems = "; ".join(error.removeprefix("edits: ") for error in errors)
        raise ValueError(f"the instruction is not understood ({problems}); {_how_to_write()}")
    if not suggestions:
        raise ValueError(f"the instruction asks for no edit; {_how_to_write()}")
    directions: dict[str, set[int]] = {}
    for suggestion in suggestions:
        directions.setdefault(suggestion.op, set()).add(suggestion.direction)
    both = [op for op, seen in directions.items() if len(seen) > 1]
    if both:
        raise ValueError(
            f"the instruction asks for both directions of {', '.join(both)} ("
            f"{'; '.join(suggestion_phrase(s) for s in suggestions if s.op in both)}); keep one of them"
        )
    return CriticOutput(reasoning="", suggestions=suggestions, score=None)


class InstructionCritic:
    """A ``roles.Critic`` that answers every image with the user's instruction instead of judging it.

    ``critique`` returns texts = the instruction, outputs = its parse (no reasoning, score None: nothing judged the
    image), attributes None, and, when ``critic`` (the neural ``ImageCritic``) is given, hidden/mask = H_c of the
    chat holding each image and the instruction, for the ``DiffusionArtist``. The instruction is parsed here, so a
    bad one fails before any image is read.
    """

    def __init__(self, instruction: str, critic: ImageCritic | None = None) -> None:
        self.instruction = instruction.strip()
        self.output = parse_instruction(self.instruction)
        self.critic = critic

    @property
    def attention(self) -> str | None:
        """The neural critic's attention backend (None without one): what ``spc-fast edit`` reports."""
        return None if self.critic is None else self.critic.attention

    def critique(self, images: Images) -> Judgement:
        image_list = as_image_list(images)
        hidden = mask = None
        if self.critic is not None:
            hidden, mask = self.critic.instruction_states(image_list, self.instruction)
        outputs = [dataclasses.replace(self.output, suggestions=list(self.output.suggestions)) for _ in image_list]
        return Judgement(texts=[self.instruction] * len(image_list), outputs=outputs, hidden=hidden, mask=mask)
