"""Worker sizing per model preset, computed from model/config.py (docs/deploy.md's tables).

    python tests/deploy/sizing.py        # prints the tables docs/deploy.md quotes

Everything here is arithmetic on the configs, not a measurement: parameter counts
are exact (the modules are built on the meta device, no memory is allocated); the
DiT's FLOPs follow from its layer shapes (checked against torch's FLOP counter in
test_sizing.py); the VAE decoder's FLOPs are counted by torch's FLOP counter on
meta tensors; GPU time assumes a stated share of the GPU's peak bf16 throughput;
memory adds weights and the largest activations of each phase by formula.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from model.config import PRESETS, ModelConfig
from model.dit import DiT, count_parameters
from model.vae import CausalVAE

TEXT_ENCODER_PARAMETERS = 22_713_216  # all-MiniLM-L6-v2, counted from the loaded model
TEXT_TOKENS = 64  # TextConfig.max_tokens: the most a prompt can take
GUIDED_ROWS = 2  # classifier-free guidance: a conditional and an unconditional row per request
# Dense bf16 tensor-core peaks from the vendors' data sheets, in FLOP/s.
GPUS = {"L4": 121e12, "A100": 312e12, "H100 SXM": 989e12}
# The share of that peak the sampler is assumed to reach: an assumption, not a measurement.
UTILISATION = 0.35

# Representative requests per preset: (width, height, seconds); the largest trained size first.
REQUESTS = {
    "tiny": [(64, 64, 2)],
    "shapes-s": [(64, 64, 2), (96, 96, 4)],
    "shapes-s5": [(64, 64, 2), (96, 96, 4)],
    "shapes-s10": [(64, 64, 2), (96, 96, 4)],
    "b": [(256, 256, 4), (448, 256, 8)],
    "l": [(512, 512, 4), (768, 432, 8)],
    "xl": [(512, 512, 4), (512, 512, 8)],
}


@dataclass(frozen=True)
class Sizing:
    preset: str
    width: int
    height: int
    seconds: int
    frames: int
    steps: int
    tokens: int  # DiT tokens of one request (one row)
    dit_parameters: int
    vae_parameters: int
    dit_flops_per_step: float  # both guidance rows, one sampler step
    vae_decode_flops: float
    weights_bytes: float
    dit_activation_bytes: float
    vae_activation_bytes: float

    @property
    def flops(self) -> float:
        return self.steps * self.dit_flops_per_step + self.vae_decode_flops

    def seconds_on(self, peak: float) -> float:
        return self.flops / (peak * UTILISATION)

    @property
    def peak_bytes(self) -> float:
        # The sampler and the decoder run one after the other: the larger phase sets the peak.
        return self.weights_bytes + max(self.dit_activation_bytes, self.vae_activation_bytes)


def dit_flops(config: ModelConfig, tokens_per_row: int, rows: int = GUIDED_ROWS, text_tokens: int = TEXT_TOKENS) -> float:
    """One forward over `rows` packed rows of one request: 2 FLOPs per multiply-add of every linear
    layer, plus attention. Rows of one length attend as a batch (QK^T and AV within each row); the
    cross-attention runs over all packed text under its mask, so it computes every pair."""
    dit = config.dit
    D, patch = dit.hidden_size, dit.latent_channels * math.prod(dit.patch_size)
    N, M = tokens_per_row * rows, text_tokens * rows
    mlp = int(D * dit.mlp_ratio)
    per_block = (
        2 * N * D * 3 * D + 2 * N * D * D  # self-attention: qkv, output
        + 4 * rows * tokens_per_row**2 * D  # self-attention scores and values, row by row
        + 2 * N * D * D + 2 * M * D * 2 * D + 2 * N * D * D  # cross-attention: q, kv (text), output
        + 4 * N * M * D  # cross-attention scores and values
        + 2 * N * D * mlp * 2  # MLP
    )
    embed = (
        2 * N * patch * D  # patch embedding
        + 2 * M * (dit.text_dim * D + D * D)  # caption projection
        + 2 * rows * (256 * D + D * D + D * 6 * D)  # timestep embedding and the shared modulation
        + 2 * rows * D * 2 * D + 2 * N * D * patch  # final layer: adaLN per row (one length), output projection
    )
    return embed + dit.depth * per_block


def vae_decode_flops(config: ModelConfig, latent: tuple[int, int, int, int]) -> float:
    with torch.device("meta"):
        vae = CausalVAE(config.vae)
        z = torch.zeros((1, *latent))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        vae.decode(z)
    return float(counter.get_total_flops())


def dit_activation_bytes(config: ModelConfig, tokens_per_row: int, rows: int = GUIDED_ROWS,
                         text_tokens: int = TEXT_TOKENS) -> float:
    """bf16 activations of the widest moment of a block (about 20 token-widths per token: qkv,
    normed and rotated q/k, the shared (N, 6, D) modulation, the MLP's 4x hidden layer), plus the
    cross-attention mask: N x M, fp32 kept for all steps and its bf16 form inside attention (rows of
    one length need no self-attention mask)."""
    N, M, D = tokens_per_row * rows, text_tokens * rows, config.dit.hidden_size
    return 20 * N * D * 2 + N * M * (4 + 2)


def vae_activation_bytes(config: ModelConfig, width: int, height: int, frames: int) -> float:
    """bf16 activations of the decoder's last (full resolution) stage over one temporal chunk:
    about four live tensors of base_channels x chunk frames x H/p x W/p, plus the clip in fp32."""
    vae = config.vae
    chunk_frames = min(frames, vae.decode_chunk_latent_frames * vae.temporal_factor)
    stage = vae.base_channels * vae.channel_mults[0] * chunk_frames * (height // vae.patch_size) * (width // vae.patch_size)
    return 4 * stage * 2 + 3 * frames * height * width * 4


def sizing(preset: str, width: int, height: int, seconds: int) -> Sizing:
    config = PRESETS[preset]
    frames = 1 + config.fps * seconds
    latent = config.vae.latent_shape(width, height, frames)
    with torch.device("meta"):
        dit, vae = DiT(config.dit), CausalVAE(config.vae)
    tokens = math.prod(dit.grid(latent))
    dit_parameters, vae_parameters = count_parameters(dit), count_parameters(vae)
    # fp32 weights (autocast computes in bf16 but keeps fp32 masters), and the DiT's bf16
    # copies that autocast caches while sampling.
    weights = 4 * (dit_parameters + vae_parameters + TEXT_ENCODER_PARAMETERS) + 2 * dit_parameters
    return Sizing(
        preset, width, height, seconds, frames, config.flow.steps, tokens, dit_parameters, vae_parameters,
        dit_flops(config, tokens), vae_decode_flops(config, latent), weights,
        dit_activation_bytes(config, tokens), vae_activation_bytes(config, width, height, frames),
    )


@functools.lru_cache(maxsize=1)
def all_sizings() -> tuple[Sizing, ...]:
    return tuple(sizing(preset, *request) for preset, requests in REQUESTS.items() for request in requests)


def _millions(count: int) -> str:
    return f"{count / 1e6:,.1f}M"


def _gib(count: float) -> str:
    return f"{count / 2**30:.1f}"


def parameters_table() -> str:
    rows = ["| preset | DiT parameters | VAE parameters | text encoder | weights in memory (GiB) |",
            "|---|---:|---:|---:|---:|"]
    seen = set()
    for entry in all_sizings():
        if entry.preset in seen:
            continue
        seen.add(entry.preset)
        rows.append(f"| {entry.preset} | {_millions(entry.dit_parameters)} | {_millions(entry.vae_parameters)} | "
                    f"{_millions(TEXT_ENCODER_PARAMETERS)} | {_gib(entry.weights_bytes)} |")
    return "\n".join(rows)


GPU_PRESETS = ("b", "l", "xl")


def jobs_table() -> str:
    """Estimated GPU time per job for the GPU presets (compute only, at UTILISATION of peak)."""
    header = ("| preset | request | tokens | DiT TFLOP (all steps) | VAE decode TFLOP | "
              + " | ".join(f"{name}: s/job, jobs/h" for name in GPUS) + " | est. peak memory (GiB) |")
    rows = [header, "|---|---|---:|---:|---:|" + "---:|" * len(GPUS) + "---:|"]
    for entry in all_sizings():
        if entry.preset not in GPU_PRESETS:
            continue
        cells = []
        for peak in GPUS.values():
            seconds = entry.seconds_on(peak)
            cells.append(f"{seconds:.2g} s, {3600 / seconds:,.0f}" if seconds < 10 else f"{seconds:,.0f} s, {3600 / seconds:,.0f}")
        rows.append(
            f"| {entry.preset} | {entry.width}x{entry.height}, {entry.seconds} s, {entry.steps} steps | "
            f"{entry.tokens:,} | {entry.steps * entry.dit_flops_per_step / 1e12:,.1f} | {entry.vae_decode_flops / 1e12:,.1f} | "
            + " | ".join(cells) + f" | {_gib(entry.peak_bytes)} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(parameters_table())
    print()
    print(jobs_table())
