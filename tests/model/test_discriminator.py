"""The decoder stage's patch discriminator and the balance of its loss."""

import torch

from model.discriminator import (
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)


def test_every_frame_gets_a_map_of_patch_logits():
    logits = PatchDiscriminator()(torch.zeros(2, 3, 5, 64, 112))
    assert logits.shape == (10, 1, 16, 28)


def test_the_hinge_losses_reward_telling_real_from_drawn_and_fooling():
    sure = torch.full((4, 1, 2, 2), 2.0)
    assert discriminator_loss(sure, -sure) == 0  # right with a margin: nothing to learn
    assert discriminator_loss(-sure, sure) == 6.0
    assert generator_loss(sure) < generator_loss(-sure)


def test_the_adaptive_weight_matches_the_gradients_at_the_last_layer():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    out = layer(torch.randn(8, 4))
    reconstruction, adversarial = (out - 1).pow(2).mean(), 100.0 * out.mean()
    weight = adaptive_weight(reconstruction, adversarial, layer.weight)
    rec_grad = torch.autograd.grad(reconstruction, layer.weight, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(weight * adversarial, layer.weight)[0]
    assert weight < 0.1 and torch.isclose(adv_grad.norm(), rec_grad.norm(), rtol=1e-3)
