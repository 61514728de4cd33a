"""Prompt adherence in the Shapes world: a deterministic analyzer and the held-out set.

`analyze(video, scene)` measures whether a clip shows the scene its prompt
describes, by the rules of the last section of specs/shapes-world.md:

- background: the median colour of the border pixels (all frames) is nearest the named one;
- colour: the mean of the pixels farther than 60 from that background is nearest
  the named object colour; the object's pixels are those nearer that colour than
  the background;
- shape: per frame, on the largest 4-connected blob of core pixels (distance to
  the object colour under half the distance to the background): triangle when the
  blob's centroid sits more than 0.08 x its box height below the box centre, else
  square when it fills more than 0.88 of its box, else circle; majority over frames;
- motion: from the object's centroid and area, averaged over the first and the
  last quarter of the frames.

Where the spec leaves room, these choices are made:

- Motion is decided in the order bouncing, translation, scale, still. Bouncing is
  checked first because its signature (at least two turns of the vertical
  centroid, each swing at least 0.15 x H) cannot arise from a clean translation or
  scaling, while a bounce whose phase differs from the ideal could shift the
  quarter averages enough to look like a translation. Translation comes before
  scale because a moving object's area barely changes, while a scaling one's
  centre stays put.
- Displacements along the two axes are compared in pixels.
- A still image (1 frame) can only be checked as "still": its predicted motion is
  "still", and `motion` is None (not checkable) when the prompt names another motion.
- Two objects: far pixels vote for the object colour whose blends with the
  background pass nearest to them (among colours farther than 60 from the
  background); the two most voted colours (each with at
  least 1% of the votes) are the predicted ones, matched to the named objects (a
  named colour that was voted for keeps its object). Each object's pixels (and
  core pixels) are then those of the single-object rule that also lie nearer the
  blends of its colour with the background than the blends of the other colour,
  and shape and motion are analysed per object as above.
- An attribute the prompt does not name (a parsed prompt without a background) is
  None and is left out of `all` and of the accuracies.

`heldout_cases()` and `heldout_pair_cases()` are the fixed evaluation set: scenes
whose combinations are never trained on (HELDOUT_COMBOS), phrased with sentence
templates the caption generator never uses. `reel eval` runs a model on them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.data.shapes import BACKGROUNDS, COLORS, HELDOUT_COMBOS, MOTIONS, Scene, ShapeObject

FAR_FROM_BACKGROUND = 60.0  # RGB distance beyond which a pixel is not background (spec)
TRIANGLE_OFFSET = 0.08  # centroid below box centre, in box heights (spec)
SQUARE_FILL = 0.88  # blob area / box area above which a blob is a square (spec)
MIN_TRAVEL = 0.15  # centroid travel, in canvas extents, that counts as moving (spec)
GROW_RATIO, SHRINK_RATIO = 1.5, 0.67  # area ratio last/first quarter (spec)
MIN_BLOB = 4  # pixels; smaller blobs carry no shape vote
MIN_COLOR_SHARE = 0.01  # of the far pixels (and at least MIN_BLOB), for a colour to count as present (two objects)
QUIET_BACKGROUND = 30.0  # RGB distance under which a pixel counts as background for the flicker figure

_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_BACKGROUND_RGB = np.array([BACKGROUNDS[n] for n in _BACKGROUND_NAMES], dtype=np.float32)
_COLOR_NAMES = tuple(COLORS)
_COLOR_RGB = np.array([COLORS[n] for n in _COLOR_NAMES], dtype=np.float32)


# Pixels are handled as channel planes (3, ...): numpy is several times slower when the
# innermost loop runs over the 3 channels of a pixel.


def _distance(planes: np.ndarray, rgb) -> np.ndarray:
    red, green, blue = (planes[k] - float(rgb[k]) for k in range(3))
    return np.sqrt(red * red + green * green + blue * blue)


def _nearest(rgb: np.ndarray, names: tuple[str, ...], palette: np.ndarray) -> str:
    return names[int(np.argmin(((palette - rgb) ** 2).sum(axis=1)))]


# ---------------------------------------------------------------------------------
# Connected components: union-find over the 4-neighbour edges of all frames at once,
# hooking roots onto smaller roots and jumping pointers until every edge joins two
# pixels of one root. Frames are never joined (edges stay within a frame).


def largest_blobs(mask: np.ndarray) -> np.ndarray:
    """mask (T, H, W) bool -> the largest 4-connected component of each frame, same shape."""
    frames, height, width = mask.shape
    flat = mask.ravel()
    count = int(flat.sum())
    result = np.zeros(mask.size, dtype=bool)
    if count == 0:
        return result.reshape(mask.shape)
    ids = np.full(mask.size, -1, dtype=np.int64)
    ids[flat] = np.arange(count)
    grid = ids.reshape(mask.shape)
    across = mask[:, :, :-1] & mask[:, :, 1:]
    down = mask[:, :-1, :] & mask[:, 1:, :]
    a = np.concatenate([grid[:, :, :-1][across], grid[:, :-1, :][down]])
    b = np.concatenate([grid[:, :, 1:][across], grid[:, 1:, :][down]])
    parent = np.arange(count)
    while a.size:
        root_a, root_b = parent[a], parent[b]
        differ = root_a != root_b
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(root_a, root_b)[differ], np.minimum(root_a, root_b)[differ])
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    sizes = np.bincount(parent, minlength=count)
    frame_of = np.flatnonzero(flat) // (height * width)
    roots = np.flatnonzero(sizes)
    # Per frame, the root with the most pixels (lexsort: by frame, then size descending).
    order = np.lexsort((-sizes[roots], frame_of[roots]))
    first = np.unique(frame_of[roots][order], return_index=True)[1]
    keep = np.zeros(count, dtype=bool)
    keep[roots[order][first]] = True
    result[np.flatnonzero(flat)] = keep[parent]
    return result.reshape(mask.shape)


# ---------------------------------------------------------------------------------
# One object, given its colour.


def _shape_votes(core: np.ndarray) -> list[str]:
    blobs = largest_blobs(core)
    votes = []
    for blob in blobs:
        rows, cols = np.nonzero(blob)
        if rows.size < MIN_BLOB:
            continue
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        box_height, box_width = bottom - top + 1, right - left + 1
        below_centre = (rows.mean() - (top + bottom) / 2) / box_height
        if below_centre > TRIANGLE_OFFSET:
            votes.append("triangle")
        elif rows.size / (box_height * box_width) > SQUARE_FILL:
            votes.append("square")
        else:
            votes.append("circle")
    return votes


def _turns(values: np.ndarray, swing: float) -> int:
    """Turning points of a sequence, counting only swings of at least `swing` (a zigzag filter)."""
    turns, direction = 0, 0
    low = high = extreme = values[0]
    for value in values[1:]:
        if direction == 0:  # no full swing yet: wait for one, either way
            low, high = min(low, value), max(high, value)
            if value - low >= swing or high - value >= swing:
                direction, extreme = (1 if value - low >= swing else -1), value
        elif (value - extreme) * direction > 0:
            extreme = value  # further the same way
        elif abs(value - extreme) >= swing:
            turns, direction, extreme = turns + 1, -direction, value
    return turns


def _motion(mask: np.ndarray) -> str | None:
    frames, height, width = mask.shape
    if frames == 1:
        return "still"
    area = mask.sum(axis=(1, 2)).astype(np.float64)
    present = area > 0
    if not present.any():
        return None
    ys, xs = np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (mask.sum(axis=2) * ys).sum(axis=1) / area
        cx = (mask.sum(axis=1) * xs).sum(axis=1) / area
    if _turns(cy[present], MIN_TRAVEL * height) >= 2:
        return "bouncing"
    quarter = max(1, frames // 4)
    first, last = np.zeros(frames, bool), np.zeros(frames, bool)
    first[:quarter], last[-quarter:] = True, True
    first, last = first & present, last & present
    if not first.any() or not last.any():
        return None
    dx = cx[last].mean() - cx[first].mean()
    dy = cy[last].mean() - cy[first].mean()
    if abs(dx) >= MIN_TRAVEL * width and abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    if abs(dy) >= MIN_TRAVEL * height and abs(dy) > abs(dx):
        return "down" if dy > 0 else "up"
    ratio = area[last].mean() / area[first].mean()
    if ratio > GROW_RATIO:
        return "growing"
    if ratio < SHRINK_RATIO:
        return "shrinking"
    return "still"


def _off_blend(planes: np.ndarray, background_rgb: np.ndarray, color_rgb) -> np.ndarray:
    """Distance of each pixel from the segment of blends between the background and a colour."""
    direction = [float(color_rgb[k]) - float(background_rgb[k]) for k in range(3)]
    offset = [planes[k] - float(background_rgb[k]) for k in range(3)]
    share = sum(o * d for o, d in zip(offset, direction)) / sum(d * d for d in direction)
    np.clip(share, 0.0, 1.0, out=share)
    residual = [o - share * d for o, d in zip(offset, direction)]
    return np.sqrt(sum(r * r for r in residual))


def _analyze_object(planes, to_background, color: str | None, mine: np.ndarray | None) -> dict:
    if color is None:
        return {"shape": None, "motion": None}
    to_color = _distance(planes, COLORS[color])
    nearer = to_color < to_background
    core = to_color < 0.5 * to_background
    if mine is not None:
        nearer &= mine
        core &= mine
    votes = _shape_votes(core)
    # Ties go to the shape named first in this order (a fixed, arbitrary rule).
    counts = Counter(votes)
    shape = max(("circle", "square", "triangle"), key=lambda s: counts[s]) if votes else None
    return {"shape": shape, "motion": _motion(nearer)}


# ---------------------------------------------------------------------------------


def analyze(video: np.ndarray, scene: Scene) -> dict:
    """How a clip (uint8 (T, H, W, 3)) matches a scene, attribute by attribute.

    Returns booleans (None when not checkable) `background`, `color`, `shape`,
    `motion`, `all` (over all objects), `predicted` values, `objects` (per object
    booleans and predictions) and `flicker` (mean absolute change between
    consecutive frames over background pixels, those within 30 of the background
    colour in both frames and 2 pixels clear of any that is not; None for one frame).
    """
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or video.shape[0] < 1:
        raise ValueError(f"video must be uint8 (T, H, W, 3), got {video.dtype} {video.shape}")
    planes = np.ascontiguousarray(np.moveaxis(video, -1, 0), dtype=np.float32)  # (3, T, H, W)
    frames = video.shape[0]
    border = np.concatenate(
        [planes[:, :, 0, :], planes[:, :, -1, :], planes[:, :, 1:-1, 0], planes[:, :, 1:-1, -1]], axis=2
    ).reshape(3, -1)
    background_rgb = np.median(border, axis=1)
    background = _nearest(background_rgb, _BACKGROUND_NAMES, _BACKGROUND_RGB)
    to_background = _distance(planes, background_rgb)
    far = to_background > FAR_FROM_BACKGROUND

    named = scene.objects
    if len(named) == 1:
        colors = [_nearest(planes[:, far].mean(axis=1), _COLOR_NAMES, _COLOR_RGB) if far.any() else None]
    else:
        colors = _two_colors(planes[:, far], background_rgb, [obj.color for obj in named])
    owners = [None] * len(named)
    if len(named) == 2 and None not in colors:
        # Anti-aliased or blurred edges blend an object's colour with the background, and
        # such a blend can lie nearer the other object's colour (blue on white passes
        # close to purple). So a pixel belongs to the object whose background-to-colour
        # segment it lies closer to.
        first_off, second_off = (_off_blend(planes, background_rgb, COLORS[c]) for c in colors)
        owners = [first_off < second_off, second_off <= first_off]
    objects = []
    for obj, color, mine in zip(named, colors, owners):
        found = _analyze_object(planes, to_background, color, mine)
        motion_ok = found["motion"] == obj.motion
        if frames == 1 and obj.motion != "still":
            motion_ok = None
        objects.append({
            "color": color == obj.color,
            "shape": found["shape"] == obj.shape,
            "motion": motion_ok,
            "predicted": {"color": color, "shape": found["shape"], "motion": found["motion"]},
        })

    def every(attribute):
        values = [o[attribute] for o in objects]
        return None if any(v is None for v in values) else all(values)

    result = {
        "background": None if scene.background is None else background == scene.background,
        "color": every("color"),
        "shape": every("shape"),
        "motion": every("motion"),
    }
    result["all"] = all(v for v in result.values() if v is not None)
    result["predicted"] = {"background": background, "objects": [o["predicted"] for o in objects]}
    result["objects"] = objects
    # Flicker is measured on the background away from objects: pixels that are quiet in
    # both frames and at least two pixels from any that is not (rims move with objects).
    quiet = to_background < QUIET_BACKGROUND
    steady = _erode(quiet[1:] & quiet[:-1], 2) if frames > 1 else None
    result["flicker"] = (
        float(np.abs(planes[:, 1:] - planes[:, :-1]).mean(axis=0)[steady].mean()) if frames > 1 and steady.any() else None
    )
    return result


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Per frame, keep the pixels whose (2 radius + 1)-square neighbourhood is all in the mask."""
    padded = np.pad(mask, ((0, 0), (radius, radius), (radius, radius)), constant_values=True)
    height, width = mask.shape[1:]
    out = mask.copy()
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out &= padded[:, dy:dy + height, dx:dx + width]
    return out


def _two_colors(far_pixels: np.ndarray, background_rgb: np.ndarray, named: list[str]) -> list[str | None]:
    # far_pixels: (3, N)
    if far_pixels.shape[1] == 0:
        return [None, None]
    candidates = [i for i, rgb in enumerate(_COLOR_RGB) if np.linalg.norm(rgb - background_rgb) > FAR_FROM_BACKGROUND]
    # A pixel votes for the colour whose blends with the background pass nearest to it,
    # so that the anti-aliased rim of a big red disc on white votes red, not pink.
    off = np.stack([_off_blend(far_pixels, background_rgb, _COLOR_RGB[i]) for i in candidates], axis=1)
    votes = np.bincount(np.argmin(off, axis=1), minlength=len(candidates))
    ranked = [_COLOR_NAMES[candidates[i]] for i in np.argsort(-votes, kind="stable")
              if votes[i] >= max(MIN_COLOR_SHARE * far_pixels.shape[1], MIN_BLOB)][:2]
    assigned: list[str | None] = [c if c in ranked else None for c in named]
    spare = [c for c in ranked if c not in assigned]
    return [c if c is not None else (spare.pop(0) if spare else None) for c in assigned]


def summarize(results: list[dict]) -> dict:
    """Accuracy of each attribute over the results where it was checkable, and the mean flicker."""
    summary: dict = {"count": len(results)}
    for attribute in ("background", "color", "shape", "motion", "all"):
        values = [r[attribute] for r in results if r[attribute] is not None]
        summary[attribute] = sum(values) / len(values) if values else None
    flicker = [r["flicker"] for r in results if r.get("flicker") is not None]
    summary["flicker"] = float(np.mean(flicker)) if flicker else None
    return summary


def by_asked_value(scenes: list[Scene], results: list[dict]) -> dict:
    """For colour, shape and motion: per value asked, how many objects showed it and what the others read as.

    {"shape": {"square": {"count": 15, "right": 2, "read_as": {"circle": 13}}, ...}, ...}; an object whose
    attribute was not checkable (motion in a still image) is left out; a value the analyzer could not
    read at all is counted as "none".
    """
    table: dict = {attribute: {} for attribute in ("color", "shape", "motion")}
    for scene, result in zip(scenes, results):
        for obj, found in zip(scene.objects, result["objects"]):
            for attribute, values in table.items():
                if found[attribute] is None:
                    continue
                cell = values.setdefault(getattr(obj, attribute), {"count": 0, "right": 0, "read_as": {}})
                cell["count"] += 1
                if found[attribute]:
                    cell["right"] += 1
                else:
                    read = found["predicted"][attribute] or "none"
                    cell["read_as"][read] = cell["read_as"].get(read, 0) + 1
    return table


def _by_value_lines(table: dict) -> str:
    lines = []
    for attribute, values in table.items():
        cells = []
        for value, cell in sorted(values.items()):
            wrong = ", ".join(f"{read} {n}" for read, n in sorted(cell["read_as"].items(), key=lambda item: -item[1]))
            cells.append(f"{value} {cell['right']}/{cell['count']}" + (f" (read as {wrong})" if wrong else ""))
        lines.append(f"{attribute:<8}" + "; ".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------
# The held-out evaluation set.


@dataclass(frozen=True)
class EvalCase:
    id: str  # stable name of the case
    prompt: str  # what the model is asked for
    scene: Scene  # what the prompt means (jitter 0: position is not scored)
    width: int
    height: int
    frames: int
    seed: int


CANVASES = ((64, 64), (112, 64), (64, 112), (96, 96))
DURATIONS = (9, 17, 33)  # 1, 2 and 4 seconds at 8 fps
OBJECT_SIZES = ("medium", "small", "large")

# Templates and phrasings the caption generator never produces (model/data/captions.py).
_TEMPLATES = (
    "There is {thing} {motion} in front of a {background} background.",
    "Video of {thing} that is {motion}, on a plain {background} backdrop.",
    "{Background} background. {Thing} {motion}.",
    "Show me {thing} {motion} against a solid {background} background.",
    "{Bare}, colored {color}, {motion}, with the background in {background}.",
    "The {background} screen shows {thing} {motion}.",
    "Animation of {thing} {motion} over a {background} background.",
    "On a {background} background, {thing} keeps {motion}.",
)
_MOTION_PHRASES = {
    "left": ("moving left", "travelling to the left", "going left"),
    "right": ("moving right", "travelling to the right", "going right"),
    "up": ("moving up", "going up", "rising"),
    "down": ("moving down", "going down", "falling"),
    "still": ("standing still", "staying in place", "not moving"),
    "growing": ("growing", "growing larger", "getting bigger"),
    "shrinking": ("shrinking", "getting smaller", "shrinking away"),
    "bouncing": ("bouncing", "bouncing up and down", "hopping"),
}
_PAIR_TEMPLATES = (
    "Two shapes on a {background} background: {first} and {second}.",
    "{First} while {second_is}, in front of a {background} background.",
    "The {background} backdrop holds {first_that} and {second_that}.",
)
_SHAPE_NOUNS = {"circle": "circle", "square": "square", "triangle": "triangle"}


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _phrase(obj: ShapeObject, with_color: bool = True) -> str:
    words = ([obj.size] if obj.size != "medium" else []) + ([obj.color] if with_color else []) + [_SHAPE_NOUNS[obj.shape]]
    return _article(" ".join(words))


def _spread(items: list, count: int) -> list:
    """`count` items evenly spaced through a list (deterministic, no random generator involved)."""
    return [items[(j * len(items)) // count] for j in range(count)]


def heldout_cases() -> list[EvalCase]:
    """48 single-object cases: 6 per motion, each a HELDOUT_COMBOS combination, over the
    four training canvases and 1, 2 and 4 seconds, phrased with unseen templates."""
    cases = []
    settings = [(canvas, frames) for frames in DURATIONS for canvas in CANVASES]  # 12
    for m, motion in enumerate(MOTIONS):
        combos = sorted(c for c in HELDOUT_COMBOS if c[2] == motion)
        for j, (color, shape, _, background) in enumerate(_spread(combos, 6)):
            i = len(cases)
            obj = ShapeObject(color=color, shape=shape, size=OBJECT_SIZES[i % 3], motion=motion)
            (width, height), frames = settings[(i * 5) % 12]
            template = _TEMPLATES[i % len(_TEMPLATES)]
            phrase = _phrase(obj)
            prompt = template.format(
                thing=phrase, Thing=phrase[0].upper() + phrase[1:], motion=_MOTION_PHRASES[motion][j % 3],
                background=background, Background=background.capitalize(), color=color,
                Bare=_phrase(obj, with_color=False).capitalize(),
            )
            cases.append(EvalCase(f"single-{i:02d}-{color}-{shape}-{motion}-{background}", prompt,
                                  Scene(background, (obj,)), width, height, frames, seed=1000 + i))
    return cases


def heldout_pair_cases() -> list[EvalCase]:
    """12 two-object cases: both objects are HELDOUT_COMBOS combinations on one background."""
    combos = sorted(HELDOUT_COMBOS, key=lambda c: (c[3], c[2], c[0], c[1]))
    cases = []
    settings = [(canvas, frames) for frames in DURATIONS for canvas in CANVASES]
    for background in BACKGROUNDS:
        here = [c for c in combos if c[3] == background]
        pairs = []
        # Pair the k-th with the one half a list away: different motions and usually different shapes.
        for k in range(len(here) // 2):
            a, b = here[k], here[k + len(here) // 2]
            if a[0] != b[0]:
                pairs.append((a, b))
        for a, b in _spread(pairs, 3):
            i = len(cases)
            first = ShapeObject(color=a[0], shape=a[1], size=OBJECT_SIZES[i % 2], motion=a[2])
            second = ShapeObject(color=b[0], shape=b[1], size=OBJECT_SIZES[(i + 1) % 2], motion=b[2])
            (width, height), frames = settings[(i * 7) % 12]
            m1, m2 = _MOTION_PHRASES[a[2]][i % 3], _MOTION_PHRASES[b[2]][(i + 1) % 3]
            p1, p2 = _phrase(first), _phrase(second)
            prompt = _PAIR_TEMPLATES[i % len(_PAIR_TEMPLATES)].format(
                background=background, first=f"{p1} {m1}", First=f"{p1[0].upper()}{p1[1:]} {m1}",
                second=f"{p2} {m2}", second_is=f"{p2} is {m2}", first_that=f"{p1} that is {m1}",
                second_that=f"{p2} that is {m2}",
            )
            cases.append(EvalCase(f"pair-{i:02d}-{a[0]}-{a[1]}-{a[2]}-{b[0]}-{b[1]}-{b[2]}-{background}", prompt,
                                  Scene(background, (first, second)), width, height, frames, seed=2000 + i))
    return cases


def seen_cases(config, count: int = 48, seed: int = 0) -> list[EvalCase]:
    """The first `count` single-object clips (stills left out) that a transformer run with `seed`
    trains on, each with the caption of its first epoch.

    A model that scores as badly on these as on the held-out set has not learned its training
    data yet (train longer or better); one that scores well here only does not generalise.
    A background the caption leaves unnamed goes unscored, as the clip's was drawn at random.
    """
    from model.data.captions import parse_prompt
    from model.train import pool_caption, pool_clip

    cases, index = [], 0
    while len(cases) < count:
        scene, (width, height, frames) = pool_clip(config, seed, index)
        if len(scene.objects) == 1 and frames > 1:
            prompt = pool_caption(scene, seed, index, 0)
            parsed = parse_prompt(prompt)
            if parsed is None or parsed.background is None:
                scene = Scene(None, scene.objects)
            cases.append(EvalCase(f"seen-{index:04d}", prompt, scene, width, height, frames, seed=3000 + index))
        index += 1
    return cases


# ---------------------------------------------------------------------------------
# `reel eval`


def _batches(cases: list[EvalCase], cell_budget: int) -> list[list[EvalCase]]:
    """Consecutive cases packed while their pixel-frames stay within a budget (at least one per batch)."""
    batches, current, used = [], [], 0
    for case in cases:
        cells = case.width * case.height * case.frames
        if current and used + cells > cell_budget:
            batches.append(current)
            current, used = [], 0
        current.append(case)
        used += cells
    if current:
        batches.append(current)
    return batches


def frame_grid(videos: list[np.ndarray], labels: list[str], columns: int = 4, cell: int = 128) -> "Image.Image":
    """One row per video: `columns` frames spread over the clip, each centred in a cell, a label under the row."""
    from PIL import Image, ImageDraw

    label_height = 12
    grid = Image.new("RGB", (columns * (cell + 2), len(videos) * (cell + 2 + label_height)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for row, (video, label) in enumerate(zip(videos, labels)):
        top = row * (cell + 2 + label_height)
        picks = np.linspace(0, video.shape[0] - 1, columns).round().astype(int)
        for col, index in enumerate(picks):
            frame = Image.fromarray(video[index])
            left = col * (cell + 2)
            grid.paste(frame, (left + (cell - frame.width) // 2, top + (cell - frame.height) // 2))
        draw.text((2, top + cell + 1), label[: columns * cell // 6], fill=(0, 0, 0))
    return grid


def autoencoder_round_trip(pipeline, case: EvalCase) -> np.ndarray:
    """The case's true render, encoded and decoded: what a transformer that made perfect latents would show."""
    import torch

    from model.data.shapes import render
    from model.pipeline import to_uint8
    from model.train import video_to_tensor

    video = render(case.scene, case.width, case.height, case.frames)
    with torch.inference_mode():
        latent = pipeline.vae.encode(video_to_tensor(video)[None].to(pipeline.device))
    return to_uint8(pipeline.decode([latent[0]])[0])


def evaluate_model(pipeline, cases: list[EvalCase], steps: int | None = None, sampler: str | None = None,
                   guidance: float | None = None, cell_budget: int = 64 * 64 * 33 * 4, progress=None,
                   autoencoder_only: bool = False) -> tuple[list[dict], list[np.ndarray]]:
    """Generate every case (several per packed `generate` call) and analyze it against its scene.

    With `autoencoder_only` the transformer is left out: each case's true render goes through the
    autoencoder instead, which measures the ceiling the autoencoder sets on every score.
    """
    from model.pipeline import VideoSpec

    results, videos = [], []
    for batch in _batches(cases, cell_budget):
        if autoencoder_only:
            made = [autoencoder_round_trip(pipeline, c) for c in batch]
        else:
            specs = [VideoSpec(prompt=c.prompt, width=c.width, height=c.height, frames=c.frames, seed=c.seed,
                               steps=steps, guidance=guidance) for c in batch]
            made = pipeline.generate(specs, sampler=sampler)
        for case, video in zip(batch, made):
            result = analyze(video, case.scene)
            result["id"], result["prompt"] = case.id, case.prompt
            results.append(result)
            videos.append(video)
        if progress is not None:
            progress(len(results), len(cases))
    return results, videos


def _table(rows: list[tuple[str, dict]]) -> str:
    header = f"{'set':<12}{'cases':>6}" + "".join(f"{a:>12}" for a in ("background", "color", "shape", "motion", "all", "flicker"))
    lines = [header]
    for name, summary in rows:
        cells = []
        for attribute in ("background", "color", "shape", "motion", "all"):
            value = summary[attribute]
            cells.append(f"{'-' if value is None else f'{100 * value:.1f}%':>12}")
        flicker = summary["flicker"]
        cells.append(f"{'-' if flicker is None else f'{flicker:.2f}':>12}")
        lines.append(f"{name:<12}{summary['count']:>6}" + "".join(cells))
    return "\n".join(lines)


def _words_command(pipeline, args) -> int:
    """`reel eval --words`: the loss gap wrong words cost (model/probe.py), on --limit scenes (default 24)."""
    import sys

    import torch

    from model.probe import (
        denoising_loss,
        probe_scenes,
        scene_latent,
        sensitivity_table,
        word_sensitivity,
    )

    started = time.perf_counter()

    def progress(done, total):
        print(f"\r{done}/{total} scenes", end="", file=sys.stderr, flush=True)

    scenes = probe_scenes(args.limit or 24)
    with torch.inference_mode():
        latents = [scene_latent(pipeline, scene) for scene in scenes]
    result = word_sensitivity(pipeline, scenes, progress=progress, latents=latents)
    print(file=sys.stderr)
    print(sensitivity_table(result))
    print("loss gap, wrong prompt minus true, and the share of scenes the true prompt wins")
    loss = denoising_loss(pipeline, scenes, latents=latents)
    print("".join(f"{f't={t}':>10}" for t in loss))
    print("".join(f"{value:>10.3f}" for value in loss.values()))
    print(f"velocity loss with the true prompt, per timestep; {len(scenes)} scenes "
          f"in {time.perf_counter() - started:.1f} s (model {args.model})")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "words.json").write_text(json.dumps(
            {"model": str(args.model), "scenes": len(scenes), "gaps": result, "loss": loss}, indent=2))
        print(f"wrote {out / 'words.json'}")
    return 0


def eval_command(args) -> int:
    """`reel eval`: prompt adherence of a model on the held-out Shapes cases."""
    import sys

    if args.words:
        # The probe samples nothing and scores the transformer alone: these options would change nothing.
        given = (("--steps", args.steps is not None), ("--sampler", args.sampler is not None),
                 ("--guidance", args.guidance is not None), ("--autoencoder", args.autoencoder), ("--seen", args.seen))
        ignored = [name for name, was_given in given if was_given]
        if ignored:
            print(f"reel eval: --words samples nothing, so it takes no {', '.join(ignored)}", file=sys.stderr)
            return 2

    from model.pipeline import TextToVideo

    if args.limit is not None and args.limit < 1:
        print("--limit must be at least 1", file=sys.stderr)
        return 2
    try:
        pipeline = TextToVideo.load(args.model, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"reel eval: {error}", file=sys.stderr)
        return 2
    if args.words:
        return _words_command(pipeline, args)
    first_set = "seen" if args.seen else "single"
    single, pairs = (seen_cases(pipeline.config), []) if args.seen else (heldout_cases(), heldout_pair_cases())
    if args.limit is not None:
        single, pairs = single[: args.limit], pairs[: max(0, args.limit - len(single))]
    flow = pipeline.config.flow
    steps, sampler = args.steps or flow.steps, args.sampler or flow.sampler
    guidance = flow.guidance if args.guidance is None else args.guidance
    started = time.perf_counter()

    def progress(done, total):
        print(f"\r{done}/{total} cases", end="", file=sys.stderr, flush=True)

    cases = single + pairs
    try:
        results, videos = evaluate_model(pipeline, cases, steps=steps, sampler=sampler, guidance=guidance,
                                         progress=progress, autoencoder_only=args.autoencoder)
    except ValueError as error:  # a --steps, --sampler or --guidance the pipeline refuses
        print(f"\nreel eval: {error}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    seconds = time.perf_counter() - started
    single_results, pair_results = results[: len(single)], results[len(single):]
    summaries = {first_set: summarize(single_results)}
    if pair_results:
        summaries["two_objects"] = summarize(pair_results)
    print(_table([(name, s) for name, s in summaries.items()]))
    # Which values fail, and as what (over every object of every case): the summary says how much, this says where.
    by_value = by_asked_value([case.scene for case in cases], results)
    print(_by_value_lines(by_value))
    made_by = ("the autoencoder's round trip of the true renders" if args.autoencoder else
               f"steps {steps}, sampler {sampler}, guidance {guidance}")
    print(f"{len(cases)} cases in {seconds:.1f} s (model {args.model}, {made_by})")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report = {
            "model": str(args.model),
            "config": pipeline.config.name,
            "steps": steps,
            "sampler": sampler,
            "guidance": guidance,
            "autoencoder_only": args.autoencoder,
            "seconds": seconds,
            "summary": summaries,
            "by_asked_value": by_value,
            "cases": [
                {**{k: v for k, v in asdict(case).items() if k != "scene"}, "scene": asdict(case.scene), "result": result}
                for case, result in zip(cases, results)
            ],
        }
        (out / "report.json").write_text(json.dumps(report, indent=2))
        frame_grid(videos, [f"{'ok ' if r['all'] else 'NO '}{c.prompt}" for c, r in zip(cases, results)]).save(out / "frames.png")
        print(f"wrote {out / 'report.json'} and {out / 'frames.png'}")
    return 0
