"""The word probe (model/probe.py): its prompts, its paired loss gaps, and `reel eval --words`."""

import json

import pytest
import torch

from model import TextToVideo
from model.data import parse_prompt
from model.data.shapes import render
from model.flow import make_noise
from model.probe import (ATTRIBUTES, CLIP, LOSS_TIMESTEPS, NOISE_DRAWS, TIMESTEPS, denoising_loss, probe_prompt,
                         probe_scenes, scene_latent, word_sensitivity, wrong_prompts)
from model.train import video_to_tensor


def differing_attributes(scene, other):
    a, b = scene.objects[0], other.objects[0]
    named = {"background": (scene.background, other.background)}
    named |= {field: (getattr(a, field), getattr(b, field)) for field in ("color", "shape", "motion", "size")}
    return {field for field, (x, y) in named.items() if x != y}


def test_wrong_prompts_differ_from_the_true_one_in_their_attribute_only():
    for scene in probe_scenes(40):
        assert len(scene.objects) == 1
        truth = parse_prompt(probe_prompt(scene))
        assert differing_attributes(scene, truth) == set()
        for attribute in ATTRIBUTES:
            wrong = wrong_prompts(scene, attribute)
            named = [parse_prompt(p).background if attribute == "background"
                     else getattr(parse_prompt(p).objects[0], attribute) for p in wrong]
            assert all(differing_attributes(scene, parse_prompt(p)) == {attribute} for p in wrong)
            assert len(set(named)) == len(named)  # each wrong value once
            # Every other value, except white as the background of a white object or the colour of one on white.
            clash = (attribute == "color" and scene.background == "white") or (
                attribute == "background" and scene.objects[0].color == "white")
            assert len(wrong) == {"background": 3, "color": 8, "shape": 2, "motion": 7}[attribute] - clash


def test_a_model_that_ignores_the_text_shows_no_gap_and_one_that_reads_it_does():
    untrained = TextToVideo.from_preset("tiny", seed=0)  # zero output layer: the same velocity for every prompt
    scenes = probe_scenes(2)
    result = word_sensitivity(untrained, scenes)
    assert set(result) == set(ATTRIBUTES)
    # (Equal predictions; the per-row means may round differently by a few ulps.)
    assert all(abs(result[a][str(t)]["gap"]) < 1e-6 for a in ATTRIBUTES for t in TIMESTEPS)

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in untrained.dit.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    reading = word_sensitivity(untrained, scenes)
    assert all(abs(reading[a][str(t)]["gap"]) > 1e-4 for a in ATTRIBUTES for t in TIMESTEPS)
    assert word_sensitivity(untrained, scenes) == reading  # paired noise: the same numbers every time


def test_denoising_loss_is_the_velocity_loss_per_timestep():
    untrained = TextToVideo.from_preset("tiny", seed=0)  # zero output layer: it predicts a velocity of 0
    scenes = probe_scenes(2)
    loss = denoising_loss(untrained, scenes)
    assert list(loss) == [str(t) for t in LOSS_TIMESTEPS]
    # A zero prediction misses the whole target, noise - clean, whatever the timestep.
    expected = []
    for n, scene in enumerate(scenes):
        with torch.no_grad():
            latent = untrained.vae.encode(video_to_tensor(render(scene, *CLIP))[None])[0]
        expected += [float(((make_noise(latent.shape, 1000 * n + draw) - latent) ** 2).mean()) for draw in range(NOISE_DRAWS)]
    assert all(value == pytest.approx(sum(expected) / len(expected), rel=1e-5) for value in loss.values())

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in untrained.dit.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    predicting = denoising_loss(untrained, scenes)
    assert len({round(value, 6) for value in predicting.values()}) == len(LOSS_TIMESTEPS)
    assert denoising_loss(untrained, scenes) == predicting  # the same noise every time
    with torch.no_grad():
        latents = [scene_latent(untrained, scene) for scene in scenes]
    assert denoising_loss(untrained, scenes, latents=latents) == predicting  # latents made once serve both probes
    assert word_sensitivity(untrained, scenes, latents=latents) == word_sensitivity(untrained, scenes)


def test_reel_eval_words_prints_the_table_and_writes_the_gaps(tmp_path, capsys):
    from app.cli import main

    out = tmp_path / "words"
    assert main(["eval", "--model", "tiny", "--words", "--limit", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(attribute in printed for attribute in ATTRIBUTES) and "2 scenes" in printed
    report = json.loads((out / "words.json").read_text())
    assert report["scenes"] == 2 and set(report["gaps"]) == set(ATTRIBUTES)
    assert abs(report["gaps"]["motion"]["0.95"]["gap"]) < 1e-6  # the untrained tiny model ignores its text
    assert list(report["loss"]) == [str(t) for t in LOSS_TIMESTEPS] and "velocity loss with the true prompt" in printed


@pytest.mark.parametrize("attribute", ["color", "background"])
def test_an_object_is_never_named_the_colour_of_its_background(attribute):
    scene = next(s for s in probe_scenes(200) if s.objects[0].color == "white")
    wrong = [parse_prompt(p) for p in wrong_prompts(scene, attribute)]
    assert wrong and all(s.background != s.objects[0].color for s in wrong)


@pytest.mark.parametrize("option", [["--steps", "4"], ["--sampler", "heun"], ["--guidance", "2"], ["--autoencoder"], ["--seen"]])
def test_reel_eval_words_refuses_the_sampling_options_it_would_ignore(option, capsys):
    from app.cli import main

    assert main(["eval", "--model", "tiny", "--words", *option]) == 2
    assert f"--words samples nothing, so it takes no {option[0]}" in capsys.readouterr().err
