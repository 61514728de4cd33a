"""The bundled default model, reel-shapes-v1: it ships in the repository, loads by name, and runs."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model import TextToVideo, VideoSpec

WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "reel-shapes-v1"


@pytest.fixture(scope="module")
def pipeline():
    return TextToVideo.load("reel-shapes-v1")


def test_the_weights_ship_within_their_budget():
    files = {p.name for p in WEIGHTS.iterdir()}
    assert {"config.json", "vae.safetensors", "dit.safetensors"} <= files
    assert sum(p.stat().st_size for p in WEIGHTS.iterdir()) <= 50 * 2**20


def test_it_loads_by_name_as_the_shapes_s_preset(pipeline):
    assert pipeline.config.name == "shapes-s"
    assert pipeline.config.vae.latent_channels == 8 and pipeline.config.fps == 8


def test_it_makes_the_asked_shapes_and_frame_counts_deterministically(pipeline):
    specs = [
        VideoSpec("a red circle moving left on a black background", width=64, height=64, frames=9, seed=3, steps=4),
        VideoSpec("a small blue square on a white backdrop", width=112, height=64, frames=1, seed=4, steps=4),
        VideoSpec("a green triangle bouncing", width=64, height=112, frames=17, seed=5, steps=4),
    ]
    videos = pipeline.generate(specs)
    assert [v.shape for v in videos] == [(9, 64, 64, 3), (1, 64, 112, 3), (17, 112, 64, 3)]
    assert all(v.dtype == np.uint8 for v in videos)
    (again,) = pipeline.generate([specs[0]])
    assert np.array_equal(again, videos[0])
    (other_seed,) = pipeline.generate([dataclasses.replace(specs[0], seed=99)])
    assert not np.array_equal(other_seed, videos[0])
