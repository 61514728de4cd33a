"""A patch discriminator for the decoder stage: an adversarial loss against blur.

A decoder trained on L1 and squared error alone draws the mean of what a latent
may hold, and where a latent leaves a detail uncertain (the corner of a small
square, a shape in motion) the mean is soft: the corner comes out rounded. A
discriminator that judges small patches of frames as real renders or decoded
ones rewards the decoder for drawing a definite edge instead (PatchGAN, Isola et
al., 2017; the autoencoders of VQGAN, Esser et al., 2021, and Stable Diffusion,
Rombach et al., 2022). Frames are judged one by one; its receptive field is 18
pixels, about a medium object at 64x64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 32):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.GroupNorm(8, 2 * width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )

    def forward(self, video):
        # video: (B, 3, T, H, W) in [-1, 1] -> (B*T, 1, H/4, W/4) logits, one per patch of a frame
        B, C, T, H, W = video.shape
        return self.layers(video.transpose(1, 2).reshape(B * T, C, H, W))


# Hinge losses (Lim & Ye, 2017; as VQGAN trains its discriminator).
def discriminator_loss(real_logits, fake_logits):
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_loss(fake_logits):
    return -fake_logits.mean()


def adaptive_weight(reconstruction_loss, adversarial_loss, last_layer: torch.Tensor, max_weight: float = 1e4):
    """VQGAN's balance: the adversarial loss scaled so that its gradient at the decoder's last layer is
    as large as the reconstruction loss's, whatever the two losses' scales."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0, max_weight).detach()
