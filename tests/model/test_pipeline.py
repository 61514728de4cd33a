"""TextToVideo with the tiny preset: packing of requests, determinism, guidance, validation, checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import TextToVideo, VideoSpec
from model.pipeline import WEIGHTS_DIR, to_uint8


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter (the zero-initialised ones too) gets small random values, so outputs depend on everything."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return module


@pytest.fixture(scope="module")
def pipe():
    # An untrained DiT predicts zero velocity (its output layer starts at zero), which would
    # make every video decoded noise; random weights everywhere make the outputs depend on
    # the prompt, the guidance and the packing.
    pipe = TextToVideo.from_preset("tiny", seed=0)
    randomize(pipe.dit, seed=1)
    return pipe


class ForwardLog:
    """Records the number of rows (packed samples) of every DiT forward pass."""

    def __init__(self, pipe):
        self.rows = []
        self.handle = pipe.dit.register_forward_pre_hook(lambda module, args: self.rows.append(len(args[0])))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_generates_uint8_videos_of_the_requested_shape(pipe):
    video, still = pipe.generate([VideoSpec("a red circle moving left"), VideoSpec("a blue square", frames=1)])
    assert video.dtype == np.uint8 and video.shape == (17, 64, 64, 3)
    assert still.shape == (1, 64, 64, 3)
    assert video.std() > 1  # not a flat image


def test_specs_of_different_shapes_share_one_forward_pass_per_step(pipe):
    specs = [
        VideoSpec("a red circle", width=64, height=64, frames=17, steps=3),
        VideoSpec("a green square", width=112, height=64, frames=9, steps=3, seed=5),
        VideoSpec("a blue triangle", width=64, height=112, frames=1, steps=3, guidance=2.0),
    ]
    with ForwardLog(pipe) as log:
        videos = pipe.generate(specs, sampler="euler")
    assert [v.shape for v in videos] == [(17, 64, 64, 3), (9, 64, 112, 3), (1, 112, 64, 3)]
    assert log.rows == [6, 6, 6]  # three steps, each one pass with 3 conditional + 3 unconditional rows


def test_a_spec_gives_the_same_video_alone_and_beside_others(pipe):
    spec = VideoSpec("a yellow circle moving right", seed=11, steps=3)
    neighbours = [
        VideoSpec("a purple square growing", width=96, height=96, frames=9, seed=3, steps=3, guidance=7.0),
        VideoSpec("a white triangle", width=112, height=64, frames=1, seed=11, steps=3),
    ]
    alone = pipe.sample_latents([spec])[0]
    beside = pipe.sample_latents([neighbours[0], spec, neighbours[1]])[1]
    # Same noise, schedule and text; only float32 summation order differs in a bigger pack.
    assert (alone - beside).abs().max().item() < 1e-4
    frames_alone, frames_beside = pipe.decode([alone])[0], pipe.decode([beside])[0]
    assert (frames_alone - frames_beside).abs().max().item() < 1e-4
    pixels_alone = pipe.generate([spec])[0]
    pixels_beside = pipe.generate([neighbours[0], spec, neighbours[1]])[1]
    assert np.array_equal(pixels_alone, to_uint8(frames_alone))
    # Pixels are equal, except where the value lies within that 1e-4 of a rounding
    # boundary (a handful of the 208,896 values), and there by one level only.
    differ = pixels_alone != pixels_beside
    assert differ.mean() < 1e-3
    assert np.abs(pixels_alone.astype(int) - pixels_beside.astype(int)).max() <= 1
    levels = ((frames_alone.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 3, 0).numpy()
    assert (np.abs(levels[differ] - np.floor(levels[differ]) - 0.5) < 1e-2).all()


def test_same_spec_same_video_and_seed_prompt_guidance_matter(pipe):
    spec = VideoSpec("an orange circle bouncing", seed=2, steps=2)
    first, second = pipe.generate([spec]), pipe.generate([spec])
    assert np.array_equal(first[0], second[0])
    for other in (
        VideoSpec("an orange circle bouncing", seed=3, steps=2),
        VideoSpec("a black square shrinking", seed=2, steps=2),
        VideoSpec("an orange circle bouncing", seed=2, steps=2, guidance=1.5),
    ):
        assert not np.array_equal(pipe.generate([other])[0], first[0])


def test_negative_prompt_replaces_the_empty_unconditional_text(pipe):
    plain = VideoSpec("a red square", seed=4, steps=2, guidance=4.0)
    negative = VideoSpec("a red square", negative_prompt="a blue circle", seed=4, steps=2, guidance=4.0)
    assert not np.array_equal(pipe.generate([plain])[0], pipe.generate([negative])[0])
    # Without guidance there is no unconditional row, so the negative prompt plays no part.
    with ForwardLog(pipe) as log:
        a = pipe.generate([VideoSpec("a red square", seed=4, steps=2, guidance=1.0)])[0]
        b = pipe.generate([VideoSpec("a red square", negative_prompt="a blue circle", seed=4, steps=2, guidance=1.0)])[0]
    assert log.rows == [1, 1, 1, 1]
    assert np.array_equal(a, b)


def test_mixed_step_counts_run_as_groups_with_total_progress(pipe):
    specs = [VideoSpec("a circle", steps=2, seed=1), VideoSpec("a square", steps=3, seed=2), VideoSpec("a dot", steps=2, seed=3)]
    progress = []
    with ForwardLog(pipe) as log:
        videos = pipe.generate(specs, on_step=lambda i, n: progress.append((i, n)))
    assert progress == [(i, 5) for i in range(1, 6)]
    assert log.rows == [4, 4, 2, 2, 2]  # the two 2-step specs together, then the 3-step one
    assert np.array_equal(videos[1], pipe.generate([specs[1]])[0])


def test_heun_sampler_and_on_step_at_every_step(pipe):
    progress = []
    with ForwardLog(pipe) as log:
        pipe.generate([VideoSpec("a circle", steps=3)], on_step=lambda i, n: progress.append((i, n)), sampler="heun")
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert len(log.rows) == 5  # two evaluations per step, one on the last


def test_an_exception_from_on_step_cancels_generation(pipe):
    class Cancelled(Exception):
        pass

    def on_step(i, n):
        if i == 2:
            raise Cancelled("job cancelled")

    with ForwardLog(pipe) as log, pytest.raises(Cancelled):
        pipe.generate([VideoSpec("a circle", steps=6)], on_step=on_step)
    assert len(log.rows) == 2


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"width": 70}, "width"),
        ({"width": 0}, "width"),
        ({"height": 256}, "height"),  # beyond the model's max_side (128)
        ({"height": 64.0}, "height"),
        ({"frames": 16}, "frames"),
        ({"frames": 0}, "frames"),
        ({"frames": 41}, "frames"),  # longer than the longest duration (4 s at 8 fps: 33 frames)
        ({"steps": 0}, "steps"),
        ({"guidance": -1.0}, "guidance"),
        ({"seed": -1}, "seed"),
        ({"prompt": None}, "prompt"),
    ],
)
def test_invalid_specs_raise_value_errors_naming_the_field(pipe, changes, field):
    spec = VideoSpec(**{"prompt": "a circle", **changes})
    with ForwardLog(pipe) as log, pytest.raises(ValueError, match=field):
        pipe.generate([VideoSpec("a valid one"), spec])
    assert log.rows == []  # checked before any work


def test_save_and_load_a_checkpoint(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "dit.safetensors", "vae.safetensors"]
    loaded = TextToVideo.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == pipe.config
    spec = VideoSpec("a green triangle moving up", seed=9, steps=2)
    assert np.array_equal(loaded.generate([spec])[0], pipe.generate([spec])[0])
    assert TextToVideo.load(str(tmp_path / "ckpt")).config == pipe.config
    # A config.json the sampler would refuse is refused when it loads, naming the file and the field.
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["flow"]["sampler"] = "ddim"
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"ckpt/config.json: flow.sampler must be one of euler, heun, got 'ddim'"):
        TextToVideo.from_pretrained(tmp_path / "ckpt")


def test_load_resolves_presets_bundled_names_and_explains_what_is_missing(tmp_path):
    assert WEIGHTS_DIR == Path(__file__).resolve().parents[2] / "weights"
    tiny = TextToVideo.load("tiny")
    assert tiny.config.name == "tiny"
    assert all(p.dtype == torch.float32 for p in tiny.dit.parameters())
    assert tiny.device == torch.device("cpu")
    with pytest.raises(FileNotFoundError, match="no-such-model") as error:
        TextToVideo.load("no-such-model")
    assert str(WEIGHTS_DIR) in str(error.value)
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextToVideo.from_pretrained(tmp_path)
    if not (WEIGHTS_DIR / "reel-shapes-v1").is_dir():
        with pytest.raises(FileNotFoundError, match="reel-shapes-v1"):
            TextToVideo.load("reel-shapes-v1")
    else:
        assert TextToVideo.load("reel-shapes-v1").config.dit.latent_channels > 0


def test_presets_are_seeded():
    a, b, c = (TextToVideo.from_preset("tiny", seed=s) for s in (0, 0, 1))
    for (name, x), y, z in zip(a.vae.state_dict().items(), b.vae.state_dict().values(), c.vae.state_dict().values()):
        assert torch.equal(x, y), name
    assert any(not torch.equal(x, z) for x, z in zip(a.dit.parameters(), c.dit.parameters()))


def test_the_device_is_an_argument_and_bf16_autocast_is_for_cuda_only(pipe, tmp_path):
    assert pipe.device == torch.device("cpu")
    with pipe._autocast():  # on the CPU: no autocast at all (bf16 is hundreds of times slower here)
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    if torch.cuda.is_available():
        assert TextToVideo.from_preset("tiny", device="cuda").device.type == "cuda"
    else:
        pipe.save_pretrained(tmp_path / "model")
        for make in (lambda: TextToVideo.from_preset("tiny", device="cuda"),
                     lambda: TextToVideo.from_pretrained(tmp_path / "model", device="cuda:0")):
            with pytest.raises(ValueError, match="no CUDA GPU"):
                make()


def test_a_model_that_predicts_the_clean_latent_samples_with_the_velocity_it_implies(pipe):
    import dataclasses

    from model.flow import make_noise

    config = dataclasses.replace(pipe.config, flow=dataclasses.replace(pipe.config.flow, prediction="data"))
    data_pipe = TextToVideo(config, pipe.vae, pipe.dit, pipe.text)
    spec = VideoSpec("a red circle moving left", frames=9, seed=3, steps=1, guidance=1.0)
    # One Euler step from t = 1 to 0 lands on what the network predicts from the noise: x1 - (x1 - x0) = x0.
    (latent,) = data_pipe.sample_latents([spec], sampler="euler")
    noise = make_noise(data_pipe.latent_shape(spec), spec.seed)
    states, mask = pipe.text.encode([spec.prompt])
    with torch.inference_mode():
        (predicted,) = pipe.dit([noise], torch.ones(1), states, mask)
    assert torch.allclose(latent, predicted, atol=1e-5)
    # The same weights read as a velocity land elsewhere.
    (as_velocity,) = pipe.sample_latents([spec], sampler="euler")
    assert not torch.allclose(as_velocity, predicted, atol=1e-2)
