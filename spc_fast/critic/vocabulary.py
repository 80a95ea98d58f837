"""The critic's vocabulary (SPEC.md §4): its ops, magnitudes and tags, the phrases that name them, and the two
types every critic answer is read into (``Suggestion``, ``CriticOutput``).

``format`` reads and writes answers with it, ``grammar`` reads the edit block, ``spc_fast.executor`` turns
suggestions into retouch parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXPOSURE = "exposure"
CONTRAST = "contrast"
SATURATION = "saturation"
TEMPERATURE = "temperature"
REMOVE_BLUR = "remove_blur"
REMOVE_NOISE = "remove_noise"
REMOVE_HAZE = "remove_haze"
REMOVE_MOIRE = "remove_moire"
REMOVE_SHADOW = "remove_shadow"
REMOVE_COMPRESSION = "remove_compression_artifacts"
ENHANCE_LOW_LIGHT = "enhance_low_light"
DEPTH_OF_FIELD = "depth_of_field"
BOKEH = "bokeh"

# Same order as photometric.ATTRIBUTE_NAMES: the tone op at index k moves attribute k.
TONE_OPS = (EXPOSURE, CONTRAST, SATURATION, TEMPERATURE)
RESTORATION_OPS = (
    REMOVE_BLUR, REMOVE_NOISE, REMOVE_HAZE, REMOVE_MOIRE, REMOVE_SHADOW, REMOVE_COMPRESSION, ENHANCE_LOW_LIGHT
)
OPS = (*TONE_OPS, *RESTORATION_OPS, DEPTH_OF_FIELD, BOKEH)

SLIGHTLY, MODERATELY, SIGNIFICANTLY = "slightly", "moderately", "significantly"
MAGNITUDES = (SLIGHTLY, MODERATELY, SIGNIFICANTLY)
DEFAULT_MAGNITUDE = MODERATELY

# The one edit item that says the photo needs nothing (SPEC.md §4): an empty suggestion list that is well formed.
NO_EDIT = "no edit needed"

TAGS = {
    "think": ("<think>", "</think>"),
    "edit": ("<edit_start>", "</edit_end>"),
    "answer": ("<answer>", "</answer>"),
}
SECTIONS = tuple(TAGS)

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
    no_edit: bool = False  # the edit block is the explicit "1. no edit needed" (suggestions is then empty)




# ---- phrases ------------------------------------------------------------------------------------------------


OP, DIR, MAG, FIX, NEG = range(5)

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
    "compression artifacts": (REMOVE_COMPRESSION, 0),
    "compression artefacts": (REMOVE_COMPRESSION, 0),
    "jpeg artifacts": (REMOVE_COMPRESSION, 0),
    "artifacts": (REMOVE_COMPRESSION, 0),
    "artefacts": (REMOVE_COMPRESSION, 0),
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

VOCABULARY: dict[tuple[str, ...], tuple] = {}
for _phrase, (_op, _inherent) in _OP_PHRASES.items():
    VOCABULARY[tuple(_phrase.split())] = (OP, _op, _inherent)
for _word, _d in {**_DIRECTION_WORDS, **_EXPOSURE_VERBS}.items():
    VOCABULARY[(_word,)] = (DIR, _d, _word in _EXPOSURE_VERBS)
for _phrase, _m in _MAGNITUDE_WORDS.items():
    VOCABULARY[tuple(_phrase.split())] = (MAG, _m)
for _word in _FIX_WORDS:
    VOCABULARY[(_word,)] = (FIX,)
for _word in _NEGATIONS:
    VOCABULARY[(_word,)] = (NEG,)
LONGEST_PHRASE = max(len(k) for k in VOCABULARY)

# Canonical phrase of each op (render); "{m}" is the magnitude, "{v}" the verb or warmer/cooler.
CANONICAL = {
    EXPOSURE: "{m} {v} light&exposure",
    CONTRAST: "{m} {v} contrast",
    SATURATION: "{m} {v} saturation",
    TEMPERATURE: "change color temperature to {m} {v}",
    REMOVE_BLUR: "{m} remove blur",
    REMOVE_NOISE: "{m} remove noise",
    REMOVE_HAZE: "{m} remove haze",
    REMOVE_MOIRE: "{m} remove moire",
    REMOVE_SHADOW: "{m} remove shadow",
    REMOVE_COMPRESSION: "{m} remove compression artifacts",
    ENHANCE_LOW_LIGHT: "{m} enhance low light",
    DEPTH_OF_FIELD: "{m} {v} depth of field",
    BOKEH: "{m} {v} bokeh",
}


