"""`reel generate`, run as a real subprocess with the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def reel(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)


def probe(path) -> tuple[str, str, int, int, int, np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec, pix_fmt, rate = stream.codec_context.name, stream.codec_context.pix_fmt, stream.average_rate
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return codec, pix_fmt, int(rate), frames.shape[2], frames.shape[1], frames


def test_one_prompt_to_an_mp4(tmp_path):
    out = tmp_path / "circle.mp4"
    result = reel("generate", "a red circle moving right", "-o", str(out), "--model", "tiny", "--size", "112x64",
                  "--seconds", "1", "--steps", "3", "--seed", "5", "--guidance", "3.5", "--negative", "blurry")
    assert result.returncode == 0, result.stderr
    codec, pix_fmt, rate, width, height, frames = probe(out)
    assert (codec, pix_fmt, rate, width, height) == ("h264", "yuv420p", 8, 112, 64)
    assert len(frames) == 1 + 8 * 1
    assert str(out) in result.stdout
    assert "3/3" in result.stderr  # the progress bar reached the last step


def test_seconds_zero_is_a_still_image(tmp_path):
    out = tmp_path / "still.mp4"
    result = reel("generate", "a blue square", "-o", str(out), "--model", "tiny", "--seconds", "0", "--steps", "2")
    assert result.returncode == 0, result.stderr
    *_, width, height, frames = probe(out)
    assert frames.shape == (1, 64, 64, 3)


def test_batch_writes_one_mp4_per_case(tmp_path):
    cases = [
        {"id": "a", "prompt": "a red circle moving left", "size": "64x64", "seconds": 2, "seed": 1, "steps": 2},
        {"id": "b", "prompt": "a green triangle growing", "size": "112x64", "seconds": 1, "seed": 2, "steps": 2,
         "guidance": 2.0},
        {"id": "c", "prompt": "a yellow square", "size": "64x112", "seconds": 0, "seed": 3, "steps": 3},
    ]
    batch = tmp_path / "cases.jsonl"
    batch.write_text("\n".join(json.dumps(case) for case in cases) + "\n")
    out_dir = tmp_path / "out"
    result = reel("generate", "--batch", str(batch), "--out-dir", str(out_dir), "--model", "tiny")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]
    expected = {"a": (64, 64, 17), "b": (112, 64, 9), "c": (64, 112, 1)}
    for case_id, (width, height, count) in expected.items():
        codec, pix_fmt, rate, w, h, frames = probe(out_dir / f"{case_id}.mp4")
        assert (codec, pix_fmt, rate, w, h, len(frames)) == ("h264", "yuv420p", 8, width, height, count)
    # Steps over both pipeline calls (2 for a and b together, 3 for c).
    assert "5/5" in result.stderr

    # A case comes out the same alone as packed with others.
    alone = tmp_path / "a-alone.mp4"
    result = reel("generate", "a red circle moving left", "-o", str(alone), "--model", "tiny", "--size", "64x64",
                  "--seconds", "2", "--seed", "1", "--steps", "2")
    assert result.returncode == 0, result.stderr
    packed, single = probe(out_dir / "a.mp4")[-1], probe(alone)[-1]
    assert np.abs(packed.astype(np.int16) - single.astype(np.int16)).mean() < 1.0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--size", "65x64"], "width must be a multiple of 16"),
        (["--size", "256x64"], "width must be at most 128"),
        (["--size", "big"], "size must look like WxH"),
        (["--seconds", "-1"], "seconds must be at least 0"),
        (["--seconds", "9"], "seconds must be at most 4 for this model"),
    ],
)
def test_bad_arguments_are_named(tmp_path, args, message):
    result = reel("generate", "a red circle", "-o", str(tmp_path / "x.mp4"), "--model", "tiny", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_bad_batch_line_is_named(tmp_path):
    batch = tmp_path / "cases.jsonl"
    batch.write_text('{"id": "a", "prompt": "a red circle"}\n{"id": "b", "prompt": \n')
    result = reel("generate", "--batch", str(batch), "--out-dir", str(tmp_path / "out"), "--model", "tiny")
    assert result.returncode == 2
    assert "cases.jsonl line 2: not valid JSON" in result.stderr
    assert not (tmp_path / "out" / "a.mp4").exists()


def test_missing_prompt_and_unknown_model_are_named(tmp_path):
    result = reel("generate", "-o", str(tmp_path / "x.mp4"), "--model", "tiny")
    assert result.returncode == 2 and "a prompt is required" in result.stderr
    result = reel("generate", "a circle", "-o", str(tmp_path / "x.mp4"), "--model", "no-such-model")
    assert result.returncode == 2 and "no-such-model" in result.stderr
