"""Rectified flow: loss, timesteps and their shift, Euler/Heun samplers, guidance."""

import pytest
import torch

from model.config import FlowConfig
from model.flow import (
    classifier_free_guidance,
    flow_matching_loss,
    make_noise,
    sample,
    sample_timesteps,
    schedule,
    shift_timesteps,
    timestep_shift,
    to_velocity,
)

CONFIG = FlowConfig(base_tokens=256, base_shift=1.0, max_shift=3.0)


def test_shift_grows_with_token_count_and_is_clamped():
    assert timestep_shift(64, CONFIG) == 1.0  # below base_tokens: base_shift
    assert timestep_shift(256, CONFIG) == 1.0
    assert timestep_shift(1024, CONFIG) == pytest.approx(2.0)  # sqrt(4)
    assert timestep_shift(100_000, CONFIG) == 3.0  # max_shift
    shifts = [timestep_shift(n, CONFIG) for n in (256, 400, 900, 1600, 2304)]
    assert shifts == sorted(shifts) and len(set(shifts)) == len(shifts)


def test_shifted_timesteps_keep_the_ends_and_move_towards_noise():
    t = torch.linspace(0, 1, 11)
    shifted = shift_timesteps(t, 1024, CONFIG)  # shift 2
    assert shifted[0] == 0 and shifted[-1] == 1
    assert torch.allclose(shifted, 2 * t / (1 + t))
    assert (shifted[1:-1] > t[1:-1]).all()
    per_sample = shift_timesteps(torch.tensor([0.5, 0.5]), [256, 1024], CONFIG)
    assert per_sample.tolist() == pytest.approx([0.5, 2 / 3])


def test_logit_normal_timesteps_are_seeded_and_centred():
    a = sample_timesteps(4000, torch.Generator().manual_seed(0), CONFIG)
    b = sample_timesteps(4000, torch.Generator().manual_seed(0), CONFIG)
    assert torch.equal(a, b)
    assert ((a > 0) & (a < 1)).all()
    assert a.median().item() == pytest.approx(0.5, abs=0.03)
    # Logit-normal puts less mass at the ends than uniform: P(t < 0.1) = P(n < -2.197) ~ 1.4%
    assert (a < 0.1).float().mean().item() < 0.04
    shifted_mean = sample_timesteps(4000, torch.Generator().manual_seed(0), FlowConfig(logit_normal_mean=1.0))
    assert shifted_mean.median().item() > 0.65


def test_loss_is_zero_for_the_true_velocity_and_the_mse_otherwise():
    torch.manual_seed(0)
    x0 = [torch.randn(4, 3, 4, 4), torch.randn(4, 1, 2, 6)]
    noise = [torch.randn_like(x) for x in x0]
    t = torch.tensor([0.3, 0.8])
    seen = {}

    def true_velocity(x_list, timesteps):
        seen["x"], seen["t"] = x_list, timesteps
        return [n - x for n, x in zip(noise, x0)]

    assert flow_matching_loss(true_velocity, x0, t, noise).item() == pytest.approx(0.0, abs=1e-12)
    # The network saw x_t = (1 - t) x0 + t noise. Absolute tolerance: in float32, 1 - 0.8 is not
    # exactly 0.2, so a value near zero differs from the expected one by ~1e-7 relative to its inputs.
    assert torch.allclose(seen["x"][1], 0.2 * x0[1] + 0.8 * noise[1], atol=1e-6)
    assert torch.equal(seen["t"], t)
    zero = flow_matching_loss(lambda x, _: [torch.zeros_like(v) for v in x], x0, t, noise)
    cells = sum(x.numel() for x in x0)
    expected = sum(((n - x) ** 2).sum() for n, x in zip(noise, x0)) / cells
    assert zero.item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_weight_multiplies_each_cells_squared_error():
    torch.manual_seed(0)
    x0 = [torch.randn(4, 3, 4, 4), torch.randn(4, 1, 2, 6)]
    noise = [torch.randn_like(x) for x in x0]
    t = torch.tensor([0.3, 0.8])

    def zero(x, _):
        return [torch.zeros_like(v) for v in x]

    weight = torch.ones(1, 3, 4, 4)
    weight[:, :, :2] = 5.0  # the top half of the first sample's cells, over every channel
    weighted = flow_matching_loss(zero, x0, t, noise, [weight, None])
    squared = [(n - x) ** 2 for n, x in zip(noise, x0)]
    expected = ((squared[0] * weight).sum() + squared[1].sum()) / sum(x.numel() for x in x0)
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)
    assert weighted > flow_matching_loss(zero, x0, t, noise)
    assert flow_matching_loss(zero, x0, t, noise, [None, None]).item() == flow_matching_loss(zero, x0, t, noise).item()


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_samplers_follow_a_straight_path_exactly(sampler):
    # For a single data point x0, the rectified-flow velocity is (x_t - x0) / t: a
    # straight line that any number of steps of either sampler follows exactly.
    x0 = [torch.randn(2, 3, 4, 4), torch.randn(2, 1, 2, 2)]

    def velocity_fn(x_list, t):
        return [(x - target) / tb for x, target, tb in zip(x_list, x0, t)]

    noise = [torch.randn_like(x) for x in x0]
    out = sample(velocity_fn, noise, steps=3, sampler=sampler, shifts=[1.0, 2.5])
    for o, target in zip(out, x0):
        assert torch.allclose(o, target, atol=1e-5)


def test_heun_is_more_accurate_than_euler_on_a_curved_flow():
    # Data N(0, sigma^2): the exact velocity is linear in x_t and the exact flow maps noise n to sigma * n.
    sigma = 0.3

    def velocity_fn(x_list, t):
        return [x * (tb - (1 - tb) * sigma**2) / ((1 - tb) ** 2 * sigma**2 + tb**2) for x, tb in zip(x_list, t)]

    noise = [torch.randn(1000, dtype=torch.float64)]
    errors = {}
    for name in ("euler", "heun"):
        out = sample(velocity_fn, noise, steps=16, sampler=name)
        errors[name] = (out[0] - sigma * noise[0]).abs().max().item()
    # Second order: Heun's error is several times smaller at the same step count (0.018 vs 0.11 here).
    assert errors["heun"] < errors["euler"] / 4
    assert errors["heun"] < 0.03


def test_on_step_reports_every_step_and_its_exception_stops_sampling():
    calls = []
    evaluations = []

    def velocity_fn(x_list, t):
        evaluations.append(t.clone())
        return [torch.zeros_like(x) for x in x_list]

    sample(velocity_fn, [torch.zeros(1)], steps=5, on_step=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 5) for i in range(1, 6)]
    assert len(evaluations) == 5
    assert evaluations[0].item() == 1.0

    class Cancelled(Exception):
        pass

    def cancel_at_two(i, n):
        if i == 2:
            raise Cancelled()

    evaluations.clear()
    with pytest.raises(Cancelled):
        sample(velocity_fn, [torch.zeros(1)], steps=5, sampler="heun", on_step=cancel_at_two)
    assert len(evaluations) == 4  # two Heun steps, then nothing more


def test_heun_evaluates_twice_per_step_except_the_last():
    count = []

    def velocity_fn(x_list, t):
        count.append(1)
        return [torch.zeros_like(x) for x in x_list]

    sample(velocity_fn, [torch.zeros(1)], steps=4, sampler="heun")
    assert len(count) == 7


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        sample(lambda x, t: x, [torch.zeros(1)], steps=0)
    with pytest.raises(ValueError, match="sampler"):
        sample(lambda x, t: x, [torch.zeros(1)], steps=1, sampler="ddim")


def test_schedule_runs_from_noise_to_data():
    t = schedule(4, 1.0)
    assert t.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    shifted = schedule(4, 3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and (shifted[1:-1] > t[1:-1]).all()


def test_guidance_uses_one_call_with_conditional_then_unconditional_rows():
    calls = []
    x = [torch.full((2, 1, 2, 2), 1.0), torch.full((2, 1, 4, 2), 2.0)]

    def rows(x_rows, t_rows):
        calls.append((len(x_rows), t_rows.clone()))
        # Conditional rows answer 3 * x, unconditional rows answer x.
        return [xr * 3 if i < 2 else xr.clone() for i, xr in enumerate(x_rows)]

    guided = classifier_free_guidance(rows, [2.0, 0.5])
    v = guided(x, torch.tensor([0.9, 0.4]))
    assert len(calls) == 1 and calls[0][0] == 4
    assert calls[0][1].tolist() == pytest.approx([0.9, 0.4, 0.9, 0.4])
    # v_u + g (v_c - v_u) = x + g * 2x
    assert torch.allclose(v[0], x[0] * 5)
    assert torch.allclose(v[1], x[1] * 2)


def test_noise_depends_only_on_seed_and_shape():
    a = make_noise((4, 5, 8, 8), seed=7)
    assert torch.equal(a, make_noise((4, 5, 8, 8), seed=7))
    assert not torch.equal(a, make_noise((4, 5, 8, 8), seed=8))
    # The global generator plays no part.
    torch.manual_seed(123)
    assert torch.equal(a, make_noise((4, 5, 8, 8), seed=7))
    assert a.std().item() == pytest.approx(1.0, abs=0.1)


def test_a_clean_latent_prediction_becomes_the_velocity_it_implies():
    torch.manual_seed(0)
    x0 = [torch.randn(4, 3, 4, 4), torch.randn(4, 1, 2, 6), torch.randn(4, 1, 2, 2)]
    noise = [torch.randn_like(x) for x in x0]
    t = torch.tensor([0.3, 0.8, 0.01])
    noisy = [(1 - tb) * x + tb * n for x, n, tb in zip(x0, noise, t)]
    velocity = FlowConfig(prediction="velocity")
    assert to_velocity(x0, noisy, t, velocity) is x0  # the network's outputs, untouched
    v = to_velocity(x0, noisy, t, FlowConfig(prediction="data"))
    for b in range(2):
        assert torch.allclose(v[b], noise[b] - x0[b], atol=1e-5)
    # Near t = 0 the division is held at t = 0.05, so the velocity stays finite and small.
    assert torch.allclose(v[2], (noisy[2] - x0[2]) / 0.05)
    with pytest.raises(ValueError, match="flow.prediction"):
        FlowConfig(prediction="noise")
