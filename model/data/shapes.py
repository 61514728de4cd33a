"""The Shapes world: coloured shapes moving on plain backgrounds, with exact ground truth.

Every convention here (palette, sizes, motions, placement) is fixed by
specs/shapes-world.md; the analyzer in model/evaluate.py and outside scoring tools
rely on them, so change none of the numbers without changing the spec.

Rendering is vectorised over frames with numpy: one clip of 112x64x33 takes a few
milliseconds, so the training loops render their data on the fly. Edges are
anti-aliased with an analytic coverage ramp one pixel wide (exact box-filter
coverage for squares); every pixel more than half a pixel inside a shape holds the
exact palette colour.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import numpy as np

FPS = 8

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (16, 16, 16),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "navy": (20, 28, 80),
}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 190, 70),
    "cyan": (40, 200, 220),
    "blue": (50, 90, 240),
    "purple": (150, 60, 210),
    "pink": (245, 120, 190),
    "white": (240, 240, 240),
}

SHAPES = ("circle", "square", "triangle")

# Extent (diameter, side, or base) as a fraction of min(W, H).
SIZES: dict[str, float] = {"small": 0.20, "medium": 0.30, "large": 0.42}

MOTIONS = ("left", "right", "up", "down", "still", "growing", "shrinking", "bouncing")

# Colour/background pairs that are never drawn (the object would vanish or nearly so).
FORBIDDEN_ON_BACKGROUND = {("white", "white"), ("blue", "navy")}

# Combinations never sampled for training (exclude_heldout=True) and used by the
# held-out evaluation: 75 of the 816 allowed single-object (colour, shape, motion,
# background) combinations, about 9%. They were chosen by a fixed arithmetic rule
# over the table orders above ((colour + 2 shape + 3 motion + 5 background) mod 11
# == 0), which scatters them so that every value, and every pair of values, still
# appears in training; the list is written out so that it never moves.
HELDOUT_COMBOS: frozenset[tuple[str, str, str, str]] = frozenset({
    ("red", "circle", "left", "black"), ("red", "circle", "up", "white"), ("red", "circle", "still", "gray"),
    ("red", "circle", "shrinking", "navy"), ("red", "square", "down", "black"), ("red", "square", "growing", "white"),
    ("red", "square", "bouncing", "gray"), ("red", "triangle", "right", "navy"), ("red", "triangle", "shrinking", "black"),
    ("orange", "circle", "left", "gray"), ("orange", "circle", "up", "navy"), ("orange", "circle", "bouncing", "black"),
    ("orange", "square", "right", "white"), ("orange", "square", "down", "gray"), ("orange", "square", "growing", "navy"),
    ("orange", "triangle", "up", "black"), ("orange", "triangle", "still", "white"), ("orange", "triangle", "shrinking", "gray"),
    ("yellow", "circle", "down", "black"), ("yellow", "circle", "growing", "white"), ("yellow", "circle", "bouncing", "gray"),
    ("yellow", "square", "right", "navy"), ("yellow", "square", "shrinking", "black"), ("yellow", "triangle", "left", "white"),
    ("yellow", "triangle", "up", "gray"), ("yellow", "triangle", "still", "navy"), ("green", "circle", "right", "white"),
    ("green", "circle", "down", "gray"), ("green", "circle", "growing", "navy"), ("green", "square", "up", "black"),
    ("green", "square", "still", "white"), ("green", "square", "shrinking", "gray"), ("green", "triangle", "left", "navy"),
    ("green", "triangle", "growing", "black"), ("green", "triangle", "bouncing", "white"), ("cyan", "circle", "right", "navy"),
    ("cyan", "circle", "shrinking", "black"), ("cyan", "square", "left", "white"), ("cyan", "square", "up", "gray"),
    ("cyan", "square", "still", "navy"), ("cyan", "triangle", "right", "black"), ("cyan", "triangle", "down", "white"),
    ("cyan", "triangle", "growing", "gray"), ("cyan", "triangle", "bouncing", "navy"), ("blue", "circle", "up", "black"),
    ("blue", "circle", "still", "white"), ("blue", "circle", "shrinking", "gray"), ("blue", "square", "growing", "black"),
    ("blue", "square", "bouncing", "white"), ("blue", "triangle", "right", "gray"), ("purple", "circle", "left", "white"),
    ("purple", "circle", "up", "gray"), ("purple", "circle", "still", "navy"), ("purple", "square", "right", "black"),
    ("purple", "square", "down", "white"), ("purple", "square", "growing", "gray"), ("purple", "square", "bouncing", "navy"),
    ("purple", "triangle", "still", "black"), ("purple", "triangle", "shrinking", "white"), ("pink", "circle", "left", "navy"),
    ("pink", "circle", "growing", "black"), ("pink", "circle", "bouncing", "white"), ("pink", "square", "right", "gray"),
    ("pink", "square", "down", "navy"), ("pink", "triangle", "left", "black"), ("pink", "triangle", "up", "white"),
    ("pink", "triangle", "still", "gray"), ("pink", "triangle", "shrinking", "navy"), ("white", "circle", "right", "black"),
    ("white", "circle", "growing", "gray"), ("white", "circle", "bouncing", "navy"), ("white", "square", "still", "black"),
    ("white", "triangle", "left", "gray"), ("white", "triangle", "up", "navy"), ("white", "triangle", "bouncing", "black"),
})

MIN_SIDE, MAX_SIDE = 32, 512  # the spec's world is 32..128; larger canvases serve smoke tests of bigger presets


@dataclass(frozen=True)
class ShapeObject:
    color: str  # a key of COLORS
    shape: str  # "circle" | "square" | "triangle"
    size: str = "medium"  # a key of SIZES
    motion: str = "still"  # one of MOTIONS
    jitter: float = 0.0  # start offset along the axis the object does not move along, in canvas extents

    def __post_init__(self):
        for field, value, allowed in (
            ("color", self.color, tuple(COLORS)),
            ("shape", self.shape, SHAPES),
            ("size", self.size, tuple(SIZES)),
            ("motion", self.motion, MOTIONS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r}; expected one of {', '.join(allowed)}")

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.color, self.shape, self.motion)


@dataclass(frozen=True)
class Scene:
    background: str | None  # a key of BACKGROUNDS; None only for a parsed prompt that names none
    objects: tuple[ShapeObject, ...]  # one or two, the first drawn under the second

    def __post_init__(self):
        if self.background is not None and self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {', '.join(BACKGROUNDS)}")
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"a scene holds one or two objects, not {len(self.objects)}")

    def follows_rules(self) -> bool:
        """The world's rules: distinct colours, no white on white, no blue on navy."""
        colors = [obj.color for obj in self.objects]
        if len(set(colors)) != len(colors):
            return False
        return all((color, self.background) not in FORBIDDEN_ON_BACKGROUND for color in colors)

    def is_heldout(self) -> bool:
        return any((*obj.combo, self.background) in HELDOUT_COMBOS for obj in self.objects)


def check_canvas(width: int, height: int, frames: int) -> None:
    for name, side in (("width", width), ("height", height)):
        if not isinstance(side, (int, np.integer)) or side % 16 or not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(f"{name} must be a multiple of 16 from {MIN_SIDE} to {MAX_SIDE}, got {side!r}")
    if not isinstance(frames, (int, np.integer)) or frames < 1 or (frames - 1) % 4:
        raise ValueError(f"frames must be 1 + 4k (1, 9, 17, 33, ...), got {frames!r}")


# ---------------------------------------------------------------------------------
# Trajectories. Positions are fractions of the canvas (x of W, y of H), time u runs
# from 0 at the first frame to 1 at the last.

_HORIZONTAL = ("left", "right")
_BOUNCE_FLOOR, _BOUNCE_TOP = 2 / 3, 1 / 4  # the |sin| bounce starts at the bottom third, peaks where "up" ends


def _scale(motion: str, u: np.ndarray) -> np.ndarray:
    if motion == "growing":
        return 0.6 + 0.8 * u
    if motion == "shrinking":
        return 1.4 - 0.8 * u
    return np.ones_like(u)


def _path(motion: str, u: np.ndarray, place: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the centre over time; `place` is the position on the axis the object does not move along.

    Objects that do not travel (still, growing, shrinking) take `place` as x: one
    jitter value per object, so it shifts them sideways.
    """
    fixed = np.full_like(u, place)
    if motion == "left":
        return 0.75 - 0.5 * u, fixed
    if motion == "right":
        return 0.25 + 0.5 * u, fixed
    if motion == "up":
        return fixed, 0.75 - 0.5 * u
    if motion == "down":
        return fixed, 0.25 + 0.5 * u
    if motion == "bouncing":
        # Two full bounces: |sin| has period 1/2 in u.
        return fixed, _BOUNCE_FLOOR - (_BOUNCE_FLOOR - _BOUNCE_TOP) * np.abs(np.sin(2 * np.pi * u))
    return fixed, np.full_like(u, 0.5)  # still, growing, shrinking: the centre stays put


def _tracks(scene: Scene, width: int, height: int, u: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per object: centre x, centre y (pixels) and extent (pixels), each of shape (T,)."""
    short = min(width, height)
    extents = [SIZES[obj.size] * short * _scale(obj.motion, u) for obj in scene.objects]

    def pixels(obj, place, extent):
        x, y = _path(obj.motion, u, place)
        return x * width, y * height, extent

    if len(scene.objects) == 1:
        obj = scene.objects[0]
        return [pixels(obj, 0.5 + obj.jitter, extents[0])]

    # Two objects start in different halves: top/bottom for horizontal movers,
    # left/right otherwise (spec). Among the placements the spec allows, take the one
    # whose frame 0 is clear and whose objects stay farthest apart over the clip
    # (the first listed wins ties).
    first, second = scene.objects
    if (first.motion in _HORIZONTAL) == (second.motion in _HORIZONTAL):
        slots = [(0.25, 0.75), (0.75, 0.25)]  # both across one axis: opposite halves of the other
    else:
        slots = list(itertools.product((0.25, 0.75), repeat=2))  # one of each: any halves that keep frame 0 clear
    best, best_score = None, None
    for slot_first, slot_second in slots:
        candidate = [
            pixels(first, slot_first + first.jitter, extents[0]),
            pixels(second, slot_second + second.jitter, extents[1]),
        ]
        (x1, y1, e1), (x2, y2, e2) = candidate
        gap = np.maximum(np.abs(x1 - x2), np.abs(y1 - y2)) - (e1 + e2) / 2
        score = (bool(gap[0] >= 1.0), float(gap.min()))
        if best_score is None or score > best_score:
            best, best_score = candidate, score
    return best


# ---------------------------------------------------------------------------------
# Coverage of one shape on the pixel grid, (T, H, W) in [0, 1]. Pixel (i, j) covers
# [j, j+1) x [i, i+1); its centre is at (j + 0.5, i + 0.5).


def _coverage(shape: str, cx, cy, extent, xs, ys) -> np.ndarray:
    # cx, cy, extent: (T,); xs: (W',) and ys: (H',) pixel centres of the window drawn in
    cx, cy, half = cx[:, None, None], cy[:, None, None], extent[:, None, None] / 2
    x, y = xs[None, None, :], ys[None, :, None]
    if shape == "square":
        # Exact box-filter coverage, separable per axis.
        cover_x = np.clip(np.minimum(x + 0.5, cx + half) - np.maximum(x - 0.5, cx - half), 0, 1)
        cover_y = np.clip(np.minimum(y + 0.5, cy + half) - np.maximum(y - 0.5, cy - half), 0, 1)
        return cover_x * cover_y
    if shape == "circle":
        inside = half - np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    else:
        # Isosceles, pointing up, base as wide as it is tall, centred in its box: the
        # sides satisfy |x - cx| = (y - top) / 2, at distance ((y - top) - 2|x - cx|) / sqrt(5).
        top = cy - half
        to_base = (cy + half) - y
        to_sides = ((y - top) - 2 * np.abs(x - cx)) / np.sqrt(5.0)
        inside = np.minimum(to_base, to_sides)
    return np.clip(inside + 0.5, 0, 1)


def render(scene: Scene, width: int, height: int, frames: int) -> np.ndarray:
    """The clip a scene describes: uint8 (T, H, W, 3), sRGB, 8 fps."""
    check_canvas(width, height, frames)
    if scene.background is None:
        raise ValueError("cannot render a scene without a background")
    u = np.arange(frames, dtype=np.float32) / max(frames - 1, 1)  # a still image is frame 0
    canvas = np.empty((frames, height, width, 3), dtype=np.uint8)
    # Channel by channel throughout: numpy is several times slower when the innermost
    # loop runs over the 3 channels of a broadcast colour.
    for channel, value in enumerate(BACKGROUNDS[scene.background]):
        canvas[..., channel] = value
    for obj, (cx, cy, extent) in zip(scene.objects, _tracks(scene, width, height, u)):
        cx, cy, extent = cx.astype(np.float32), cy.astype(np.float32), extent.astype(np.float32)
        # Work only inside the object's box over the clip (plus the anti-aliased rim).
        half = extent / 2
        left, right = max(int(np.floor((cx - half).min())) - 1, 0), min(int(np.ceil((cx + half).max())) + 1, width)
        top, bottom = max(int(np.floor((cy - half).min())) - 1, 0), min(int(np.ceil((cy + half).max())) + 1, height)
        if left >= right or top >= bottom:
            continue
        xs = np.arange(left, right, dtype=np.float32) + 0.5
        ys = np.arange(top, bottom, dtype=np.float32) + 0.5
        cover = _coverage(obj.shape, cx, cy, extent, xs, ys)  # (T, H', W')
        region = canvas[:, top:bottom, left:right]
        for channel, value in enumerate(COLORS[obj.color]):
            plane = region[..., channel].astype(np.float32)
            plane += cover * (value - plane)
            region[..., channel] = np.rint(plane)
    return canvas


# ---------------------------------------------------------------------------------
# Sampling scenes and clips.


def _sample_object(rng: np.random.Generator, background: str, exclude_heldout: bool, avoid_color: str | None,
                   jitter: float, shape_shares: tuple[float, ...] | None) -> ShapeObject:
    colors = [c for c in COLORS if (c, background) not in FORBIDDEN_ON_BACKGROUND and c != avoid_color]
    while True:
        obj = ShapeObject(
            color=colors[rng.integers(len(colors))],
            shape=SHAPES[rng.integers(len(SHAPES)) if shape_shares is None else rng.choice(len(SHAPES), p=shape_shares)],
            size=tuple(SIZES)[rng.integers(len(SIZES))],
            motion=MOTIONS[rng.integers(len(MOTIONS))],
            jitter=float(rng.uniform(-jitter, jitter)),
        )
        if not (exclude_heldout and (*obj.combo, background) in HELDOUT_COMBOS):
            return obj


def _start_extent(obj: ShapeObject) -> float:
    return SIZES[obj.size] * float(_scale(obj.motion, np.zeros(1))[0])


def check_shape_shares(shape_shares: tuple[float, ...]) -> None:
    if len(shape_shares) != len(SHAPES) or min(shape_shares) < 0 or abs(sum(shape_shares) - 1) > 1e-6:
        raise ValueError(f"shape_shares must be {len(SHAPES)} shares ({', '.join(SHAPES)}) summing to 1, "
                         f"got {tuple(shape_shares)}")


def sample_scene(rng: np.random.Generator, two_objects_prob: float = 0.3, exclude_heldout: bool = True,
                 shape_shares: tuple[float, ...] | None = None) -> Scene:
    """A scene drawn uniformly over the world's values, respecting its rules.

    Two-object scenes jitter by at most 0.05 (their halves are 0.5 apart) and redraw
    object pairs too big to sit apart in frame 0 on a square canvas. `shape_shares`
    (one per SHAPES, summing to 1) draws the shapes unevenly instead: a training set
    may show a shape that is hard to learn more often.
    """
    if shape_shares is not None:
        check_shape_shares(shape_shares)
    background = tuple(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    if rng.random() >= two_objects_prob:
        return Scene(background, (_sample_object(rng, background, exclude_heldout, None, 0.1, shape_shares),))
    while True:
        first = _sample_object(rng, background, exclude_heldout, None, 0.05, shape_shares)
        second = _sample_object(rng, background, exclude_heldout, first.color, 0.05, shape_shares)
        clearance = 0.5 - abs(first.jitter) - abs(second.jitter) - 0.02
        if (_start_extent(first) + _start_extent(second)) / 2 <= clearance:
            return Scene(background, (first, second))


class ShapesClips:
    """An endless, index-addressable stream of captioned Shapes clips.

    Clip i depends only on (seed, i): its canvas size, frame count, scene and caption
    are drawn from a generator seeded with both.
    """

    def __init__(self, seed: int = 0, sizes=((64, 64), (112, 64), (64, 112), (96, 96)), frame_counts=(1, 9, 17, 33),
                 two_objects_prob: float = 0.3, exclude_heldout: bool = True):
        for width, height in sizes:
            check_canvas(width, height, 1)
        for frames in frame_counts:
            check_canvas(MIN_SIDE, MIN_SIDE, frames)
        self.seed = seed
        self.sizes = tuple(tuple(size) for size in sizes)
        self.frame_counts = tuple(frame_counts)
        self.two_objects_prob = two_objects_prob
        self.exclude_heldout = exclude_heldout

    def clip(self, index: int) -> tuple[np.ndarray, str, Scene]:
        rng = np.random.default_rng([self.seed, index])
        width, height = self.sizes[rng.integers(len(self.sizes))]
        frames = self.frame_counts[rng.integers(len(self.frame_counts))]
        scene = sample_scene(rng, self.two_objects_prob, self.exclude_heldout)
        text = caption(scene, rng)
        return render(scene, width, height, frames), text, scene

    def __iter__(self) -> Iterator[tuple[np.ndarray, str]]:
        for index in itertools.count():
            video, text, _ = self.clip(index)
            yield video, text


# Captions build on the scene types above; re-exported so that the whole world is one import.
from model.data.captions import caption, parse_prompt  # noqa: E402
