"""Which words steer the transformer: the denoising loss a wrong word costs.

A sampled video can only score an attribute once the model can draw it, so `reel
eval` cannot tell a model that ignores a word from one that heeds it but draws
badly. This probe asks the earlier question, on the training objective itself
(model/flow.py): for true renders of Shapes scenes, how much worse does the
transformer predict the velocity when the prompt names one attribute wrongly?

A model that has learned an attribute's words predicts worse when they lie, so the
gap is positive, and largest at the noisy end, where the text is most of what the
model has to go on. A gap near zero means the words are ignored. Every prompt of a
scene is scored on the same noise at the same timestep (a paired difference), and
the prompts use the caption generator's own words (its first synonym of each) in
one of its templates, so only the attribute's words differ.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from model.data.captions import BACKGROUND_WORDS, COLOR_WORDS, MOTION_WORDS, SHAPE_WORDS, SIZE_WORDS
from model.data.shapes import BACKGROUNDS, COLORS, MOTIONS, SHAPES, Scene, render, sample_scene
from model.flow import make_noise, to_velocity
from model.train import rng_for, video_to_tensor

ATTRIBUTES = ("background", "color", "shape", "motion")
TIMESTEPS = (0.3, 0.6, 0.8, 0.95)  # from mostly picture to mostly noise
CLIP = (64, 64, 17)  # width, height, frames of the renders the probe scores
NOISE_DRAWS = 2  # noise samples per scene and timestep
LOSS_TIMESTEPS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)  # denoising_loss: where edges settle, and where layout does


def probe_prompt(scene: Scene) -> str:
    """One of the caption generator's templates, with its first synonym of every word."""
    obj = scene.objects[0]
    words = ([SIZE_WORDS[obj.size][0]] if obj.size in SIZE_WORDS else []) + [COLOR_WORDS[obj.color][0], SHAPE_WORDS[obj.shape][0]]
    return f"a {' '.join(words)} {MOTION_WORDS[obj.motion][0]} on a {BACKGROUND_WORDS[scene.background][0]} background"


def wrong_prompts(scene: Scene, attribute: str) -> list[str]:
    """The scene's prompt with `attribute` named as each other value it can take."""
    obj = scene.objects[0]
    if attribute == "background":
        return [probe_prompt(Scene(b, scene.objects)) for b in BACKGROUNDS if b not in (scene.background, obj.color)]
    values = {"color": COLORS, "shape": SHAPES, "motion": MOTIONS}[attribute]
    others = [v for v in values if v != getattr(obj, attribute) and not (attribute == "color" and v == scene.background)]
    return [probe_prompt(Scene(scene.background, (dataclasses.replace(obj, **{attribute: v}),))) for v in others]


def probe_scenes(count: int, seed: int = 0) -> list[Scene]:
    """Single-object scenes drawn like training scenes (held-out combinations excluded)."""
    return [sample_scene(rng_for(seed, 11, i), two_objects_prob=0.0) for i in range(count)]


def scene_latent(pipeline, scene: Scene) -> torch.Tensor:
    """The autoencoder's latent of the scene's true render at the probe's size."""
    # -> (C, t, h, w)
    return pipeline.vae.encode(video_to_tensor(render(scene, *CLIP))[None].to(pipeline.device))[0]


def velocity_losses(pipeline, latent: torch.Tensor, states, mask, t: float, scene_index: int) -> torch.Tensor:
    """The training loss (model/flow.py) per prompt, at timestep t, averaged over the scene's noise draws:
    every prompt is one row of a single forward pass over the same noisy latent."""
    # states: (rows, tokens, width) -> (rows,)
    rows = states.shape[0]
    losses = torch.zeros(rows)
    for draw in range(NOISE_DRAWS):
        noise = make_noise(latent.shape, 1000 * scene_index + draw, pipeline.device)
        noisy = [(1 - t) * latent + t * noise] * rows
        times = torch.full((rows,), t, device=pipeline.device)
        predicted = to_velocity(pipeline.dit(noisy, times, states, mask), noisy, times, pipeline.config.flow)
        losses += torch.stack([((v - (noise - latent)) ** 2).mean() for v in predicted]).cpu()
    return losses / NOISE_DRAWS


def word_sensitivity(pipeline, scenes: list[Scene], progress=None, latents=None) -> dict:
    """Per attribute and timestep: the mean loss gap (wrong prompts minus the true one) and the share
    of scenes where the true prompt has the lower loss. `latents`: the scenes' scene_latent, if already made."""
    gaps = {(a, t): [] for a in ATTRIBUTES for t in TIMESTEPS}
    for n, scene in enumerate(scenes):
        with torch.inference_mode():
            latent = scene_latent(pipeline, scene) if latents is None else latents[n]
            prompts = [probe_prompt(scene)]
            spans = {}
            for attribute in ATTRIBUTES:
                wrong = wrong_prompts(scene, attribute)
                spans[attribute] = slice(len(prompts), len(prompts) + len(wrong))
                prompts += wrong
            states, mask = pipeline.text.encode(prompts)
            for t in TIMESTEPS:
                losses = velocity_losses(pipeline, latent, states, mask, t, n)
                for attribute in ATTRIBUTES:
                    gaps[(attribute, t)].append(float(losses[spans[attribute]].mean() - losses[0]))
        if progress is not None:
            progress(n + 1, len(scenes))
    return {
        attribute: {
            str(t): {"gap": float(np.mean(gaps[(attribute, t)])), "true_wins": float(np.mean(np.array(gaps[(attribute, t)]) > 0))}
            for t in TIMESTEPS
        }
        for attribute in ATTRIBUTES
    }


def denoising_loss(pipeline, scenes: list[Scene], timesteps=LOSS_TIMESTEPS, latents=None) -> dict[str, float]:
    """Per timestep: the mean velocity loss with the true prompt (the training loss, unweighted), which
    shows where along the path a change of training moved the transformer. `latents` as for word_sensitivity."""
    losses = {t: [] for t in timesteps}
    for n, scene in enumerate(scenes):
        with torch.inference_mode():
            latent = scene_latent(pipeline, scene) if latents is None else latents[n]
            states, mask = pipeline.text.encode([probe_prompt(scene)])
            for t in timesteps:
                losses[t].append(float(velocity_losses(pipeline, latent, states, mask, t, n)[0]))
    return {str(t): float(np.mean(values)) for t, values in losses.items()}


def sensitivity_table(result: dict) -> str:
    header = f"{'attribute':<12}" + "".join(f"{f't={t}':>18}" for t in TIMESTEPS)
    lines = [header]
    for attribute, by_time in result.items():
        cells = [f"{by_time[str(t)]['gap']:+.4f} ({100 * by_time[str(t)]['true_wins']:.0f}%)" for t in TIMESTEPS]
        lines.append(f"{attribute:<12}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)
