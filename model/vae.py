"""A causal 3D video autoencoder: 2x or 4x in time, 4x or 8x in space (by preset).

The idea follows MAGVIT-v2 (Yu et al., 2023, "Language Model Beats Diffusion")
and the causal VAEs of CogVideoX (Yang et al., 2024) and Open-Sora: every
convolution pads only on the past in time, and the first frame is encoded on its
own, so a clip of T = 1 + 4k frames becomes 1 + k latent frames at 4x (1 + 2k
at 2x) and a still image is simply a one-frame video. Because nothing looks ahead in time, the
decoder can run over the latent in temporal chunks, carrying the last frames of
each convolution's input across chunk borders, and give the same result as one
pass over the whole clip.

Cost matters more than capacity here (the bundled model trains and serves on a
CPU), so the first step may be a space-to-depth by `patch_size` (as in the patch
embedding of ViTs and the "pixel unshuffle" of ESPCN, Shi et al., 2016): with
`patch_size` 2 the convolutions never run at full resolution. The `shapes-s2`
preset uses `patch_size` 1 and a narrow first stage instead: 4x in space keeps
the corners of small shapes that 8x rounds off, at the same cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import VAEConfig


class ChannelNorm(nn.Module):
    """RMS norm over channels at each (t, y, x): touches no other frame, so causality and chunking hold."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1, 1))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps) * self.weight


class CausalConv3d(nn.Module):
    """A 3D convolution that sees only the present and the past in time.

    The past of the first frame is that frame repeated (as in CogVideoX), so a
    one-frame clip is a still image and not a fade from black. With a `cache`
    dict the last `kernel_t - 1` input frames are kept for the next call, which
    is how chunked decoding continues exactly where the previous chunk ended.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel=(3, 3, 3), stride=(1, 1, 1)):
        super().__init__()
        self.time_pad = kernel[0] - 1
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel, stride=stride, padding=(0, kernel[1] // 2, kernel[2] // 2)
        )

    def forward(self, x, cache: dict | None = None):
        # x: (B, C, T, H, W) -> (B, C', T', H', W')
        if self.time_pad:
            past = cache.get(self) if cache is not None else None
            if past is None:
                past = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([past, x], dim=2)
            if cache is not None:
                cache[self] = x[:, :, -self.time_pad :].detach()
        return self.conv(x)


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel):
        super().__init__()
        self.norm1 = ChannelNorm(channels)
        self.conv1 = CausalConv3d(channels, channels, kernel)
        self.norm2 = ChannelNorm(channels)
        self.conv2 = CausalConv3d(channels, channels, kernel)

    def forward(self, x, cache=None):
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return x + h


class Downsample(nn.Module):
    """Halves H and W, and T as (1 + 2m) -> (1 + m) when `temporal`.

    With the first frame repeated twice as its past, a kernel-3, stride-2
    causal convolution maps frame 0 alone to latent frame 0 and frames
    (2j - 1, 2j) (plus 2j - 2 as context) to latent frame j.
    """

    def __init__(self, in_channels: int, out_channels: int, temporal: bool):
        super().__init__()
        self.conv = CausalConv3d(in_channels, out_channels, (3, 3, 3), stride=(2 if temporal else 1, 2, 2))

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Doubles H and W, and T as (1 + m) -> (1 + 2m) when `temporal`.

    A pointwise convolution makes the channels of 2 (time) x 2 x 2 (space)
    children, which are moved into place (depth-to-space); the residual blocks
    that follow smooth them. Latent frame 0 yields two frames of which the first
    is dropped, so it decodes to frame 0 alone (CogVideoX's causal decoder does
    the same). Only the very first chunk of a chunked decode drops a frame.
    """

    def __init__(self, in_channels: int, out_channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.out_channels = out_channels
        factor = (2 if temporal else 1) * 4
        self.conv = nn.Conv3d(in_channels, out_channels * factor, 1)

    def forward(self, x, cache=None):
        # x: (B, C, T, H, W) -> (B, C', T * st, 2H, 2W), st = 2 if temporal
        B, _, T, H, W = x.shape
        st = 2 if self.temporal else 1
        x = self.conv(x).view(B, self.out_channels, st, 2, 2, T, H, W)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(B, self.out_channels, T * st, 2 * H, 2 * W)
        if self.temporal:
            first_chunk = cache is None or self not in cache
            if cache is not None:
                cache[self] = True
            if first_chunk:
                x = x[:, :, 1:]
        return x


def _block_kernel(stage: int, config: VAEConfig):
    # Spatial-only kernels at the widest stages keep the full-resolution work cheap.
    return (1, 3, 3) if stage < config.spatial_only_stages else (3, 3, 3)


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        p = config.patch_size
        widths = [config.base_channels * m for m in config.channel_mults]
        self.patch_size = p
        self.conv_in = CausalConv3d(config.in_channels * p * p, widths[0], (3, 3, 3))
        self.stages = nn.ModuleList()
        for i, width in enumerate(widths):
            stage = nn.Module()
            stage.blocks = nn.ModuleList([ResBlock(width, _block_kernel(i, config)) for _ in range(config.blocks_per_stage)])
            if i < len(widths) - 1:
                stage.down = Downsample(width, widths[i + 1], config.temporal_downsample[i])
            self.stages.append(stage)
        self.norm_out = ChannelNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], config.latent_channels, (3, 3, 3))

    def forward(self, x):
        # x: (B, 3, T, H, W) -> (B, 3 p^2, T, H/p, W/p)
        B, C, T, H, W = x.shape
        p = self.patch_size
        x = x.view(B, C, T, H // p, p, W // p, p).permute(0, 1, 4, 6, 2, 3, 5).reshape(B, C * p * p, T, H // p, W // p)
        h = self.conv_in(x)
        for stage in self.stages:
            for block in stage.blocks:
                h = block(h)
            if hasattr(stage, "down"):
                h = stage.down(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, latent_channels, 1 + k, H/s, W/s), s = spatial_factor


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        p = config.patch_size
        widths = [config.base_channels * m for m in config.channel_mults]
        self.patch_size = p
        self.out_channels = config.in_channels
        self.conv_in = CausalConv3d(config.latent_channels, widths[-1], (3, 3, 3))
        self.stages = nn.ModuleList()
        for i in reversed(range(len(widths))):
            stage = nn.Module()
            stage.blocks = nn.ModuleList([ResBlock(widths[i], _block_kernel(i, config)) for _ in range(config.blocks_per_stage)])
            if i > 0:
                stage.up = Upsample(widths[i], widths[i - 1], config.temporal_downsample[i - 1])
            self.stages.append(stage)
        self.norm_out = ChannelNorm(widths[0])
        self.conv_out = CausalConv3d(widths[0], config.in_channels * p * p, (3, 3, 3))

    def forward(self, z, cache=None):
        # z: (B, latent_channels, t, h, w) -> (B, 3, T, s h, s w), s = spatial_factor
        h = self.conv_in(z, cache)
        for stage in self.stages:
            for block in stage.blocks:
                h = block(h, cache)
            if hasattr(stage, "up"):
                h = stage.up(h, cache)
        x = self.conv_out(F.silu(self.norm_out(h)), cache)
        B, _, T, H, W = x.shape
        p, C = self.patch_size, self.out_channels
        return x.view(B, C, p, p, T, H, W).permute(0, 1, 4, 5, 2, 6, 3).reshape(B, C, T, H * p, W * p)


class CausalVAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        if len(config.temporal_downsample) != len(config.channel_mults) - 1:
            raise ValueError("temporal_downsample needs one entry per downsample (len(channel_mults) - 1)")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # Per-channel statistics of the raw latent, measured after training (see
        # model/train.py) so that encode() hands the transformer unit-variance latents.
        self.register_buffer("latent_mean", torch.zeros(1, config.latent_channels, 1, 1, 1))
        self.register_buffer("latent_std", torch.ones(1, config.latent_channels, 1, 1, 1))
        self.initialize_weights()

    def initialize_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
                nn.init.zeros_(module.bias)
        # Residual branches start as the identity (as in Goyal et al., 2017 / DiT's zero init).
        for module in self.modules():
            if isinstance(module, ResBlock):
                nn.init.zeros_(module.conv2.conv.weight)

    def check_input(self, x):
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected video of shape (B, {self.config.in_channels}, T, H, W), got {tuple(x.shape)}")
        T, H, W = x.shape[2:]
        tf, sf = self.config.temporal_factor, self.config.spatial_factor
        if (T - 1) % tf:
            raise ValueError(f"frame count must be 1 + {tf}k, got {T}")
        if H % sf or W % sf:
            raise ValueError(f"height and width must be multiples of {sf}, got {H}x{W}")

    def encode_raw(self, x):
        self.check_input(x)
        return self.encoder(x)

    def encode(self, x):
        # x: (B, 3, 1 + 4k, H, W) in [-1, 1] -> (B, C, 1 + k, H/s, W/s), ~zero mean, unit variance
        return (self.encode_raw(x) - self.latent_mean) / self.latent_std

    def decode(self, z, chunk_latent_frames: int | None = None):
        # z: (B, C, 1 + k, h, w) normalised -> (B, 3, 1 + 4k, s h, s w) in [-1, 1]
        z = z * self.latent_std + self.latent_mean
        chunk = chunk_latent_frames or self.config.decode_chunk_latent_frames
        cache: dict = {}
        pieces = [self.decoder(z[:, :, i : i + chunk], cache) for i in range(0, z.shape[2], chunk)]
        return torch.cat(pieces, dim=2).clamp(-1, 1)

    def forward(self, x):
        # Training: the reconstruction before clamping and the raw latent (for its penalty).
        z = self.encode_raw(x)
        return self.decoder(z), z
