"""Host-free tests of the torch-only core (no ComfyUI needed)."""
from __future__ import annotations

import math

import pytest
import torch

from pack import sub

diffusion = sub("core.diffusion")
training = sub("core.training")
conditioning = sub("core.conditioning")


class ToyDenoiser:
    """x_t = x0 + sigma * eps. The 'network' outputs eps (param='eps') or v (param='v', sigma_data=1)
    from a linear map of x_t and the conditioning vector, so the loss is differentiable in both."""

    def __init__(self, param="eps", dim=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.param = param
        self.w = torch.randn(dim, dim, generator=g) * 0.1

    def raw(self, x_t, sigma, cond):
        return x_t @ self.w + cond

    def add_noise(self, x0, noise, sigma):
        return x0 + noise * sigma.view(-1, 1)

    def predict_x0(self, x_t, sigma, cond):
        s = sigma.view(-1, 1)
        out = self.raw(x_t, sigma, cond)
        if self.param == "eps":
            return x_t - s * out
        return x_t / (s ** 2 + 1) - out * s / torch.sqrt(s ** 2 + 1)

    def output_scale(self, sigma, like):
        s = sigma.view(-1, 1)
        return -s if self.param == "eps" else -s / torch.sqrt(s ** 2 + 1)

    def sample_sigmas(self, n, generator):
        return torch.rand(n, generator=generator) * 2 + 0.1


@pytest.mark.parametrize("param", ["eps", "v"])
def test_loss_is_the_mse_of_the_models_own_output(param):
    den = ToyDenoiser(param)
    x0 = torch.randn(1, 8)
    noise = torch.randn(3, 8)
    sigma = torch.tensor([0.2, 1.0, 3.0])
    cond = torch.randn(1, 8)
    loss = diffusion.denoising_loss(den, x0, cond, noise, sigma)
    x_t = den.add_noise(x0.expand(3, 8), noise, sigma)
    s = sigma.view(-1, 1)
    target = noise if param == "eps" else (noise - s * x0) / torch.sqrt(s ** 2 + 1)  # eps or v
    expected = ((den.raw(x_t, sigma, cond) - target) ** 2).mean()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_wrong_parameterisation_gives_a_different_loss():
    """The same network read as eps or as v must not give the same loss (guards a hard-coded target)."""
    x0, noise, sigma, cond = torch.randn(1, 8), torch.randn(2, 8), torch.tensor([0.5, 2.0]), torch.randn(1, 8)
    eps = diffusion.denoising_loss(ToyDenoiser("eps"), x0, cond, noise, sigma)
    v = diffusion.denoising_loss(ToyDenoiser("v"), x0, cond, noise, sigma)
    assert not torch.allclose(eps, v)


def test_perfect_prediction_has_zero_loss():
    class Oracle(ToyDenoiser):
        def predict_x0(self, x_t, sigma, cond):
            return self.x0.expand_as(x_t)

    den = Oracle()
    den.x0 = torch.randn(1, 8)
    loss = diffusion.denoising_loss(den, den.x0, None, torch.randn(4, 8), torch.rand(4) + 0.1)
    assert loss.item() == 0.0


def test_noise_draws_are_seeded():
    den, x0 = ToyDenoiser(), torch.zeros(1, 8)
    a = diffusion.NoiseDraws(den, x0, seed=7, batch=2)
    b = diffusion.NoiseDraws(den, x0, seed=7, batch=2)
    c = diffusion.NoiseDraws(den, x0, seed=8, batch=2)
    for _ in range(3):
        (na, sa), (nb, sb), (nc, _) = a.draw(), b.draw(), c.draw()
        assert torch.equal(na, nb) and torch.equal(sa, sb) and na.shape == (2, 8)
        assert not torch.equal(na, nc)


def test_embedding_optimisation_on_a_toy_model_lowers_the_loss():
    den = ToyDenoiser()
    x0 = torch.randn(1, 8, generator=torch.Generator().manual_seed(0)) * 3  # seeded: the test is reproducible
    start = torch.zeros(1, 8)
    cond = start.clone().requires_grad_(True)
    draws = diffusion.NoiseDraws(den, x0, seed=0, batch=4)
    losses = training.adam_loop([cond], lambda step: diffusion.mean_loss(den, x0, [cond], *draws.draw()),
                                steps=300, learning_rate=0.05)
    assert len(losses) == 300
    noise, sigma = diffusion.NoiseDraws(den, x0, seed=99, batch=512).draw()  # held-out draws
    with torch.no_grad():
        before = diffusion.denoising_loss(den, x0, start, noise, sigma)
        after = diffusion.denoising_loss(den, x0, cond, noise, sigma)
    assert after < 0.8 * before, (before, after)


def test_adam_loop_rejects_bad_settings():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="steps"):
        training.adam_loop([p], lambda s: (p ** 2).sum(), steps=0, learning_rate=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        training.adam_loop([p], lambda s: (p ** 2).sum(), steps=1, learning_rate=float("nan"))
    with pytest.raises(ValueError, match="nothing to optimise"):
        training.adam_loop([torch.zeros(2)], lambda s: p.sum(), steps=1, learning_rate=0.1)


@pytest.mark.parametrize("tensors", [1, 3])  # one tensor (the embedding), several (the flat buffer of adapters)
@pytest.mark.parametrize("schedule", ["constant", "linear_decay"])
def test_each_step_moves_by_the_schedules_rate(schedule, tensors):
    """A loss with a constant gradient makes every Adam update the step's rate (m/sqrt(v) = 1): the moves are
    ``rate_at``'s; linear_decay's start at the rate given, never above it, and run down to rate / steps."""
    params = [torch.zeros(2, requires_grad=True) for _ in range(tensors)]
    before, moves = [0.0], []

    def record(step, loss):
        now = float(params[0][0].detach())
        moves.append(before[0] - now)
        before[0] = now

    steps, rate = 8, 0.01
    training.adam_loop(params, lambda s: sum(p.sum() for p in params), steps, rate, on_step=record, schedule=schedule)
    expected = [training.rate_at(schedule, rate, k, steps) for k in range(steps)]
    assert moves == pytest.approx(expected, rel=1e-4)
    if schedule == "constant":
        assert expected == [rate] * steps
    else:
        assert expected == pytest.approx([rate * (steps - k) / steps for k in range(steps)])
        assert expected[0] == rate and expected[-1] == pytest.approx(rate / steps)


def test_an_unknown_schedule_fails_before_anything_trains():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="linear_decay, constant"):
        training.adam_loop([p], lambda s: p.sum(), steps=3, learning_rate=0.1, schedule="cosine")
    assert torch.equal(p.detach(), torch.zeros(2))


def test_adam_loop_detects_non_finite_loss():
    p = torch.ones(2, requires_grad=True)
    with pytest.raises(training.NonFiniteLoss) as e:
        training.adam_loop([p], lambda s: (p * (1e30 if s == 3 else 1.0)) .pow(2).sum() * 1e30,
                           steps=10, learning_rate=0.1)
    assert e.value.step == 3 and math.isinf(e.value.value)


def test_a_raising_callback_stops_the_loop_after_that_step():
    p = torch.zeros(1, requires_grad=True)
    seen = []

    def cancel(step, loss):
        seen.append(step)
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.adam_loop([p], lambda s: ((p - 1) ** 2).sum(), steps=100, learning_rate=0.1, on_step=cancel)
    assert seen == [0, 1, 2]


def test_interpolation_endpoints_midpoint_and_extrapolation():
    o, t = torch.zeros(1, 3, 4), torch.ones(1, 3, 4)
    assert torch.equal(conditioning.interpolate(t, o, 0.0), o)
    assert torch.equal(conditioning.interpolate(t, o, 1.0), t)
    assert torch.allclose(conditioning.interpolate(t, o, 0.7), torch.full_like(o, 0.7))
    assert torch.allclose(conditioning.interpolate(t, o, 1.5), torch.full_like(o, 1.5))
    assert torch.allclose(conditioning.interpolate(t, o, -0.5), torch.full_like(o, -0.5))
    with pytest.raises(ValueError, match="shapes differ"):
        conditioning.interpolate(torch.ones(1, 4, 4), o, 0.5)


def stop_rule(values, **kw) -> tuple[object, list[int]]:
    """An EarlyStop fed ``values`` as its held-out losses (one per check), asked after every step of 100."""
    feed = iter(values)
    rule = training.EarlyStop(lambda: next(feed), **kw)
    stops = next((done for done in range(1, 101) if rule(done)), None)
    return rule, stops


def test_early_stop_stops_on_a_plateau_when_a_window_of_patience_checks_brings_no_relative_improvement():
    # falls by > 1 % per window of two checks until 0.795; then the window (0.795, 0.80) is not 1 % below 0.80
    rule, stops = stop_rule([1.0, 0.9, 0.8, 0.795, 0.80] + [0.1] * 20, every=10, patience=2, margin=0.01,
                            min_checks=1)
    assert rule.stopped_at == stops == 50
    assert rule.checks == [(10, 1.0), (20, 0.9), (30, 0.8), (40, 0.795), (50, 0.80)]


def test_early_stop_waits_for_min_checks_and_goes_on_while_each_window_improves():
    rule, stops = stop_rule([1.0, 1.0, 1.0, 1.0] + [0.1] * 20, every=5, patience=1, margin=0.0, min_checks=4)
    assert stops == 20  # flat from the first check, but never before 4 checks
    rule, _ = stop_rule([1.0, 1.0, 0.5, 0.6, 0.4, 0.45, 0.45] + [0.1] * 20, every=5, patience=2, min_checks=1)
    assert rule.stopped_at == 35  # each window holds a new best (0.5, 0.4) until 0.45, 0.45
    rule, _ = stop_rule([float("nan"), 1.0, 1.0, 1.0] + [0.1] * 20, every=5, patience=2, min_checks=1)
    assert rule.stopped_at == 20  # a non-finite value is no improvement; the first finite one is


def test_early_stop_in_adam_loop_never_exceeds_steps_checks_without_gradients_and_is_deterministic():
    def run(steps, patience):
        p = torch.nn.Parameter(torch.tensor([3.0]))
        grad_seen = []

        def heldout():
            grad_seen.append(torch.is_grad_enabled())
            return float(((p - 1) ** 2).sum())

        rule = training.EarlyStop(heldout, every=4, patience=patience, margin=0.05, min_checks=2)
        losses = training.adam_loop([p], lambda s: ((p - 1) ** 2).sum(), steps=steps, learning_rate=0.1,
                                    early_stop=rule)
        return losses, rule, grad_seen, float(p.detach())

    losses, rule, grad_seen, value = run(200, 2)
    assert rule.stopped_at is not None and len(losses) == rule.stopped_at < 200 and rule.stopped_at % 4 == 0
    assert grad_seen and not any(grad_seen)  # the held-out loss is computed under torch.no_grad
    assert abs(value - 1) < 0.3  # it stopped near the minimum (from 3), where the loss had stopped falling
    again = run(200, 2)
    assert again[0] == losses and again[3] == value and again[1].checks == rule.checks
    losses, rule, _, _ = run(10, 100)  # never converges within the bound: steps stays the limit
    assert len(losses) == 10 and rule.stopped_at is None and [k for k, _ in rule.checks] == [4, 8]


def test_early_stop_rejects_bad_settings():
    for kw in ({"every": 0}, {"patience": 0}, {"min_checks": 0}, {"margin": 1.0}, {"margin": -0.1}):
        with pytest.raises(ValueError):
            training.EarlyStop(lambda: 1.0, **kw)
