"""Spacetime patches, NaViT packing and 3D rotary positions."""

import dataclasses

import pytest
import torch

from model.config import DiTConfig, preset
from model.dit import DiT, attend_by_runs
from model.patches import (
    Rope3D,
    apply_rotary,
    grid_fractions,
    grid_positions,
    length_runs,
    num_tokens,
    pack,
    pack_layout,
    patchify,
    token_grid,
    unpack,
    unpatchify,
)


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter (the zero-initialised ones too) gets small random values, so outputs depend on everything."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return module


def test_patchify_roundtrip_and_order():
    x = torch.randn(4, 5, 6, 8)
    tokens = patchify(x, (1, 2, 2))
    assert tokens.shape == (5 * 3 * 4, 4 * 1 * 2 * 2)
    assert torch.equal(unpatchify(tokens, (5, 3, 4), 4, (1, 2, 2)), x)
    # Token (t=2, h=1, w=3) holds the 2x2 cell at rows 2..3, columns 6..7 of frame 2, channel-major.
    index = (2 * 3 + 1) * 4 + 3
    assert torch.equal(tokens[index].view(4, 1, 2, 2), x[:, 2:3, 2:4, 6:8])
    assert torch.equal(grid_positions((5, 3, 4))[index], torch.tensor([2, 1, 3]))


def test_fractions_place_each_token_in_its_own_clip():
    fractions = grid_fractions((5, 2, 4))
    assert fractions.shape == (40, 3)
    # Same raster order as patchify: token (t=4, h=1, w=2) is the last frame, lower half, third column.
    assert torch.equal(fractions[(4 * 2 + 1) * 4 + 2], torch.tensor([1.0, 0.75, 0.625]))
    assert torch.equal(fractions[:, 0].unique(), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    # A still is a first frame.
    assert torch.equal(grid_fractions((1, 2, 2))[:, 0], torch.zeros(4))
    # Fractions do not depend on the canvas size: a column of a twice-as-wide grid sits midway between two.
    narrow, wide = grid_fractions((1, 1, 8))[:, 2], grid_fractions((1, 1, 16))[:, 2]
    assert torch.allclose(narrow, wide.view(8, 2).mean(1))


def test_patchify_rejects_shapes_the_patch_does_not_divide():
    with pytest.raises(ValueError, match="patch size"):
        patchify(torch.randn(4, 5, 6, 7), (1, 2, 2))


def test_pack_unpack_roundtrip_mixed_shapes():
    latents = [torch.randn(4, 5, 8, 8), torch.randn(4, 1, 8, 14), torch.randn(4, 9, 12, 6)]
    grids = [token_grid(x.shape, (1, 2, 2)) for x in latents]
    assert [num_tokens(x.shape, (1, 2, 2)) for x in latents] == [80, 28, 162]
    tokens = pack(latents, (1, 2, 2))
    assert tokens.shape == (80 + 28 + 162, 16)
    packing = pack_layout(grids, torch.ones(3, 2, dtype=torch.bool), Rope3D(32))
    for a, b in zip(unpack(tokens, packing, 4, (1, 2, 2)), latents):
        assert torch.equal(a, b)


def test_masks_are_block_diagonal_and_text_is_per_sample():
    text_mask = torch.tensor([[True, True, False], [True, True, True]])
    packing = pack_layout([(1, 2, 2), (2, 1, 1)], text_mask, Rope3D(16))
    ids = torch.tensor([0, 0, 0, 0, 1, 1])
    assert torch.equal(packing.sample_ids, ids)
    assert packing.runs == [(1, 4), (1, 2)]  # the self-attention mask's diagonal blocks
    # Sample 0 sees its two valid text tokens, sample 1 its three; padding is dropped.
    assert torch.equal(packing.text_index, torch.tensor([0, 1, 3, 4, 5]))
    text_ids = torch.tensor([0, 0, 1, 1, 1])
    assert torch.equal(packing.cross_mask == 0, ids[:, None] == text_ids[None, :])
    # Samples of one length are one block of samples: they attend as a batch.
    assert pack_layout([(1, 2, 2), (4, 1, 1)], text_mask, Rope3D(16)).runs == [(2, 4)]
    assert length_runs([80, 80, 252, 80, 80, 80]) == [(2, 80), (1, 252), (3, 80)]
    with pytest.raises(ValueError, match="text token"):
        pack_layout([(1, 1, 1)], torch.zeros(1, 3, dtype=torch.bool), Rope3D(16))


def test_attention_block_by_block_equals_attention_under_the_whole_block_diagonal_mask():
    lengths = [5, 5, 3, 7, 7, 7]
    ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    mask = torch.zeros(len(ids), len(ids)).masked_fill(ids[:, None] != ids[None, :], float("-inf"))
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, len(ids), 8, generator=generator, requires_grad=True) for _ in range(3))
    runs = length_runs(lengths)
    assert runs == [(2, 5), (1, 3), (3, 7)]
    by_runs = attend_by_runs(q, k, v, runs)
    masked = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert by_runs.shape == masked.shape == (1, 2, 34, 8)
    assert (by_runs - masked).abs().max() < 1e-5
    # Training goes through it too: the gradients agree.
    weights = torch.randn(masked.shape, generator=generator)
    by_runs_grads = torch.autograd.grad((by_runs * weights).sum(), (q, k, v))
    masked_grads = torch.autograd.grad((masked * weights).sum(), (q, k, v))
    for a, b in zip(by_runs_grads, masked_grads):
        assert (a - b).abs().max() < 1e-5 and a.abs().max() > 1e-3


def test_rope_splits_pairs_over_axes_and_is_relative():
    rope = Rope3D(64, (2, 3, 3))
    assert rope.pairs == (8, 12, 12)
    assert sum(Rope3D(72, (2, 3, 3)).pairs) == 36
    grid = (4, 5, 6)
    cos, sin = rope.tables(grid, "cpu")
    assert cos.shape == (120, 64)
    assert rope.tables(grid, "cpu")[0] is cos  # cached
    q, k = torch.randn(64), torch.randn(64)
    positions = grid_positions(grid).tolist()

    def score(a, b):
        qa = apply_rotary(q[None], cos[a : a + 1], sin[a : a + 1])
        kb = apply_rotary(k[None], cos[b : b + 1], sin[b : b + 1])
        return (qa * kb).sum().item()

    def index(t, h, w):
        return positions.index([t, h, w])

    # The attention score depends only on the offset in (t, h, w), along every axis.
    for offset in [(1, 0, 0), (0, 2, 0), (0, 0, 3), (1, 1, 1)]:
        a = score(index(*offset), index(0, 0, 0))
        b = score(index(2 + offset[0], 1 + offset[1], 2 + offset[2]), index(2, 1, 2))
        assert a == pytest.approx(b, abs=1e-4)
    # ... and it does change with the offset along each axis.
    base = score(index(0, 0, 0), index(0, 0, 0))
    for offset in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]:
        assert abs(score(index(*offset), index(0, 0, 0)) - base) > 1e-4


@pytest.mark.parametrize("output_conv_channels", [0, 4])
def test_packed_forward_equals_separate_forward_passes(output_conv_channels):
    torch.manual_seed(0)
    config = dataclasses.replace(preset("tiny").dit, output_conv_channels=output_conv_channels)
    dit = randomize(DiT(config), seed=1).eval()
    C = config.latent_channels
    # Two samples of one length side by side (one block of the mask) among others.
    latents = [torch.randn(C, 5, 8, 8), torch.randn(C, 5, 8, 8), torch.randn(C, 1, 8, 14), torch.randn(C, 9, 6, 12)]
    timesteps = torch.tensor([0.9, 0.5, 0.3, 0.6])
    text_states = torch.randn(4, 7, 384)
    text_mask = torch.zeros(4, 7, dtype=torch.bool)
    for row, length in enumerate((7, 4, 3, 5)):
        text_mask[row, :length] = True
    assert dit.prepare([x.shape for x in latents], text_mask).runs == [(2, 80), (1, 28), (1, 162)]
    with torch.no_grad():
        packed = dit(latents, timesteps, text_states, text_mask)
        for i in range(4):
            length = int(text_mask[i].sum())
            alone = dit([latents[i]], timesteps[i : i + 1], text_states[i : i + 1, :length], text_mask[i : i + 1, :length])
            assert packed[i].shape == latents[i].shape
            assert (packed[i] - alone[0]).abs().max().item() < 1e-4
            assert alone[0].abs().max().item() > 1e-2  # a real output, not zeros


def test_samples_of_one_length_attend_apart_without_a_mask():
    config = preset("tiny").dit
    dit = randomize(DiT(config), seed=3).eval()
    latents = [torch.randn(config.latent_channels, 5, 8, 8) for _ in range(3)]
    timesteps = torch.tensor([0.8, 0.4, 0.1])
    text_states = torch.randn(3, 6, 384)
    text_mask = torch.ones(3, 6, dtype=torch.bool)
    text_mask[1, 4:] = False
    assert dit.prepare([x.shape for x in latents], text_mask).runs == [(3, 80)]
    with torch.no_grad():
        packed = dit(latents, timesteps, text_states, text_mask)
        for i in range(3):
            length = int(text_mask[i].sum())
            alone = dit([latents[i]], timesteps[i : i + 1], text_states[i : i + 1, :length], text_mask[i : i + 1, :length])
            assert (packed[i] - alone[0]).abs().max().item() < 1e-4
            assert alone[0].abs().max().item() > 1e-2


def test_prepared_packing_gives_the_same_output():
    config = DiTConfig(latent_channels=4, hidden_size=32, depth=1, num_heads=2)
    dit = randomize(DiT(config), seed=2).eval()
    latents = [torch.randn(4, 2, 4, 4), torch.randn(4, 1, 2, 6)]
    text_states, text_mask = torch.randn(2, 3, 384), torch.ones(2, 3, dtype=torch.bool)
    packing = dit.prepare([x.shape for x in latents], text_mask)
    with torch.no_grad():
        a = dit(latents, torch.tensor([0.5, 0.2]), text_states, text_mask)
        b = dit(latents, torch.tensor([0.5, 0.2]), text_states, text_mask, packing=packing)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
