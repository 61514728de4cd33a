"""Rectified flow: the training objective, the timestep schedule, samplers and guidance.

Convention (rectified flow, Liu et al., 2022; SD3, Esser et al., 2024):
x_t = (1 - t) * x0 + t * noise, t = 1 is pure noise, and the network predicts
the velocity dx_t/dt = noise - x0. Sampling integrates from t = 1 down to 0.

Everything here works on lists of latents of different shapes, and the samplers
receive a callable `velocity_fn(x_list, t_per_sample) -> v_list`, never the
network: packing, text and guidance are the caller's business.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from model.config import SAMPLERS, FlowConfig

VelocityFn = Callable[[list, torch.Tensor], list]


# Logit-normal timesteps (SD3, section 3.1): t = sigmoid(n), n ~ N(mean, std),
# which spends most training on the middle of the path where the task is hardest.
def sample_timesteps(n: int, generator: torch.Generator | None, config: FlowConfig, device="cpu") -> torch.Tensor:
    # -> (n,) in (0, 1)
    normal = torch.randn(n, generator=generator) * config.logit_normal_std + config.logit_normal_mean
    return torch.sigmoid(normal).to(device)


# Resolution-dependent shift (SD3 section 5.3.2; Open-Sora 1.2 scales it with
# frames x pixels): more tokens carry more redundant signal, so the same noise
# level destroys less of the picture; shifting t towards 1 restores the balance.
def timestep_shift(num_tokens: int, config: FlowConfig) -> float:
    shift = config.base_shift * (num_tokens / config.base_tokens) ** 0.5
    return float(min(max(shift, config.base_shift), config.max_shift))


def shift_timesteps(t: torch.Tensor, num_tokens, config: FlowConfig) -> torch.Tensor:
    # t: (B,) in [0, 1]; num_tokens: int or a sequence of B ints -> t' = s t / (1 + (s - 1) t)
    if isinstance(num_tokens, int):
        shift = torch.full_like(t, timestep_shift(num_tokens, config))
    else:
        shift = torch.tensor([timestep_shift(int(n), config) for n in num_tokens], dtype=t.dtype, device=t.device)
    return shift * t / (1 + (shift - 1) * t)


# Clean-latent prediction (JiT: Li & He, 2025, "Back to Basics: Let Denoising Generative Models
# Denoise"): clean data lies near a low-dimensional set and noise does not, so a small network has
# an easier time outputting the clean latent than the velocity, which carries the noise. The loss
# and the samplers still see velocities, v = (x_t - x0) / t, with t held off zero as JiT does.
MIN_DATA_T = 0.05


def to_velocity(outputs: list, noisy: list, timesteps: torch.Tensor, config: FlowConfig) -> list:
    """The velocity of each sample from the network's outputs (lists of (C, t, h, w); timesteps (B,))."""
    if config.prediction == "velocity":
        return outputs
    return [(x - x0) / t.clamp_min(MIN_DATA_T) for x, x0, t in zip(noisy, outputs, timesteps)]


def flow_matching_loss(velocity_fn: VelocityFn, latents: list, timesteps: torch.Tensor, noise: list,
                       weights: list | None = None) -> torch.Tensor:
    """Mean squared error between predicted and true velocity over every latent cell of every sample.

    latents, noise: lists of (C, t_i, h_i, w_i); timesteps: (B,) already shifted; weights: None, or a
    list of (1, t_i, h_i, w_i) or None per sample, multiplying each cell's squared error.
    Every cell counts the same unless weighted, so long clips weigh more than stills (as with packing in NaViT).
    """
    weights = weights or [None] * len(latents)
    noisy = [(1 - t) * x0 + t * n for x0, n, t in zip(latents, noise, timesteps)]
    predicted = velocity_fn(noisy, timesteps)
    squared = sum(
        ((v - (n - x0)) ** 2 * (1.0 if w is None else w)).sum() for v, n, x0, w in zip(predicted, noise, latents, weights)
    )
    return squared / sum(x0.numel() for x0 in latents)


def make_noise(shape, seed: int, device="cpu") -> torch.Tensor:
    """Gaussian noise from a generator of its own: it depends only on the seed and shape.

    Drawn on the CPU and then moved, so a seed gives the same noise on every device.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator).to(device)


def schedule(steps: int, shift: float) -> torch.Tensor:
    # -> (steps + 1,) timesteps from 1 down to 0, uniform then shifted
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def classifier_free_guidance(velocity_fn: VelocityFn, guidance: Sequence[float]) -> VelocityFn:
    """Classifier-free guidance (Ho & Salimans, 2022) with both branches in one forward pass.

    `velocity_fn` takes 2S rows: S conditional ones, then the same S latents
    again as unconditional rows (the caller arranges the text in that order).
    Returns a velocity function over the S latents: v_u + g (v_c - v_u).
    """
    scales = list(guidance)

    def guided(x_list, t):
        S = len(x_list)
        v = velocity_fn(list(x_list) + list(x_list), torch.cat([t, t]))
        return [vu + g * (vc - vu) for vc, vu, g in zip(v[:S], v[S:], scales)]

    return guided


def sample(
    velocity_fn: VelocityFn,
    noise: list,
    steps: int,
    sampler: str = "euler",
    shifts: Sequence[float] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> list:
    """Integrate from noise (t = 1) to data (t = 0) in `steps` steps.

    noise: list of (C, t_i, h_i, w_i); shifts: one timestep shift per sample (from
    its own token count, so a sample's path never depends on its neighbours).
    "euler" uses one evaluation per step; "heun" (Karras et al., 2022) two, except
    on the last step to t = 0, which is an Euler step. on_step(i, steps) is called
    after step i (1-based) and may raise to stop sampling.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    shifts = list(shifts) if shifts is not None else [1.0] * len(noise)
    device = noise[0].device
    # (steps + 1, B): column b is sample b's own schedule
    times = torch.stack([schedule(steps, s) for s in shifts], dim=1).to(device)
    x = list(noise)
    for i in range(steps):
        t, t_next = times[i], times[i + 1]
        dt = t_next - t  # (B,) negative
        v = velocity_fn(x, t)
        x_euler = [xb + dt[b] * vb for b, (xb, vb) in enumerate(zip(x, v))]
        if sampler == "heun" and i < steps - 1:
            v_next = velocity_fn(x_euler, t_next)
            x = [xb + dt[b] * (vb + vn) / 2 for b, (xb, vb, vn) in enumerate(zip(x, v, v_next))]
        else:
            x = x_euler
        if on_step is not None:
            on_step(i + 1, steps)
    return x
