"""Spacetime patches, packing of variable-shape sequences, and 3D rotary positions.

A latent video (C, t, h, w) is cut into patches of (pt, ph, pw) latent cells;
each patch becomes one token (the "spacetime patches" of Sora). Videos of any
width, height and duration therefore become token sequences of different
lengths, which are concatenated into one sequence and kept apart by a
block-diagonal attention mask: NaViT's "Patch n' Pack" (Dehghani et al., 2023).
Nothing is cropped or padded. The self-attention mask is kept as its diagonal
blocks, runs of adjacent samples of one length, and attention runs block by
block, so no work goes to the pairs across samples that the mask would discard
(as a variable-length attention kernel, or xformers' BlockDiagonalMask, does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Grid = tuple[int, int, int]  # (t, h, w) tokens along time, height, width


def token_grid(latent_shape, patch_size: Grid) -> Grid:
    """Token grid of a latent of shape (C, t, h, w) (or just (t, h, w))."""
    t, h, w = latent_shape[-3:]
    pt, ph, pw = patch_size
    if t % pt or h % ph or w % pw:
        raise ValueError(f"latent {tuple(latent_shape)} is not divisible by the patch size {patch_size}")
    return (t // pt, h // ph, w // pw)


def num_tokens(latent_shape, patch_size: Grid) -> int:
    return math.prod(token_grid(latent_shape, patch_size))


def patchify(x: torch.Tensor, patch_size: Grid) -> torch.Tensor:
    # x: (C, T, H, W) -> (t*h*w, C*pt*ph*pw), tokens in (t, h, w) raster order
    C, T, H, W = x.shape
    pt, ph, pw = patch_size
    t, h, w = token_grid(x.shape, patch_size)
    x = x.reshape(C, t, pt, h, ph, w, pw)
    x = x.permute(1, 3, 5, 0, 2, 4, 6)  # (t, h, w, C, pt, ph, pw)
    return x.reshape(t * h * w, C * pt * ph * pw)


def unpatchify(tokens: torch.Tensor, grid: Grid, channels: int, patch_size: Grid) -> torch.Tensor:
    # tokens: (t*h*w, C*pt*ph*pw) -> (C, t*pt, h*ph, w*pw)
    t, h, w = grid
    pt, ph, pw = patch_size
    x = tokens.reshape(t, h, w, channels, pt, ph, pw)
    x = x.permute(3, 0, 4, 1, 5, 2, 6)  # (C, t, pt, h, ph, w, pw)
    return x.reshape(channels, t * pt, h * ph, w * pw)


def grid_positions(grid: Grid, device=None) -> torch.Tensor:
    # -> (t*h*w, 3) integer (t, h, w) coordinates in the same raster order as patchify
    t, h, w = grid
    axes = [torch.arange(n, device=device) for n in (t, h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


# Fractional positions (NaViT, Dehghani et al., 2023, section 3.1): each token's place as a
# fraction of its own clip, so "the right quarter of the frame" and "the first frame" mean
# the same at every size and duration. Rotary attention sees only the offsets between
# tokens; without this the network cannot tell where in the frame it is drawing.
def grid_fractions(grid: Grid, device=None) -> torch.Tensor:
    # -> (t*h*w, 3) float (t, y, x) in the raster order of patchify. Time runs from 0 at the first
    # frame to 1 at the last (a still is a first frame); height and width are token centres, (i + 0.5) / n.
    t, h, w = grid
    axes = [torch.arange(t, device=device, dtype=torch.float32) / max(t - 1, 1)]
    axes += [(torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n for n in (h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


# ---------------------------------------------------------------------------
# 3D rotary position embedding: RoFormer (Su et al., 2021) applied per axis, with
# each head's rotary pairs split between time, height and width (as in the 3D
# RoPE of Lumina-T2X / Open-Sora / CogVideoX). Relative positions in all three
# directions survive any resolution or duration.
# ---------------------------------------------------------------------------


class Rope3D:
    """Cos/sin tables for rotary attention over (t, h, w) positions.

    `split` gives each axis its share of a head's head_dim / 2 rotary pairs, in
    eighths; the remainder after rounding goes to the width axis. Tables are
    cached per (grid, device), so a sampler's many steps (and a training run's
    few distinct clip shapes) compute them once.
    """

    def __init__(self, head_dim: int, split: Grid = (2, 3, 3), theta: float = 10000.0):
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dim, got {head_dim}")
        pairs = head_dim // 2
        pairs_t = pairs * split[0] // sum(split)
        pairs_h = pairs * split[1] // sum(split)
        self.pairs = (pairs_t, pairs_h, pairs - pairs_t - pairs_h)
        self.theta = theta
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _angles(self, positions: torch.Tensor) -> torch.Tensor:
        # positions: (N, 3) -> angles (N, head_dim / 2)
        parts = []
        for axis, n in enumerate(self.pairs):
            if n == 0:
                continue
            freqs = self.theta ** (-torch.arange(n, dtype=torch.float64, device=positions.device) / n)
            parts.append(positions[:, axis, None].double() * freqs)
        return torch.cat(parts, dim=-1)

    def tables(self, grid: Grid, device) -> tuple[torch.Tensor, torch.Tensor]:
        # -> cos, signed sin: (t*h*w, head_dim). The halves are repeated, and the first half
        # of the sine is negated, so that apply_rotary needs no negation of its own.
        key = (tuple(grid), str(device))
        if key not in self._cache:
            angles = self._angles(grid_positions(grid, device))
            sin = angles.sin()
            self._cache[key] = (torch.cat([angles, angles], dim=-1).cos().float(), torch.cat([-sin, sin], dim=-1).float())
        return self._cache[key]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    # x: (..., N, head_dim); cos, signed_sin: (N, head_dim) from Rope3D.tables.
    # Pair i is (x_i, x_{i + half}): x_i cos - x_{i+half} sin, x_{i+half} cos + x_i sin.
    half = x.shape[-1] // 2
    return x * cos + torch.cat([x[..., half:], x[..., :half]], dim=-1) * signed_sin


# ---------------------------------------------------------------------------
# Packing (NaViT "Patch n' Pack")
# ---------------------------------------------------------------------------


@dataclass
class Packing:
    """Everything about a packed batch that does not change between sampler steps.

    Built once by `pack_layout` and reused for every forward pass over sequences
    of the same shapes with the same text masks.
    """

    grids: list[Grid]  # token grid per sample
    lengths: list[int]  # tokens per sample (t*h*w)
    sample_ids: torch.Tensor  # (N,) long: which sample each token belongs to
    runs: list[tuple[int, int]]  # (samples, length) per run of adjacent same-length samples: the mask's diagonal blocks
    rope_cos: torch.Tensor  # (N, head_dim)
    rope_sin: torch.Tensor  # (N, head_dim), signed as Rope3D.tables gives it
    fractions: torch.Tensor  # (N, 3) each token's (t, y, x) as a fraction of its clip (grid_fractions)
    text_index: torch.Tensor  # (M,) long: positions of the valid text tokens in the flattened (B*L) text
    cross_mask: torch.Tensor  # (N, M) additive: 0 where a token may attend a text token (same sample), -inf elsewhere


def additive_mask(allowed: torch.Tensor) -> torch.Tensor:
    # Built once per packing: attention would otherwise turn a boolean mask into this at every call.
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, float("-inf"))


def length_runs(lengths: list[int]) -> list[tuple[int, int]]:
    """(samples, length) for each run of adjacent samples of one length: [80, 80, 252, 80] -> [(2, 80), (1, 252), (1, 80)]."""
    runs: list[tuple[int, int]] = []
    for length in lengths:
        if runs and runs[-1][1] == length:
            runs[-1] = (runs[-1][0] + 1, length)
        else:
            runs.append((1, length))
    return runs


def pack_layout(grids: list[Grid], text_mask: torch.Tensor, rope: Rope3D) -> Packing:
    """Masks, rotary tables, fractional positions and text gather indices for samples of the given token grids.

    text_mask: (B, L) bool, one row per sample; every row needs at least one
    True (a tokenizer always emits its start and end tokens).
    """
    device = text_mask.device
    B, L = text_mask.shape
    if B != len(grids):
        raise ValueError(f"{len(grids)} latents but {B} rows of text")
    if not bool(text_mask.any(dim=1).all()):
        raise ValueError("every sample needs at least one valid text token")
    lengths = [math.prod(g) for g in grids]
    sample_ids = torch.repeat_interleave(torch.arange(B, device=device), torch.tensor(lengths, device=device))
    tables = [rope.tables(g, device) for g in grids]
    rope_cos = torch.cat([c for c, _ in tables])
    rope_sin = torch.cat([s for _, s in tables])
    fractions = torch.cat([grid_fractions(g, device) for g in grids])
    # Only the valid text tokens of each sample are kept (packed, like the video tokens).
    text_index = text_mask.reshape(-1).nonzero().squeeze(1)
    text_sample_ids = text_index // L
    cross_mask = additive_mask(sample_ids[:, None] == text_sample_ids[None, :])
    return Packing(list(grids), lengths, sample_ids, length_runs(lengths), rope_cos, rope_sin, fractions, text_index, cross_mask)


def pack(latents: list[torch.Tensor], patch_size: Grid) -> torch.Tensor:
    # latents: list of (C, t_i, h_i, w_i) -> (N, C*pt*ph*pw), N = sum of tokens
    return torch.cat([patchify(x, patch_size) for x in latents])


def unpack(tokens: torch.Tensor, packing: Packing, channels: int, patch_size: Grid) -> list[torch.Tensor]:
    # tokens: (N, C*pt*ph*pw) -> list of (C, t_i, h_i, w_i)
    pieces = tokens.split(packing.lengths)
    return [unpatchify(p, g, channels, patch_size) for p, g in zip(pieces, packing.grids)]
