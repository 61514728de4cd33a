"""The DiT: identity blocks at init, conditioning, parameter counts, and that it learns."""

import dataclasses

import pytest
import torch

from model.config import preset
from model.dit import DiT, DiTBlock, count_parameters, gelu_tanh
from model.flow import flow_matching_loss
from model.patches import grid_fractions, patchify
from model.vae import CausalVAE


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter (the zero-initialised ones too) gets small random values, so outputs depend on everything."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return module


def tiny_inputs():
    C = preset("tiny").dit.latent_channels
    latents = [torch.randn(C, 5, 8, 8), torch.randn(C, 1, 6, 10)]
    text_states = torch.randn(2, 6, 384)
    text_mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    return latents, torch.tensor([0.7, 0.2]), text_states, text_mask


def test_every_block_is_the_identity_at_init():
    torch.manual_seed(0)
    dit = DiT(preset("tiny").dit).eval()
    latents, timesteps, text_states, text_mask = tiny_inputs()
    packing = dit.prepare([x.shape for x in latents], text_mask)
    D = dit.config.hidden_size
    N = sum(packing.lengths)
    x = torch.randn(1, N, D)  # the two samples differ in length: one packed row
    # A non-trivial shared modulation: the block's zero-initialised table and the
    # zero-initialised shared projection both have to be zero for this to hold.
    modulation = dit.t_modulation(dit.t_embedder(timesteps)).view(2, 6, D)[packing.sample_ids][None]
    text = torch.randn(int(text_mask.sum()), D)
    with torch.no_grad():
        for block in dit.blocks:
            assert isinstance(block, DiTBlock)
            assert torch.equal(block(x, modulation, text, packing), x)
        # Its parts are not trivial: the self-attention branch itself is non-zero.
        rope = (packing.rope_cos, packing.rope_sin)
        assert dit.blocks[0].attn(x, packing.runs, rope=rope).abs().max() > 0
        # The final layer is zero too, so the untrained network predicts zero velocity.
        out = dit(latents, timesteps, text_states, text_mask)
    assert all(torch.equal(o, torch.zeros_like(x0)) for o, x0 in zip(out, latents))


def test_identity_blocks_of_a_trained_network_add_nothing_whatever_the_shared_modulation():
    dit = randomize(DiT(preset("tiny").dit), seed=3).eval()  # every weight non-zero, as a trained network's
    latents, timesteps, _, text_mask = tiny_inputs()
    packing = dit.prepare([x.shape for x in latents], text_mask)
    D = dit.config.hidden_size
    x = torch.randn(1, sum(packing.lengths), D)
    modulation = dit.t_modulation(dit.t_embedder(timesteps)).view(2, 6, D)[packing.sample_ids][None]
    text = torch.randn(int(text_mask.sum()), D)
    with torch.no_grad():
        assert not torch.allclose(dit.blocks[1](x, modulation, text, packing), x, atol=1e-3)
        dit.make_identity_blocks([1])
        assert torch.equal(dit.blocks[1](x, modulation, text, packing), x)
        assert not torch.allclose(dit.blocks[0](x, modulation, text, packing), x, atol=1e-3)  # the others untouched


def test_output_depends_on_timestep_text_and_latent():
    torch.manual_seed(0)
    dit = randomize(DiT(preset("tiny").dit), seed=3).eval()
    latents, timesteps, text_states, text_mask = tiny_inputs()
    with torch.no_grad():
        base = dit(latents, timesteps, text_states, text_mask)
        other_t = dit(latents, timesteps.flip(0), text_states, text_mask)
        other_text = dit(latents, timesteps, text_states + 1, text_mask)
        other_latent = dit([latents[0] * 2, latents[1]], timesteps, text_states, text_mask)
    for o, x in zip(base, latents):
        assert o.shape == x.shape
    assert (base[0] - other_t[0]).abs().max() > 1e-3
    assert (base[0] - other_text[0]).abs().max() > 1e-3
    assert (base[0] - other_latent[0]).abs().max() > 1e-3
    # The second sample did not change, and packing keeps it apart from the first.
    assert (base[1] - other_latent[1]).abs().max() < 1e-5
    # Padding beyond a sample's text mask is ignored.
    padded = text_states.clone()
    padded[1, 3:] = 100.0
    with torch.no_grad():
        assert (dit(latents, timesteps, padded, text_mask)[1] - base[1]).abs().max() < 1e-5


def test_parameters_of_tiny_including_its_vae_under_one_million():
    config = preset("tiny")
    total = count_parameters(DiT(config.dit)) + count_parameters(CausalVAE(config.vae))
    assert total < 1_000_000


@pytest.mark.parametrize(
    "name, millions",
    [
        ("shapes-s", 5.37),  # 192 wide, 8 deep: ~5M (adaLN-single keeps the modulation to one 192 x 1152 map)
        ("shapes-s2", 5.41),  # the same network over 1x4x4 patches: a wider patch embedding and output layer
        ("shapes-s3", 5.41),  # the transformer of shapes-s2 (only its autoencoder differs)
        ("shapes-s4", 5.41),  # shapes-s2 and its fractional positions (checked exactly below)
        ("shapes-s5", 5.41),  # shapes-s4 (only its training timesteps differ)
        ("shapes-s6", 5.41),  # shapes-s5 (only its training loss's weights differ)
        ("shapes-s7", 5.41),  # shapes-s5 (only what the network is trained to output differs)
        ("shapes-s8", 5.41),  # shapes-s5 (only its training loss's weights differ)
        ("shapes-s9", 5.41),  # shapes-s5 (only its autoencoder's loss weights differ)
        ("b", 120.0),  # 768 x 12
        ("l", 414.5),  # 1024 x 24
        ("xl", 1034.6),  # 1152 x 48: about 1B, the size of Open-Sora 1.2's STDiT3-XL (1.1B)
    ],
)
def test_stated_parameter_counts(name, millions):
    with torch.device("meta"):
        dit = DiT(preset(name).dit)
    assert count_parameters(dit) / 1e6 == pytest.approx(millions, rel=0.005)


def test_training_reduces_the_flow_matching_loss():
    # A few optimiser steps on one fixed packed batch must fit it better: gradients
    # reach every layer through the zero-initialised gates.
    torch.manual_seed(0)
    dit = DiT(preset("tiny").dit)
    latents, _, text_states, text_mask = tiny_inputs()
    noise = [torch.randn_like(x) for x in latents]
    timesteps = torch.tensor([0.5, 0.5])
    packing = dit.prepare([x.shape for x in latents], text_mask)

    def velocity_fn(x_list, t):
        return dit(x_list, t, text_states, text_mask, packing=packing)

    optimizer = torch.optim.Adam(dit.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = flow_matching_loss(velocity_fn, latents, timesteps, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert dit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_pooled_text_starts_at_zero_ignores_padding_and_carries_the_prompt():
    torch.manual_seed(0)
    dit = DiT(dataclasses.replace(preset("tiny").dit, pooled_text=True)).eval()
    latents, timesteps, text_states, text_mask = tiny_inputs()
    with torch.no_grad():
        start = dit.pooled_embedder(text_states.mean(1))
        assert torch.equal(start, torch.zeros_like(start))  # the network starts as without it
        randomize(dit, seed=3)
        base = dit(latents, timesteps, text_states, text_mask)
        padded = text_states.clone()
        padded[1, 3:] = 100.0  # beyond sample 1's mask: the mean must not see it
        assert (dit(latents, timesteps, padded, text_mask)[1] - base[1]).abs().max() < 1e-5
        # With every cross-attention silenced, the prompt still reaches the output through the pool.
        for block in dit.blocks:
            block.cross_attn.proj.weight.zero_()
            block.cross_attn.proj.bias.zero_()
        silenced = dit(latents, timesteps, text_states, text_mask)
        other_prompt = dit(latents, timesteps, text_states + 1, text_mask)
    assert (silenced[0] - other_prompt[0]).abs().max() > 1e-3


@pytest.mark.parametrize("fractional_positions", [False, True])
def test_only_fractional_positions_tell_a_token_where_it_is(fractional_positions):
    # A latent that is the same at every token, as pure noise is on average. Rotary attention sees
    # only offsets and every value is the same, so without fractional positions every token
    # gets the same output: the network could not put an object anywhere in particular.
    torch.manual_seed(0)
    config = dataclasses.replace(preset("tiny").dit, fractional_positions=fractional_positions)
    dit = randomize(DiT(config), seed=3).eval()
    C = config.latent_channels
    latent = torch.randn(C, 1, 1, 1).expand(C, 5, 8, 8).contiguous()
    with torch.no_grad():
        out = dit([latent], torch.tensor([1.0]), torch.randn(1, 4, 384), torch.ones(1, 4, dtype=torch.bool))[0]
    tokens = patchify(out, config.patch_size)  # (5 * 4 * 4, patch_dim)
    spread = (tokens - tokens[0]).abs().max()
    if fractional_positions:
        assert spread > 1e-2
    else:
        assert spread < 1e-4


def test_fractional_positions_start_at_a_fifth_or_more_of_a_noise_token_cost_one_small_map_and_restart_per_sample():
    config = preset("tiny").dit
    plain = randomize(DiT(config), seed=3).eval()
    placed = DiT(dataclasses.replace(config, fractional_positions=True))
    missing = placed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["position_embedder.linear.weight", "position_embedder.linear.bias"]
    # Six octaves of sine and cosine per axis, mapped to the width: 36 x D + D parameters.
    assert count_parameters(placed) - count_parameters(plain) == 36 * config.hidden_size + config.hidden_size
    # A fresh network's positions are not a vanishing part of a token: at least a fifth of the
    # embedding of unit-variance noise (a zero start left them for the slow final layer to grow).
    torch.manual_seed(0)
    fresh = DiT(dataclasses.replace(config, fractional_positions=True))
    fractions = grid_fractions((5, 4, 4))
    with torch.no_grad():
        positions = fresh.position_embedder(fractions).norm(dim=-1).mean()
        content = fresh.x_embedder(torch.randn(len(fractions), fresh.x_embedder.in_features)).norm(dim=-1).mean()
    assert positions > 0.2 * content
    latents, timesteps, text_states, text_mask = tiny_inputs()
    # Packed samples of different shapes each get their own clip's fractions.
    packing = placed.prepare([x.shape for x in latents], text_mask)
    first, second = packing.grids
    assert torch.equal(packing.fractions, torch.cat([grid_fractions(first), grid_fractions(second)]))


def test_gelu_without_gradients_is_the_tanh_gelu_and_with_them_keeps_its_gradient():
    x = torch.linspace(-30, 30, 100_001)
    expected = torch.nn.functional.gelu(x, approximate="tanh")
    assert (gelu_tanh(x) - expected).abs().max() < 1e-6
    assert (gelu_tanh(x.double()) - expected.double()).abs().max() < 1e-6
    assert gelu_tanh(x.double()).dtype == torch.float64
    leaf = torch.linspace(-4, 4, 101, requires_grad=True)
    gelu_tanh(leaf).sum().backward()
    reference = leaf.detach().clone().requires_grad_()
    torch.nn.functional.gelu(reference, approximate="tanh").sum().backward()
    assert torch.equal(leaf.grad, reference.grad)


def test_the_output_convolution_starts_at_zero_and_reads_only_the_neighbours_of_a_token_in_its_frame():
    tiny = preset("tiny").dit
    config = dataclasses.replace(tiny, output_conv_channels=4)
    plain = randomize(DiT(tiny), seed=4).eval()  # as a trained network without one
    dit = DiT(config).eval()
    assert set(dit.state_dict()) - set(plain.state_dict()) == {
        "output_conv.linear.weight", "output_conv.linear.bias", "output_conv.conv.weight", "output_conv.conv.bias"}
    dit.load_state_dict({**dit.state_dict(), **plain.state_dict()})
    latents, timesteps, text_states, text_mask = tiny_inputs()
    with torch.no_grad():
        before = plain(latents, timesteps, text_states, text_mask)
        after = dit(latents, timesteps, text_states, text_mask)
    assert all(b.abs().mean() > 1e-3 and torch.equal(b, a) for b, a in zip(before, after))

    # Trained, one token's state reaches the cells beside its own across the token border, in its
    # own frame of its own sample only (tiny's tokens are 1x2x2 cells).
    randomize(dit.output_conv, seed=5)
    packing = dit.prepare([x.shape for x in latents], text_mask)
    states = torch.zeros(sum(packing.lengths), config.hidden_size)
    token = 2 * 4 * 4 + 1 * 4 + 1  # sample 0 (grid 5x4x4): frame 2, token row 1, column 1 -> cells 2..3 x 2..3
    with torch.no_grad():
        quiet = dit.output_conv(states, packing)
        states[token] = torch.randn(config.hidden_size)
        corrections = dit.output_conv(states, packing)
    changed = (corrections[0] - quiet[0]).abs().sum(0) > 1e-6  # (t, h, w) cells of sample 0
    assert changed[2, 1:5, 1:5].all()  # the token's 2x2 cells and the ring of cells around them
    assert changed.sum() == 16 and torch.equal(corrections[1], quiet[1])
