"""The prompt-adherence analyzer on ground truth (raw and through H.264), the held-out set, and `reel eval`."""

import json
import re
from collections import deque

import av
import numpy as np
import pytest
from PIL import Image

from model.config import preset
from model.data import HELDOUT_COMBOS, MOTIONS, Scene, ShapeObject, caption, parse_prompt, render, sample_scene
from model.evaluate import (
    EvalCase,
    _batches,
    analyze,
    by_asked_value,
    heldout_cases,
    heldout_pair_cases,
    largest_blobs,
    seen_cases,
    summarize,
)

CANVASES = ((64, 64), (112, 64), (64, 112), (96, 96))
ATTRIBUTES = ("background", "color", "shape", "motion", "all")


def random_cases(seed, count, two_objects_prob=0.3):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        scene = sample_scene(rng, two_objects_prob=two_objects_prob, exclude_heldout=False)
        width, height = CANVASES[rng.integers(len(CANVASES))]
        frames = (1, 9, 17, 33)[rng.integers(4)]
        yield scene, width, height, frames


def h264_round_trip(video, path):
    """Encode as the service does (libx264, yuv420p, crf 18, 8 fps) into a file, decode it back."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.codec_context.options = {"crf": "18"}
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def failures(results):
    return {a: sum(r[a] is False for r in results) for a in ATTRIBUTES}


def test_analyzer_agrees_with_ground_truth_on_rendered_scenes():
    results = [analyze(render(scene, w, h, t), scene) for scene, w, h, t in random_cases(0, 300)]
    summary = summarize(results)
    assert summary["count"] == 300
    assert summary["all"] >= 0.99, failures(results)
    for attribute in ("background", "color"):
        assert summary[attribute] == 1.0
    assert summary["flicker"] == 0.0  # a rendered background never changes


def test_analyzer_agrees_with_ground_truth_after_h264(tmp_path):
    results = []
    for i, (scene, w, h, t) in enumerate(random_cases(1, 150)):
        video = h264_round_trip(render(scene, w, h, t), tmp_path / f"{i}.mp4")
        assert video.shape == (t, h, w, 3)
        results.append(analyze(video, scene))
    assert summarize(results)["all"] >= 0.99, failures(results)


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_every_motion_and_shape_is_recognised(shape):
    for motion in MOTIONS:
        for (width, height), frames in zip(CANVASES, (9, 17, 33, 9)):
            scene = Scene("gray", (ShapeObject("orange", shape, "small", motion, 0.05),))
            result = analyze(render(scene, width, height, frames), scene)
            assert result["predicted"]["objects"][0] == {"color": "orange", "shape": shape, "motion": motion}
            assert result["all"] is True


def test_analyzer_says_what_is_wrong():
    video = render(Scene("black", (ShapeObject("red", "circle", "large", "left"),)), 112, 64, 17)
    asked = {
        "background": Scene("white", (ShapeObject("red", "circle", "large", "left"),)),
        "color": Scene("black", (ShapeObject("orange", "circle", "large", "left"),)),
        "shape": Scene("black", (ShapeObject("red", "square", "large", "left"),)),
        "motion": Scene("black", (ShapeObject("red", "circle", "large", "right"),)),
    }
    for wrong, scene in asked.items():
        result = analyze(video, scene)
        assert result[wrong] is False and result["all"] is False
        assert all(result[a] is True for a in ("background", "color", "shape", "motion") if a != wrong)
    result = analyze(video, asked["background"])
    assert result["predicted"]["background"] == "black"
    # A flat frame has no object: colour, shape and motion all fail.
    empty = analyze(np.full((9, 64, 64, 3), 16, np.uint8), asked["color"])
    assert empty["background"] is True
    assert empty["color"] is False and empty["shape"] is False and empty["motion"] is False and empty["all"] is False


def test_two_object_scenes_are_analysed_per_colour():
    scene = Scene("navy", (ShapeObject("yellow", "triangle", "medium", "up"), ShapeObject("pink", "circle", "small", "growing")))
    video = render(scene, 96, 96, 17)
    result = analyze(video, scene)
    assert result["all"] is True
    assert result["predicted"]["objects"] == [
        {"color": "yellow", "shape": "triangle", "motion": "up"},
        {"color": "pink", "shape": "circle", "motion": "growing"},
    ]
    swapped = Scene("navy", (ShapeObject("yellow", "circle", "medium", "up"), ShapeObject("pink", "circle", "small", "down")))
    result = analyze(video, swapped)
    assert [o["shape"] for o in result["objects"]] == [False, True]
    assert [o["motion"] for o in result["objects"]] == [True, False]
    assert result["shape"] is False and result["motion"] is False and result["color"] is True
    # Only one of the two named objects is in the clip.
    alone = render(Scene("navy", (ShapeObject("yellow", "triangle", "medium", "up"),)), 96, 96, 17)
    result = analyze(alone, scene)
    assert result["objects"][0]["color"] is True and result["objects"][1]["color"] is False and result["all"] is False


def test_a_still_image_checks_motion_only_as_still():
    moving = Scene("white", (ShapeObject("green", "square", "medium", "left"),))
    result = analyze(render(moving, 64, 64, 1), moving)
    assert result["motion"] is None and result["all"] is True
    still = Scene("white", (ShapeObject("green", "square", "medium", "still"),))
    assert analyze(render(still, 64, 64, 1), still)["motion"] is True
    assert summarize([result])["motion"] is None


def test_unnamed_background_is_not_scored():
    scene = parse_prompt("a purple ball bouncing")
    assert scene.background is None
    result = analyze(render(Scene("gray", scene.objects), 64, 64, 17), scene)
    assert result["background"] is None and result["all"] is True


def test_analyze_refuses_what_is_not_a_video():
    scene = Scene("black", (ShapeObject("red", "circle"),))
    for bad in (np.zeros((64, 64, 3), np.uint8), np.zeros((9, 64, 64, 3), np.float32), np.zeros((9, 64, 64, 4), np.uint8)):
        with pytest.raises(ValueError, match="uint8"):
            analyze(bad, scene)


def test_flicker_measures_background_noise():
    scene = Scene("gray", (ShapeObject("red", "square", "medium", "still"),))
    video = render(scene, 64, 64, 9).astype(int)
    noise = np.random.default_rng(0).integers(-4, 5, video.shape)
    noisy = np.clip(video + noise, 0, 255).astype(np.uint8)
    flicker = analyze(noisy, scene)["flicker"]
    assert 2.0 < flicker < 4.0  # mean |a - b| of two independent uniform draws from -4..4 is about 3
    assert analyze(render(scene, 64, 64, 9), scene)["flicker"] == 0.0


def bfs_largest(frame):
    """Reference: breadth-first search for the largest 4-connected component."""
    height, width = frame.shape
    seen = np.zeros_like(frame)
    best = []
    for start in zip(*np.nonzero(frame)):
        if seen[start]:
            continue
        seen[start] = True
        queue, component = deque([start]), []
        while queue:
            y, x = queue.popleft()
            component.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and frame[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(component) > len(best):
            best = component
    out = np.zeros_like(frame)
    for point in best:
        out[point] = True
    return out


def test_largest_blobs_matches_a_breadth_first_search():
    rng = np.random.default_rng(0)
    for density in (0.3, 0.55, 0.7):
        masks = rng.random((6, 40, 50)) < density
        masks[2] = False  # an empty frame
        blobs = largest_blobs(masks)
        for frame, blob in zip(masks, blobs):
            expected = bfs_largest(frame)
            # Ties between equal-sized components may pick either; sizes must agree and the blob be one of them.
            assert blob.sum() == expected.sum()
            assert not (blob & ~frame).any()
            assert np.array_equal(largest_blobs(blob[None])[0], blob)  # connected


def test_heldout_cases_are_fixed_unseen_and_cover_sizes_and_durations():
    cases, pairs = heldout_cases(), heldout_pair_cases()
    assert len(cases) == 48 and len(pairs) == 12
    assert cases == heldout_cases() and pairs == heldout_pair_cases()
    assert len({c.id for c in cases + pairs}) == 60
    assert all(isinstance(c, EvalCase) for c in cases + pairs)
    for case in cases + pairs:
        for obj in case.scene.objects:
            assert (*obj.combo, case.scene.background) in HELDOUT_COMBOS
        assert case.scene.follows_rules()
        # The prompt means the scene (by the tolerant parser).
        assert parse_prompt(case.prompt) == case.scene, case.prompt
    assert {(c.width, c.height) for c in cases} == set(CANVASES)
    assert {c.frames for c in cases} == {9, 17, 33}
    assert {(c.width, c.height, c.frames) for c in cases} == {(w, h, t) for w, h in CANVASES for t in (9, 17, 33)}
    assert {c.scene.objects[0].motion for c in cases} == set(MOTIONS)
    assert {c.scene.objects[0].size for c in cases} == {"small", "medium", "large"}
    assert all(len(c.scene.objects) == 2 for c in pairs)
    # Rendered ground truth of every case passes the analyzer.
    for case in cases + pairs:
        result = analyze(render(case.scene, case.width, case.height, case.frames), case.scene)
        assert result["all"] is True, case.id


def test_heldout_prompts_use_templates_the_generator_never_does():
    markers = [r"\bthere is\b", r"\bvideo of\b", r"\bshow me\b", r"\bscreen\b", r"\banimation of\b", r"\bkeeps\b",
               r"\bcolored\b", r"\bin front of\b", r"\bplain\b", r"\bsolid\b", r"\btwo shapes\b", r"\bwhile\b",
               r"\bholds\b", r"\bthe background in\b", r"\btravelling\b", r"\bgoing\b", r"background\. \w"]
    for case in heldout_cases() + heldout_pair_cases():
        assert any(re.search(m, case.prompt.lower()) for m in markers), case.prompt
    rng = np.random.default_rng(3)
    for _ in range(3000):
        text = caption(sample_scene(rng, 0.3, exclude_heldout=False), rng).lower()
        assert not any(re.search(m, text) for m in markers), text


def test_summarize_counts_only_checkable_results():
    results = [
        {"background": True, "color": True, "shape": False, "motion": None, "all": False, "flicker": 1.0},
        {"background": None, "color": True, "shape": True, "motion": True, "all": True, "flicker": None},
    ]
    summary = summarize(results)
    assert summary == {"count": 2, "background": 1.0, "color": 1.0, "shape": 0.5, "motion": 1.0, "all": 0.5, "flicker": 1.0}


def test_by_asked_value_says_which_values_fail_and_as_what():
    circle_left = ShapeObject("red", "circle", "large", "left")
    video = render(Scene("black", (circle_left,)), 112, 64, 17)
    still = render(Scene("black", (circle_left,)), 112, 64, 1)
    scenes = [
        Scene("black", (circle_left,)),  # right in every attribute
        Scene("black", (ShapeObject("red", "square", "large", "left"),)),  # a square asked, a circle drawn
        Scene("black", (ShapeObject("red", "square", "large", "right"),)),  # and moving the other way
        Scene("black", (ShapeObject("red", "square", "large", "right"),)),  # a still image: motion not checkable
    ]
    results = [analyze(v, scene) for v, scene in zip([video, video, video, still], scenes)]
    table = by_asked_value(scenes, results)
    assert table["shape"] == {
        "circle": {"count": 1, "right": 1, "read_as": {}},
        "square": {"count": 3, "right": 0, "read_as": {"circle": 3}},
    }
    assert table["motion"] == {
        "left": {"count": 2, "right": 2, "read_as": {}},
        "right": {"count": 1, "right": 0, "read_as": {"left": 1}},
    }
    assert table["color"] == {"red": {"count": 4, "right": 4, "read_as": {}}}
    # An object the analyzer finds nothing of is read as "none".
    empty = np.full((9, 64, 64, 3), 16, np.uint8)
    table = by_asked_value(scenes[:1], [analyze(empty, scenes[0])])
    assert table["shape"] == {"circle": {"count": 1, "right": 0, "read_as": {"none": 1}}}


def test_batches_pack_cases_within_a_budget():
    cases = [EvalCase(str(i), "p", None, 64, 64, frames, 0) for i, frames in enumerate((33, 33, 9, 17, 33))]
    batches = _batches(cases, 64 * 64 * 50)
    assert [[c.id for c in b] for b in batches] == [["0"], ["1", "2"], ["3", "4"]]
    assert [c for b in batches for c in b] == cases
    assert _batches(cases[:1], 1) == [cases[:1]]  # a case larger than the budget still runs


def test_reel_eval_runs_a_model_and_writes_its_report(tmp_path, capsys):
    from app.cli import main

    out = tmp_path / "report"
    assert main(["eval", "--model", "tiny", "--limit", "2", "--steps", "2", "--sampler", "heun", "--guidance", "2.5",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "single" in printed and "background" in printed and "flicker" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 2 and report["sampler"] == "heun" and report["config"] == "tiny"
    assert report["guidance"] == 2.5
    assert [c["id"] for c in report["cases"]] == [c.id for c in heldout_cases()[:2]]
    results = [c["result"] for c in report["cases"]]
    assert report["summary"]["single"] == summarize(results)
    scenes = [heldout_cases()[i].scene for i in range(2)]
    assert report["by_asked_value"] == by_asked_value(scenes, results)
    assert "shape" in printed and "motion" in printed.split("flicker")[-1]
    for case in report["cases"]:
        assert set(case["result"]) >= {"background", "color", "shape", "motion", "all", "predicted", "flicker"}
    grid = Image.open(out / "frames.png")
    assert grid.width == 4 * 130 and grid.height == 2 * (130 + 12)


def test_seen_cases_are_the_clips_and_captions_a_run_trains_on():
    from model.train import LatentPool, pool_clip
    from model.vae import CausalVAE

    config = preset("tiny")
    cases = seen_cases(config, count=20)
    pool = LatentPool(CausalVAE(config.vae).eval(), config, 0, 100, None, "cpu")
    indices = [int(case.id.split("-")[1]) for case in cases]
    for index, case in zip(indices, cases):
        latent, _, text = pool.get(index, 0)
        assert text == case.prompt
        assert case.scene.objects == pool.scenes[index].objects and len(case.scene.objects) == 1
        sf, tf = config.vae.spatial_factor, config.vae.temporal_factor
        assert latent.shape[1:] == (1 + (case.frames - 1) // tf, case.height // sf, case.width // sf)
        # An unnamed background is not scored; a named one is the clip's.
        named = parse_prompt(case.prompt).background
        assert case.scene.background == (pool.scenes[index].background if named else None)
    assert {case.scene.background is None for case in cases} == {True, False}
    # Only two-object scenes and stills are passed over.
    for index in set(range(indices[-1])) - set(indices):
        scene, (_, _, frames) = pool_clip(config, 0, index)
        assert len(scene.objects) == 2 or frames == 1


def test_reel_eval_can_score_clips_the_model_trained_on(tmp_path, capsys):
    from app.cli import main

    out = tmp_path / "seen"
    assert main(["eval", "--model", "tiny", "--seen", "--limit", "2", "--steps", "2", "--out", str(out)]) == 0
    assert "seen" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert [c["id"] for c in report["cases"]] == [c.id for c in seen_cases(preset("tiny"))[:2]]
    assert set(report["summary"]) == {"seen"}


def test_reel_eval_can_score_the_autoencoder_alone(tmp_path, capsys):
    from app.cli import main

    out = tmp_path / "ceiling"
    assert main(["eval", "--model", "tiny", "--limit", "2", "--autoencoder", "--out", str(out)]) == 0
    assert "round trip" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["autoencoder_only"] is True
    # Four-step random-weight models make noise, never the true render: the round trip must not be skipped.
    assert report["summary"]["single"]["all"] == 0.0


def test_reel_eval_names_a_model_it_cannot_load(tmp_path, capsys):
    from app.cli import main

    assert main(["eval", "--model", str(tmp_path / "no-such-model")]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny", "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny", "--limit", "1", "--guidance", "-1"]) == 2
    assert "guidance must be" in capsys.readouterr().err
