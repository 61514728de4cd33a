"""Captions for Shapes scenes, and the reverse: reading a free-text prompt as a scene.

The generator varies templates, synonyms and optional words from a seeded
generator, so the same (scene, seed) always gives the same caption. The parser is
deliberately more tolerant than the generator: it also reads phrasings the
generator never produces (the held-out prompts of model/evaluate.py use some), so
that a prompt's intended scene is known whatever words it uses.
"""

from __future__ import annotations

import re

import numpy as np

from model.data.shapes import BACKGROUNDS, COLORS, Scene, ShapeObject

# --------------------------------------------------------------------------------
# Generation.

SHAPE_WORDS = {"circle": ("circle", "ball", "disc", "dot"), "square": ("square", "box", "block"), "triangle": ("triangle",)}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}  # medium is the default and goes unnamed
COLOR_WORDS = {color: (color,) for color in COLORS} | {"purple": ("purple", "violet")}
BACKGROUND_WORDS = {"black": ("black",), "white": ("white",), "gray": ("gray", "grey"), "navy": ("navy", "navy blue")}
MOTION_WORDS = {
    "left": ("moving left", "heading left", "sliding to the left", "moving to the left"),
    "right": ("moving right", "heading right", "sliding to the right", "moving to the right"),
    "up": ("moving up", "heading up", "rising", "sliding upward"),
    "down": ("moving down", "heading down", "falling", "sliding downward"),
    "still": ("still", "standing still", "motionless", "not moving"),
    "growing": ("growing", "getting bigger", "expanding"),
    "shrinking": ("shrinking", "getting smaller", "contracting"),
    "bouncing": ("bouncing", "bouncing up and down", "hopping"),
}
BACKGROUND_PHRASES = ("on a {} background", "on a {} backdrop", "against a {} background", "against a {} backdrop")
BACKGROUND_NOUNS = ("a {} background", "a {} backdrop", "{} background")
ARTICLES = ("a", "a", "a", "one", "")  # "a" is the usual one; "one" and none for variety


def _pick(rng: np.random.Generator, options):
    return options[rng.integers(len(options))]


def _noun_phrase(obj: ShapeObject, rng: np.random.Generator) -> str:
    words = []
    if obj.size in SIZE_WORDS:
        words.append(_pick(rng, SIZE_WORDS[obj.size]))
    words.append(_pick(rng, COLOR_WORDS[obj.color]))
    words.append(_pick(rng, SHAPE_WORDS[obj.shape]))
    article = _pick(rng, ARTICLES)
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return " ".join(([article] if article else []) + words)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A varied natural-English caption naming size (unless medium), colour, shape, motion and background."""
    phrases = [_noun_phrase(obj, rng) for obj in scene.objects]
    motions = [_pick(rng, MOTION_WORDS[obj.motion]) for obj in scene.objects]
    background = _pick(rng, BACKGROUND_WORDS[scene.background])
    with_background = rng.random() < 0.8  # otherwise the background goes unnamed (it was drawn at random)
    background_phrase = _pick(rng, BACKGROUND_PHRASES).format(background)
    background_noun = _pick(rng, BACKGROUND_NOUNS).format(background)

    if len(scene.objects) == 2:
        pair = f"{phrases[0]} {motions[0]} and {phrases[1]} {motions[1]}"
        template = rng.integers(3)
        if not with_background:
            text = pair
        elif template < 2:
            text = f"{pair} {background_phrase}"
        else:
            text = f"{background_noun} with {pair}"
    else:
        phrase, motion = phrases[0], motions[0]
        # An unnamed motion means still (spec), so still objects sometimes go without one.
        if scene.objects[0].motion == "still" and rng.random() < 0.3:
            motion = ""
        template = rng.integers(4)
        if not with_background:
            text = f"{phrase} is {motion}" if template == 3 and motion else f"{phrase} {motion}"
        elif template == 0:
            text = f"{phrase} {motion} {background_phrase}"
        elif template == 1:
            text = f"{phrase} {background_phrase}, {motion}" if motion else f"{phrase} {background_phrase}"
        elif template == 2:
            text = f"{background_noun} with {phrase} {motion}"
        else:
            text = f"{phrase} is {motion} {background_phrase}" if motion else f"{phrase} {background_phrase}"
    text = " ".join(text.split())
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text += "."
    return text


# --------------------------------------------------------------------------------
# Parsing. Background first (so that its colour word is not taken for an object's),
# then one object per shape noun, each with the colour and size words before it (or
# a colour after it: "a ball in red") and the motion words that follow it.

_PARSE_SHAPES = {
    "circle": ("circle", "circles", "ball", "balls", "disc", "discs", "disk", "disks", "dot", "dots", "sphere", "orb"),
    "square": ("square", "squares", "box", "boxes", "block", "blocks", "cube", "cubes", "rectangle"),
    "triangle": ("triangle", "triangles", "pyramid", "wedge"),
}
_PARSE_COLORS = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange",),
    "yellow": ("yellow", "gold", "golden"),
    "green": ("green", "lime"),
    "cyan": ("cyan", "turquoise", "aqua", "teal"),
    "blue": ("blue",),
    "purple": ("purple", "violet", "lilac", "lavender"),
    "pink": ("pink", "magenta", "rose"),
    "white": ("white",),
}
_PARSE_SIZES = {
    "small": ("small", "little", "tiny", "mini"),
    "medium": ("medium", "mid", "average", "moderate"),
    "large": ("large", "big", "huge", "giant"),
}
# Longest first, so that "navy blue" is read before "blue".
_PARSE_BACKGROUNDS = (
    ("navy blue", "navy"), ("dark blue", "navy"), ("midnight blue", "navy"), ("navy", "navy"), ("blue", "navy"),
    ("black", "black"), ("dark", "black"), ("white", "white"), ("light", "white"),
    ("gray", "gray"), ("grey", "gray"), ("silver", "gray"),
)
_BG = "|".join(word.replace(" ", r"\s+") for word, _ in _PARSE_BACKGROUNDS)
_BG_KEYWORDS = r"background|backdrop|backround|bg|canvas|screen|scene|wall"
_FILLERS = r"(?:(?:a|an|the|plain|solid|flat|uniform|colou?red|colou?r)\s+)*"
_BACKGROUND_PATTERNS = (
    # "a navy blue background", "black backdrop"
    re.compile(rf"\b(?P<bg>{_BG})\s+(?:colou?red\s+)?(?:{_BG_KEYWORDS})\b"),
    # "the background is black", "background of grey", "background in white", "background: navy"
    re.compile(rf"\b(?:{_BG_KEYWORDS})\s*(?:(?:is|of|in|that\s+is|being|colou?red|:)\s+)?{_FILLERS}(?P<bg>{_BG})\b"),
    # "a red ball on black" (not "on a white box": a shape word must not follow)
    re.compile(rf"\b(?:on|against|over|in\s+front\s+of)\s+{_FILLERS}(?P<bg>{_BG})\b(?!\s+\w*\s*(?:{'|'.join(w for ws in _PARSE_SHAPES.values() for w in ws)})\b)"),
)
# Checked in this order: the more specific readings win ("bouncing up and down" is not "up").
_MOTION_PATTERNS = (
    ("right", re.compile(r"\bfrom\s+(?:the\s+)?left\s+to\s+(?:the\s+)?right\b")),
    ("left", re.compile(r"\bfrom\s+(?:the\s+)?right\s+to\s+(?:the\s+)?left\b")),
    ("down", re.compile(r"\bfrom\s+(?:the\s+)?top\s+to\s+(?:the\s+)?bottom\b")),
    ("up", re.compile(r"\bfrom\s+(?:the\s+)?bottom\s+to\s+(?:the\s+)?top\b")),
    ("bouncing", re.compile(r"\b(?:bounc\w*|hopping|hops?|jumping|jumps?)\b")),
    ("growing", re.compile(r"\b(?:grow\w*|expand\w*|enlarg\w*|swell\w*|inflat\w*|(?:getting|gets|becoming|becomes)\s+(?:bigger|larger)|scal\w*\s+up|increas\w*\s+in\s+size)\b")),
    ("shrinking", re.compile(r"\b(?:shrink\w*|shrunk|contract\w*|deflat\w*|(?:getting|gets|becoming|becomes)\s+smaller|scal\w*\s+down|decreas\w*\s+in\s+size)\b")),
    ("left", re.compile(r"\bleft(?:ward|wards)?\b")),
    ("right", re.compile(r"\bright(?:ward|wards)?\b")),
    ("up", re.compile(r"\b(?:up|upward|upwards|rising|rises|rise|ascend\w*|climb\w*|lift\w*)\b")),
    ("down", re.compile(r"\b(?:down|downward|downwards|falling|falls|fall|descend\w*|sinking|sinks|dropping|drops)\b")),
    ("still", re.compile(r"\b(?:still|motionless|stationary|static|unmoving|immobile|frozen|resting|rests|standing|stands|staying|stays|sitting|sits|not\s+moving|at\s+rest|in\s+place)\b")),
)
_WORD_TO_SHAPE = {word: shape for shape, words in _PARSE_SHAPES.items() for word in words}
_WORD_TO_COLOR = {word: color for color, words in _PARSE_COLORS.items() for word in words}
_WORD_TO_SIZE = {word: size for size, words in _PARSE_SIZES.items() for word in words}
_NOUN_PHRASE_WORDS = {"a", "an", "one", "the", "single", "sized", "colored", "coloured"} | set(_WORD_TO_COLOR) | set(_WORD_TO_SIZE)


def _find_background(text: str) -> tuple[str | None, str]:
    for pattern in _BACKGROUND_PATTERNS:
        match = pattern.search(text)
        if match:
            word = " ".join(match.group("bg").split())
            background = dict(_PARSE_BACKGROUNDS)[word]
            return background, text[: match.start()] + " , " + text[match.end():]
    return None, text


def parse_prompt(text: str) -> Scene | None:
    """The Shapes scene a prompt describes, or None when it describes none (no shape, no colour, >2 objects).

    Unnamed sizes are medium and unnamed motions still (the spec's defaults); an
    unnamed background stays None.
    """
    normal = " ".join(re.sub(r"[^a-z0-9:,.;]+", " ", text.lower()).replace(",", " , ").replace(".", " . ").split())
    background, rest = _find_background(normal)
    tokens = re.findall(r"[a-z0-9]+|[,.;:]", rest)
    nouns = [i for i, token in enumerate(tokens) if token in _WORD_TO_SHAPE]
    if not 1 <= len(nouns) <= 2:
        return None
    # Each object's words: its noun phrase (the run of articles, colours and sizes just
    # before the noun) and what follows the noun up to the next object's noun phrase.
    starts = []
    for noun in nouns:
        start = noun
        while start > 0 and tokens[start - 1] in _NOUN_PHRASE_WORDS:
            start -= 1
        starts.append(start)
    objects = []
    for k, noun in enumerate(nouns):
        before = tokens[starts[k]:noun]
        after = tokens[noun + 1: starts[k + 1] if k + 1 < len(nouns) else len(tokens)]
        colors = [_WORD_TO_COLOR[t] for t in before if t in _WORD_TO_COLOR] or [
            _WORD_TO_COLOR[t] for t in after if t in _WORD_TO_COLOR
        ]
        if not colors:
            return None
        sizes = [_WORD_TO_SIZE[t] for t in before if t in _WORD_TO_SIZE]
        motion_text = " ".join(after)
        if k == 0:
            # A leading phrase ("Moving left, a red ball") belongs to the first object.
            motion_text += " , " + " ".join(tokens[: starts[0]])
        motion = next((name for name, pattern in _MOTION_PATTERNS if pattern.search(motion_text)), "still")
        objects.append(ShapeObject(color=colors[-1], shape=_WORD_TO_SHAPE[tokens[noun]],
                                   size=sizes[-1] if sizes else "medium", motion=motion))
    return Scene(background=background, objects=tuple(objects))
