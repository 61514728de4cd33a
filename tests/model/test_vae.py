"""The causal autoencoder: shapes, causality, chunked decoding, size limits."""

import pytest
import torch

from model.config import preset
from model.vae import CausalVAE


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    model = CausalVAE(preset("tiny").vae).eval()
    # Random weights everywhere (the zero-initialised residual branches would hide mistakes).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.latent_mean.normal_()
        model.latent_std.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("frames", [1, 9, 17, 33])
@pytest.mark.parametrize("width,height", [(64, 64), (112, 64), (64, 112)])
def test_shapes(vae, frames, width, height):
    x = torch.rand(1, 3, frames, height, width) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x)
        assert z.shape == (1, vae.config.latent_channels, 1 + (frames - 1) // 4, height // 8, width // 8)
        y = vae.decode(z)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1


def test_encoder_is_causal(vae):
    x = torch.rand(1, 3, 17, 64, 64) * 2 - 1
    changed = x.clone()
    changed[:, :, 5] = torch.rand(3, 64, 64)  # frame 5 belongs to latent frame 2 (frames 5..8)
    with torch.no_grad():
        z, z_changed = vae.encode(x), vae.encode(changed)
    assert torch.equal(z[:, :, :2], z_changed[:, :, :2])
    assert not torch.allclose(z[:, :, 2], z_changed[:, :, 2])


def test_first_frame_is_encoded_alone(vae):
    # The still image and the first frame of a clip share latent frame 0.
    x = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(vae.encode(x[:, :, :1])[:, :, 0], vae.encode(x)[:, :, 0], atol=1e-6)


def test_decoder_is_causal(vae):
    z = torch.randn(1, vae.config.latent_channels, 5, 8, 8)
    changed = z.clone()
    changed[:, :, 3] += 1.0  # latent frame 3 decodes to frames 9..12
    with torch.no_grad():
        y, y_changed = vae.decode(z), vae.decode(changed)
    assert torch.equal(y[:, :, :9], y_changed[:, :, :9])
    assert not torch.allclose(y[:, :, 9:13], y_changed[:, :, 9:13])


@pytest.mark.parametrize("chunk", [1, 2, 3, 4])
def test_chunked_decode_equals_whole_decode(vae, chunk):
    z = torch.randn(2, vae.config.latent_channels, 9, 8, 14)
    with torch.no_grad():
        whole = vae.decode(z, chunk_latent_frames=100)
        chunked = vae.decode(z, chunk_latent_frames=chunk)
    assert chunked.shape == (2, 3, 33, 64, 112)
    assert (whole - chunked).abs().max().item() < 1e-4


def test_latent_normalisation_round_trips(vae):
    x = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    with torch.no_grad():
        raw = vae.encode_raw(x)
        assert torch.allclose(vae.encode(x) * vae.latent_std + vae.latent_mean, raw, atol=1e-5)


@pytest.mark.parametrize(
    "shape,message",
    [((1, 3, 8, 64, 64), r"1 \+ 4k"), ((1, 3, 9, 60, 64), "multiples of 8"), ((3, 9, 64, 64), "expected video")],
)
def test_bad_input_is_named(vae, shape, message):
    with pytest.raises(ValueError, match=message):
        vae.encode(torch.zeros(shape))


def test_tiny_vae_is_small():
    # The whole tiny model (autoencoder + transformer) must stay under 1M parameters.
    assert sum(p.numel() for p in CausalVAE(preset("tiny").vae).parameters()) < 200_000


def test_gradients_reach_every_parameter():
    model = CausalVAE(preset("tiny").vae)
    recon, latent = model(torch.rand(1, 3, 9, 32, 32) * 2 - 1)
    (recon.pow(2).mean() + latent.pow(2).mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
