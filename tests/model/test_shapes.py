"""The Shapes world: renderer geometry and palette, sampling rules, captions, prompt parsing."""

import itertools

import numpy as np
import pytest

from model.data import (
    BACKGROUNDS,
    COLORS,
    HELDOUT_COMBOS,
    MOTIONS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    ShapesClips,
    caption,
    parse_prompt,
    render,
    sample_scene,
)
from model.data.captions import MOTION_WORDS, SHAPE_WORDS


def one(color="red", shape="circle", size="medium", motion="still", background="black", jitter=0.0):
    return Scene(background, (ShapeObject(color, shape, size, motion, jitter),))


def centroid(video, color):
    """Per frame (x, y) of the pixels within 12 of a palette colour, in pixel-centre coordinates."""
    mask = np.abs(video.astype(int) - np.array(COLORS[color])).max(-1) <= 12
    points = []
    for frame in mask:
        ys, xs = np.nonzero(frame)
        points.append((xs.mean() + 0.5, ys.mean() + 0.5))
    return np.array(points)


def test_render_is_deterministic_and_exact_at_centres():
    scene = one("orange", "triangle", "large", "left", "navy", jitter=0.07)
    first, second = render(scene, 112, 64, 33), render(scene, 112, 64, 33)
    assert first.dtype == np.uint8 and first.shape == (33, 64, 112, 3)
    assert np.array_equal(first, second)
    for color, shape, background in [("pink", "circle", "gray"), ("cyan", "square", "white"), ("white", "triangle", "navy")]:
        video = render(one(color, shape, "small", "still", background), 64, 64, 1)
        assert video.shape == (1, 64, 64, 3)
        assert tuple(video[0, 32, 32]) == COLORS[color]  # the object sits at the centre
        assert tuple(video[0, 0, 0]) == BACKGROUNDS[background]
        # Nothing but the two palette colours and their blends on the object's rim.
        assert (np.abs(video.astype(int) - BACKGROUNDS[background]).max(-1) > 0).sum() < 0.1 * 64 * 64


@pytest.mark.parametrize("width,height", [(32, 32), (64, 112), (112, 64), (128, 128), (48, 80)])
@pytest.mark.parametrize("frames", [1, 5, 9, 17, 33])
def test_any_canvas_and_length(width, height, frames):
    video = render(one("green", "square", "large", "bouncing", "white"), width, height, frames)
    assert video.shape == (frames, height, width, 3)


@pytest.mark.parametrize("width,height,frames", [(60, 64, 9), (64, 16, 9), (64, 64, 0), (64, 64, 8), (64, 64, 10)])
def test_bad_canvas_is_refused_with_the_field_named(width, height, frames):
    with pytest.raises(ValueError, match="width|height|frames"):
        render(one(), width, height, frames)


def test_sizes_are_fractions_of_the_short_side():
    for size, fraction in SIZES.items():
        video = render(one("yellow", "square", size, "still", "black"), 112, 64, 1)
        # The red channel's blend share summed along the middle row and column is the side length.
        share = (video[0, :, :, 0].astype(float) - BACKGROUNDS["black"][0]) / (COLORS["yellow"][0] - BACKGROUNDS["black"][0])
        assert abs(share[32].sum() - fraction * 64) < 0.05
        assert abs(share[:, 56].sum() - fraction * 64) < 0.05


@pytest.mark.parametrize("motion,axis,start,end", [
    ("left", 0, 0.75, 0.25), ("right", 0, 0.25, 0.75), ("up", 1, 0.75, 0.25), ("down", 1, 0.25, 0.75),
])
def test_translations_cover_half_the_canvas_linearly(motion, axis, start, end):
    width, height = 112, 64
    extent = (width, height)[axis]
    path = centroid(render(one("blue", "square", "small", motion, "white"), width, height, 17), "blue")
    assert abs(path[0, axis] - start * extent) < 0.5
    assert abs(path[-1, axis] - end * extent) < 0.5
    steps = np.diff(path[:, axis])
    assert np.allclose(steps, steps[0], atol=0.05)  # linear in time
    other = path[:, 1 - axis]
    assert np.allclose(other, (height, width)[axis] / 2, atol=0.5)  # centred (no jitter) on the other axis


def test_still_image_shows_the_start_position():
    still = render(one("red", "circle", "medium", "left", "gray"), 96, 96, 1)
    clip = render(one("red", "circle", "medium", "left", "gray"), 96, 96, 33)
    assert np.array_equal(still[0], clip[0])


def test_jitter_moves_the_start_across_the_motion():
    for motion, axis, extent in (("left", 1, 64), ("up", 0, 112), ("still", 0, 112)):
        base = centroid(render(one("red", "square", "small", motion, "black", 0.0), 112, 64, 9), "red")
        moved = centroid(render(one("red", "square", "small", motion, "black", 0.1), 112, 64, 9), "red")
        assert np.allclose(moved[:, axis] - base[:, axis], 0.1 * extent, atol=0.5)
        assert np.allclose(moved[:, 1 - axis], base[:, 1 - axis], atol=0.01)


def test_growing_and_shrinking_scale_between_six_and_fourteen_tenths():
    for motion, first, last in (("growing", 0.6, 1.4), ("shrinking", 1.4, 0.6)):
        video = render(one("cyan", "square", "medium", motion, "black"), 64, 64, 9)
        # The blue channel's blend share summed along the middle row is the side length.
        share = (video[:, 32, :, 2].astype(float) - BACKGROUNDS["black"][2]) / (COLORS["cyan"][2] - BACKGROUNDS["black"][2])
        widths = share.sum(axis=1)
        assert abs(widths[0] - first * 0.3 * 64) < 0.05 and abs(widths[-1] - last * 0.3 * 64) < 0.05
        assert np.allclose(np.diff(widths), (last - first) * 0.3 * 64 / 8, atol=0.05)  # linear in time
        path = centroid(video, "cyan")
        assert np.allclose(path, path[0], atol=0.01)  # centre fixed


def test_bouncing_is_two_abs_sine_bounces_from_the_bottom_third():
    height = 64
    path = centroid(render(one("white", "circle", "small", "bouncing", "navy"), 64, height, 33), "white")
    ys = path[:, 1]
    assert abs(ys[0] - 2 / 3 * height) < 0.5 and abs(ys[-1] - 2 / 3 * height) < 0.5
    assert abs(ys[16] - 2 / 3 * height) < 0.5  # back on the floor half way: two bounces
    tops = [8, 24]
    assert all(ys[t] < ys[0] - 0.4 * height for t in tops)
    assert np.allclose(path[:, 0], 32, atol=0.5)  # x fixed


def test_two_objects_start_apart_and_the_second_is_drawn_on_top():
    scene = Scene("black", (ShapeObject("red", "square", "large", "still"), ShapeObject("green", "square", "large", "still")))
    video = render(scene, 64, 64, 1)
    left, right = centroid(video, "red")[0], centroid(video, "green")[0]
    assert left[0] < 32 < right[0]  # left and right halves for still objects
    movers = Scene("gray", (ShapeObject("pink", "circle", "large", "left"), ShapeObject("yellow", "triangle", "large", "right")))
    video = render(movers, 112, 64, 17)
    a, b = centroid(video, "pink")[0], centroid(video, "yellow")[0]
    assert (a[1] < 32) != (b[1] < 32)  # top and bottom halves for horizontal movers
    # Where both squares would cover a pixel, the second one's colour shows.
    overlap = Scene("black", (ShapeObject("red", "square", "large", "growing"), ShapeObject("blue", "square", "large", "growing")))
    last = render(overlap, 64, 64, 9)[-1]
    assert (np.abs(last.astype(int) - COLORS["blue"]).max(-1) == 0).sum() > (np.abs(last.astype(int) - COLORS["red"]).max(-1) == 0).sum()
    for seed in range(200):
        scene = sample_scene(np.random.default_rng(seed), two_objects_prob=1.0)
        frame = render(scene, 64, 64, 1)[0]
        for obj in scene.objects:
            assert (np.abs(frame.astype(int) - COLORS[obj.color]).max(-1) == 0).any(), scene


def test_sampling_follows_the_rules_and_never_draws_heldout_combinations():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(4000):
        scene = sample_scene(rng, two_objects_prob=0.5)
        assert scene.follows_rules() and not scene.is_heldout()
        for obj in scene.objects:
            assert (obj.color, scene.background) not in {("white", "white"), ("blue", "navy")}
            assert abs(obj.jitter) <= 0.1
            seen.add((obj.color, obj.shape, obj.motion, scene.background))
        if len(scene.objects) == 2:
            assert scene.objects[0].color != scene.objects[1].color
    # Uniform enough to reach nearly every allowed combination; every value appears.
    allowed = {c for c in itertools.product(COLORS, SHAPES, MOTIONS, BACKGROUNDS)
               if (c[0], c[3]) not in {("white", "white"), ("blue", "navy")} and c not in HELDOUT_COMBOS}
    assert len(seen) > 0.95 * len(allowed)
    for index, values in enumerate((COLORS, SHAPES, MOTIONS, BACKGROUNDS)):
        assert {c[index] for c in seen} == set(values)


def test_heldout_set_is_about_a_tenth_and_leaves_every_pair_in_training():
    allowed = [c for c in itertools.product(COLORS, SHAPES, MOTIONS, BACKGROUNDS)
               if (c[0], c[3]) not in {("white", "white"), ("blue", "navy")}]
    assert HELDOUT_COMBOS <= set(allowed)
    assert 0.08 <= len(HELDOUT_COMBOS) / len(allowed) <= 0.12
    training = [c for c in allowed if c not in HELDOUT_COMBOS]
    for i, j in itertools.combinations(range(4), 2):
        assert {(c[i], c[j]) for c in training} == {(c[i], c[j]) for c in allowed}
    # With exclusion off, held-out combinations are drawn too.
    rng = np.random.default_rng(1)
    assert any(sample_scene(rng, 0.0, exclude_heldout=False).is_heldout() for _ in range(500))


def test_a_scene_can_draw_one_shape_more_often_than_the_others():
    rng = np.random.default_rng(3)
    only_squares = [obj.shape for _ in range(100) for obj in sample_scene(rng, 0.5, shape_shares=(0, 1, 0)).objects]
    assert set(only_squares) == {"square"}
    shapes = [sample_scene(rng, 0.0, shape_shares=(0.25, 0.5, 0.25)).objects[0].shape for _ in range(1000)]
    assert 0.44 < shapes.count("square") / 1000 < 0.56
    assert 0.19 < shapes.count("circle") / 1000 < 0.31 and 0.19 < shapes.count("triangle") / 1000 < 0.31
    for wrong in ((0.5, 0.5), (0.5, 0.6, -0.1), (0.5, 0.5, 0.5)):
        with pytest.raises(ValueError, match="shape_shares must be 3 shares \\(circle, square, triangle\\) summing to 1"):
            sample_scene(rng, shape_shares=wrong)


def test_clips_are_deterministic_per_seed_and_index_and_mix_sizes():
    clips = ShapesClips(seed=7)
    video, text, scene = clips.clip(3)
    again, text_again, scene_again = ShapesClips(seed=7).clip(3)
    assert np.array_equal(video, again) and text == text_again and scene == scene_again
    other = ShapesClips(seed=8).clip(3)
    assert other[1] != text or not np.array_equal(other[0], video)
    shapes = {clips.clip(i)[0].shape for i in range(60)}
    assert {(s[2], s[1]) for s in shapes} == {(64, 64), (112, 64), (64, 112), (96, 96)}
    assert {s[0] for s in shapes} == {1, 9, 17, 33}
    first_from_iteration = next(iter(clips))
    assert np.array_equal(first_from_iteration[0], clips.clip(0)[0]) and first_from_iteration[1] == clips.clip(0)[1]


def test_captions_vary_are_reproducible_and_name_what_they_should():
    scene = Scene("navy", (ShapeObject("red", "circle", "small", "left"),))
    texts = [caption(scene, np.random.default_rng(seed)) for seed in range(200)]
    assert texts == [caption(scene, np.random.default_rng(seed)) for seed in range(200)]
    assert len(set(texts)) > 50
    lowered = [t.lower() for t in texts]
    for word in SHAPE_WORDS["circle"]:
        assert any(f" {word}" in t for t in lowered)
    for phrase in MOTION_WORDS["left"]:
        assert any(phrase in t for t in lowered)
    assert any("backdrop" in t for t in lowered) and any("background" in t for t in lowered)
    assert any("navy" not in t for t in lowered)  # the background phrase is sometimes left out
    assert all("small" in t or "little" in t for t in lowered)
    assert all("red" in t for t in lowered)
    medium = [caption(one(size="medium"), np.random.default_rng(s)).lower() for s in range(100)]
    assert not any(w in t for t in medium for w in ("small", "little", "large", "big", "medium"))
    pair = Scene("black", (ShapeObject("red", "circle", motion="left"), ShapeObject("blue", "square", motion="right")))
    text = caption(pair, np.random.default_rng(0)).lower()
    assert " and " in text and text.index("red") < text.index("blue")


def test_parser_reads_generated_captions_back():
    rng = np.random.default_rng(5)
    for _ in range(1500):
        scene = sample_scene(rng, two_objects_prob=0.3, exclude_heldout=False)
        text = caption(scene, rng)
        parsed = parse_prompt(text)
        assert parsed is not None, text
        assert parsed.background in (scene.background, None), text
        if parsed.background is None:
            assert scene.background not in text.lower() and "backdrop" not in text and "background" not in text
        expected = tuple(ShapeObject(o.color, o.shape, o.size, o.motion) for o in scene.objects)
        assert parsed.objects == expected, text


@pytest.mark.parametrize("text,expected", [
    ("There is a large cyan triangle bouncing up and down in front of a gray background.",
     Scene("gray", (ShapeObject("cyan", "triangle", "large", "bouncing"),))),
    ("A small square, colored orange, travelling to the right, with the background in white.",
     Scene("white", (ShapeObject("orange", "square", "small", "right"),))),
    ("The navy screen shows a violet disk that is growing larger",
     Scene("navy", (ShapeObject("purple", "circle", "medium", "growing"),))),
    ("black background. a tiny golden box falling", Scene("black", (ShapeObject("yellow", "square", "small", "down"),))),
    ("Show me a huge crimson ball going from left to right against a solid grey backdrop",
     Scene("gray", (ShapeObject("red", "circle", "large", "right"),))),
    ("a green pyramid on dark blue, staying in place", Scene("navy", (ShapeObject("green", "triangle", "medium", "still"),))),
    ("A white dot", Scene(None, (ShapeObject("white", "circle"),))),
    ("Two shapes on a black background: a red circle moving left and a pink square getting smaller.",
     Scene("black", (ShapeObject("red", "circle", motion="left"), ShapeObject("pink", "square", motion="shrinking")))),
    ("A blue box rising while a big yellow ball hops, in front of a white background.",
     Scene("white", (ShapeObject("blue", "square", motion="up"), ShapeObject("yellow", "circle", "large", "bouncing")))),
])
def test_parser_reads_phrasings_the_generator_never_uses(text, expected):
    assert parse_prompt(text) == expected


@pytest.mark.parametrize("text", ["a cat playing piano", "a red sunset over the sea", "", "a ball", "red, green and blue circles and squares and triangles"])
def test_parser_returns_none_for_prompts_outside_the_world(text):
    assert parse_prompt(text) is None


def test_scene_values_are_checked():
    with pytest.raises(ValueError, match="colou?r"):
        ShapeObject("magenta", "circle")
    with pytest.raises(ValueError, match="motion"):
        ShapeObject("red", "circle", motion="spinning")
    with pytest.raises(ValueError, match="background"):
        Scene("beige", (ShapeObject("red", "circle"),))
    with pytest.raises(ValueError, match="one or two"):
        Scene("black", ())
