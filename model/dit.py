"""The patch Diffusion Transformer.

The blocks follow DiT (Peebles & Xie, 2023, "Scalable Diffusion Models with
Transformers", facebookresearch/DiT): pre-norm transformer blocks whose
LayerNorms are modulated by the timestep (adaLN-Zero: shift, scale and a gate
that starts at zero, so every block starts as the identity). Text enters by
cross-attention, and the timestep modulation is computed once and shared by all
blocks, each adding its own learned table, as in PixArt-alpha's "adaLN-single"
(Chen et al., 2023): this saves depth * 6 * hidden^2 parameters, which is most
of the budget of a small model. Attention uses QK-norm (RMSNorm on queries and
keys; Dehghani et al., 2023, ViT-22B; SD3) for stable training, and 3D rotary
positions over (t, h, w).

All samples of a batch, whatever their shape, are packed into one token
sequence with a block-diagonal self-attention mask, applied block by block
(NaViT; see patches.py).
Presets with `fractional_positions` also add each token's place as a fraction
of its own clip (NaViT's fractional positions), which rotary attention cannot see.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import DiTConfig
from model.patches import Packing, Rope3D, apply_rotary, pack, pack_layout, token_grid, unpack


def modulate(x, shift, scale):
    return torch.addcmul(shift, x, 1 + scale)  # x * (1 + scale) + shift in one op


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t (as in DiT / the Transformer), then an MLP."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def frequencies(self, t, max_period: float = 10000.0):
        # t: (B,) in [0, 1] -> (B, frequency_size); scaled by 1000 so that the
        # sinusoids see the same range as with integer diffusion steps.
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = (t.float() * 1000.0)[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t):
        # t: (B,) -> (B, D)
        return self.mlp(self.frequencies(t))


class PositionEmbedder(nn.Module):
    """Fourier features of a token's fractional (t, y, x) position (NeRF's positional encoding,
    Mildenhall et al., 2020), then a linear map to the token width.

    Octave periods from twice the clip down to a sixteenth of it, so the finest
    band tells apart tokens a thirty-second of the clip apart, more than the
    Shapes canvases need (at most 8 tokens across, 9 latent frames). `bands` sets
    the parameter count, so changing it breaks trained weights; it stays a
    constant here, as the timestep's frequency_size does.
    """

    def __init__(self, hidden_size: int, bands: int = 6):
        super().__init__()
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(bands, dtype=torch.float32), persistent=False)
        self.linear = nn.Linear(3 * 2 * bands, hidden_size)

    def forward(self, fractions):
        # fractions: (N, 3) in [0, 1] -> (N, D)
        angles = (fractions[:, :, None] * self.frequencies).flatten(1)  # (N, 3 * bands)
        return self.linear(torch.cat([angles.sin(), angles.cos()], dim=-1))


class Attention(nn.Module):
    """Multi-head attention over packed tokens with QK-norm; self- or cross-attention."""

    def __init__(self, hidden_size: int, num_heads: int, context_size: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.cross = context_size is not None
        if self.cross:
            self.q = nn.Linear(hidden_size, hidden_size)
            self.kv = nn.Linear(context_size, 2 * hidden_size)
        else:
            self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x, runs=None, context=None, mask=None, rope=None):
        # x: (S, L, D), S sequences of L tokens: the samples themselves (S > 1, or a lone sample), or
        # S = 1 packed row of samples of different lengths. Self-attention: runs, the Packing's
        # (samples, length) runs. Cross-attention: context (M, D) packed text, mask additive (N, M)
        # over the N = S * L tokens. rope: (cos, sin) each (N, head_dim)
        S, L, D = x.shape
        H, Dh = self.num_heads, self.head_dim
        # Heads are laid out by views of the projections, so the only copies are the ones the norms
        # and the output projection make anyway.
        if self.cross:
            q = self.q(x).view(1, S * L, H, Dh).transpose(1, 2)  # (1, H, N, Dh)
            k, v = self.kv(context).view(1, -1, 2, H, Dh).permute(2, 0, 3, 1, 4).unbind(0)  # (1, H, M, Dh) each
        else:
            q, k, v = self.qkv(x).view(S, L, 3, H, Dh).permute(2, 0, 3, 1, 4).unbind(0)  # (S, H, L, Dh) each
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = (table.view(S, 1, L, Dh) for table in rope)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if runs is not None and S == 1:  # one packed row: its samples must not see each other
            out = attend_by_runs(q, k, v, runs)  # (1, H, N, Dh)
        else:
            mask = None if mask is None else mask.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (S or 1, H, L or N, Dh)
        return self.proj(out.transpose(1, 2).reshape(S, L, D))  # (S, L, D)


def attend_by_runs(q, k, v, runs):
    """Self-attention of packed samples under the block-diagonal mask, one diagonal block at a time.

    Each run of adjacent samples of one length attends as a batch with no mask: the
    blocks off the diagonal, pairs of tokens from different samples, are never computed.
    Computing the whole N x N score matrix under the mask instead made a training
    step over clips of mixed shapes a third slower (benchmarks/RESULTS.md).
    """
    # q, k, v: (1, H, N, Dh), the samples one after another; runs: (samples, length) covering N
    outs, start = [], 0
    for count, length in runs:
        end = start + count * length
        q_run, k_run, v_run = (t[0, :, start:end].unflatten(1, (count, length)).transpose(0, 1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q_run, k_run, v_run)  # (count, H, length, Dh)
        outs.append(out.transpose(0, 1).flatten(1, 2))  # (H, count * length, Dh)
        start = end
    # One run (every sample the same length, the usual case) needs no second copy.
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1))[None]  # (1, H, N, Dh)


# GELU's tanh approximation (Hendrycks & Gimpel, 2016), the activation of DiT's MLPs, rewritten
# through 0.5 * (1 + tanh(z)) = sigmoid(2z). The same function (within 5e-7 in fp32), but on this
# CPU torch's fused kernel spends most of its time in tanh, and the sigmoid form makes a guided
# forward 8% faster (benchmarks/RESULTS.md, dit-choices). With gradients the fused kernel stays, as
# its backward keeps only its input; off the CPU too, where the rewrite was never measured.
GELU_TANH_SCALE = 2 * math.sqrt(2 / math.pi)  # the 2 of sigmoid(2z) folded into sqrt(2 / pi)
GELU_TANH_INNER = torch.tensor(GELU_TANH_SCALE)


def gelu_tanh(x):
    if x.requires_grad or x.device.type != "cpu":
        return F.gelu(x, approximate="tanh")
    # x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), in place on one new tensor: each extra
    # activation-sized temporary costs fresh pages from the allocator, as much as the arithmetic.
    out = torch.addcmul(GELU_TANH_INNER, x, x, value=0.044715 * GELU_TANH_SCALE)
    return out.mul_(x).sigmoid_().mul_(x)


class Mlp(nn.Module):
    def __init__(self, in_size: int, hidden_size: int, out_size: int):
        super().__init__()
        self.fc1 = nn.Linear(in_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, out_size)

    def forward(self, x):
        return self.fc2(gelu_tanh(self.fc1(x)))


class DiTBlock(nn.Module):
    """Self-attention (modulated, gated), cross-attention to text, MLP (modulated, gated)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.cross_attn = Attention(hidden_size, num_heads, context_size=hidden_size)
        self.norm3 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), hidden_size)
        # This block's own offsets to the shared timestep modulation (adaLN-single).
        self.modulation = nn.Parameter(torch.zeros(6, hidden_size))

    def forward(self, x, modulation, text, packing: Packing):
        # x: (S, L, D); modulation: (S, 1 or L, 6, D), the shared timestep modulation per sequence or
        # per token; text: (M, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (modulation + self.modulation).unbind(-2)
        rope = (packing.rope_cos, packing.rope_sin)
        x = torch.addcmul(x, gate_msa, self.attn(modulate(self.norm1(x), shift_msa, scale_msa), packing.runs, rope=rope))
        x = x + self.cross_attn(self.norm2(x), context=text, mask=packing.cross_mask)
        x = torch.addcmul(x, gate_mlp, self.mlp(modulate(self.norm3(x), shift_mlp, scale_mlp)))
        return x  # (S, L, D)


class FinalLayer(nn.Module):
    """adaLN (shift, scale) from the timestep (`features`), then `linear` to patch values (DiT); the
    output convolution reads the same modulated states."""

    def __init__(self, hidden_size: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.linear = nn.Linear(hidden_size, patch_dim)

    def features(self, x, c):
        # x: (S, L, D); c: (S, 1 or L, D) timestep embedding per sequence or per token -> (S, L, D)
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return modulate(self.norm(x), shift, scale)


# U-ViT (Bao et al., 2023, "All are Worth Words") ends in a 3x3 convolution after the token-wise
# output layer. Here it is a correction added to that layer's output: every token spreads features
# over its latent cells, and the convolution reads them across token borders, which the output
# layer cannot (a token writes its cells from its own state alone).
class OutputConvolution(nn.Module):
    def __init__(self, hidden_size: int, patch_size: tuple[int, int, int], channels: int, latent_channels: int):
        super().__init__()
        self.patch_size = patch_size
        self.channels = channels
        self.linear = nn.Linear(hidden_size, channels * math.prod(patch_size))
        self.conv = nn.Conv2d(channels, latent_channels, kernel_size=3, padding=1)

    def forward(self, x, packing: Packing):
        # x: (N, D) the final layer's modulated states -> list of B corrections (C, t_i, h_i, w_i)
        cells = unpack(F.silu(self.linear(x)), packing, self.channels, self.patch_size)  # list of (F, t_i, h_i, w_i)
        return [self.conv(f.transpose(0, 1)).transpose(0, 1) for f in cells]  # each frame apart: (t_i, F, h, w) -> (C, t_i, h, w)


class DiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        if config.hidden_size % config.num_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not divisible by num_heads {config.num_heads}")
        self.config = config
        D = config.hidden_size
        self.patch_size = tuple(config.patch_size)
        self.patch_dim = config.latent_channels * math.prod(self.patch_size)
        self.x_embedder = nn.Linear(self.patch_dim, D)
        # Where a token is in its clip; rotary attention alone gives only offsets between tokens.
        self.position_embedder = PositionEmbedder(D) if config.fractional_positions else None
        self.t_embedder = TimestepEmbedder(D)
        # Caption projection from the text encoder's width (PixArt-alpha's y_embedder).
        self.y_embedder = Mlp(config.text_dim, D, D)
        # The prompt as a whole, added to the timestep embedding (SD3's pooled text vector,
        # Esser et al., 2024): global attributes (background, colour) reach every block
        # through the modulation, not only through cross-attention.
        self.pooled_embedder = Mlp(config.text_dim, D, D) if config.pooled_text else None
        # adaLN-single: one modulation of the timestep for every block.
        self.t_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        self.blocks = nn.ModuleList([DiTBlock(D, config.num_heads, config.mlp_ratio) for _ in range(config.depth)])
        self.final_layer = FinalLayer(D, self.patch_dim)
        self.output_conv = (
            OutputConvolution(D, self.patch_size, config.output_conv_channels, config.latent_channels)
            if config.output_conv_channels else None
        )
        self.rope = Rope3D(D // config.num_heads, tuple(config.rope_split), config.rope_theta)
        self.initialize_weights()

    def initialize_weights(self):
        # Transformer layers: Xavier uniform, zero biases (DiT).
        def basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic_init)
        # Embedding MLPs of the timestep and the caption: small normal (DiT, PixArt-alpha).
        for linear in (self.t_embedder.mlp[0], self.t_embedder.mlp[2], self.y_embedder.fc1, self.y_embedder.fc2):
            nn.init.normal_(linear.weight, std=0.02)
        if self.pooled_embedder is not None:  # starts at zero: the network begins as the timestep alone drives it
            nn.init.normal_(self.pooled_embedder.fc1.weight, std=0.02)
            nn.init.zeros_(self.pooled_embedder.fc2.weight)
        # The position map keeps basic_init's Xavier start, on a par with the patch embedding, as
        # DiT's fixed sin-cos positions are. Started at zero, it grows only once the zero-initialised
        # final layer has: position-dependent prompts were learned up to 100 steps later in a
        # small measurement at t = 1 (docs/model.md, "Positions from the first step").
        # adaLN-Zero: every modulation starts at zero, so each gate is zero and each
        # block is the identity; the cross-attention (ungated) gets a zero output projection.
        nn.init.zeros_(self.t_modulation[-1].weight)
        nn.init.zeros_(self.t_modulation[-1].bias)
        for block in self.blocks:
            nn.init.zeros_(block.modulation)
            nn.init.zeros_(block.cross_attn.proj.weight)
            nn.init.zeros_(block.cross_attn.proj.bias)
        # The output starts at zero (DiT's final layer).
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.output_conv is not None:  # so is the output convolution's correction
            nn.init.zeros_(self.output_conv.conv.weight)
            nn.init.zeros_(self.output_conv.conv.bias)

    # Growing a trained network deeper while it computes the same function (Net2Net's
    # function-preserving growth, Chen et al., 2016). A block whose three output projections are
    # zero adds nothing to the residual stream; the shared adaLN-single modulation of a trained
    # network gates every block, so zero gates, as in initialize_weights, would not do it.
    def make_identity_blocks(self, indices) -> None:
        for index in indices:
            block = self.blocks[index]
            for linear in (block.attn.proj, block.cross_attn.proj, block.mlp.fc2):
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)

    def grid(self, latent_shape) -> tuple[int, int, int]:
        return token_grid(latent_shape, self.patch_size)

    def prepare(self, latent_shapes, text_mask: torch.Tensor) -> Packing:
        """The packing (masks, rotary tables, fractional positions, text gather indices) for latents of these shapes.

        Build it once and pass it to every forward over the same shapes and text
        masks (a sampler's steps) to skip rebuilding it.
        """
        return pack_layout([self.grid(s) for s in latent_shapes], text_mask, self.rope)

    def forward(self, latents, timesteps, text_states, text_mask, packing: Packing | None = None):
        # latents: list of B tensors (C, t_i, h_i, w_i); timesteps: (B,) in [0, 1];
        # text_states: (B, L, text_dim); text_mask: (B, L) bool -> list of B velocities (C, t_i, h_i, w_i)
        if packing is None:
            packing = self.prepare([x.shape for x in latents], text_mask)
        B, L, _ = text_states.shape
        x = self.x_embedder(pack(latents, self.patch_size))  # (N, D)
        if self.position_embedder is not None:
            x = x + self.position_embedder(packing.fractions)  # (N, D)
        c = self.t_embedder(timesteps)  # (B, D)
        if self.pooled_embedder is not None:
            weights = text_mask.to(text_states.dtype).unsqueeze(-1)  # (B, L, 1)
            pooled = (text_states * weights).sum(1) / weights.sum(1)  # (B, text_dim), valid tokens only
            c = c + self.pooled_embedder(pooled)  # (B, D)
        modulation = self.t_modulation(c).view(B, 6, -1)  # (B, 6, D)
        text = self.y_embedder(text_states.reshape(B * L, -1)[packing.text_index])  # (M, D)
        # Samples of one length attend apart as (B, length) rows, and their conditioning broadcasts
        # over a row: per-token copies of it would cost as much elementwise work as the residual
        # stream itself. Samples of different lengths are one packed row, conditioned per token.
        if len(packing.runs) == 1:
            x = x.view(B, -1, x.shape[-1])  # (B, length, D)
            modulation, c = modulation.unsqueeze(1), c.unsqueeze(1)  # (B, 1, 6, D), (B, 1, D)
        else:
            x = x.unsqueeze(0)  # (1, N, D)
            modulation, c = modulation[packing.sample_ids][None], c[packing.sample_ids][None]  # (1, N, 6, D), (1, N, D)
        for block in self.blocks:
            x = block(x, modulation, text, packing)  # (S, L, D)
        x = self.final_layer.features(x, c).flatten(0, 1)  # (N, D)
        out = unpack(self.final_layer.linear(x), packing, self.config.latent_channels, self.patch_size)
        if self.output_conv is not None:
            out = [o + correction for o, correction in zip(out, self.output_conv(x, packing))]
        return out  # list of B (C, t_i, h_i, w_i)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
