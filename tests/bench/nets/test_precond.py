"""The generators around a denoiser: one step, and K steps with DMD2's backward simulation."""
import pytest
import torch

from bench.nets.precond import FewStepGenerator, OneStepGenerator, chain_sigmas


class Recorder(torch.nn.Module):
    """A denoiser ``D(x, sigma) = w * x / (1 + sigma)`` that records its inputs."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))
        self.calls = []

    def forward(self, x, sigma, cond=None):
        self.calls.append((x.detach().clone(), sigma.detach().clone()))
        return self.w * x / (1 + sigma.view(-1, 1))


def test_chain_sigmas_follow_the_karras_schedule():
    assert chain_sigmas(80.0, 1) == (80.0,)
    from methods.base import karras_sigma

    assert chain_sigmas(80.0, 4) == pytest.approx([karras_sigma(1 - i / 4) for i in range(4)], rel=1e-12)
    assert chain_sigmas(80.0, 4) == pytest.approx((80.0, 17.53, 2.515, 0.1698), rel=1e-3)
    assert chain_sigmas(2.5, 2)[0] == 2.5 and chain_sigmas(2.5, 2)[1] < 2.5


def test_one_level_is_the_one_step_generator_exactly():
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    d = Recorder()
    one, few = OneStepGenerator(d, 2.5), FewStepGenerator(d, (2.5,))
    assert torch.equal(one(z), few(z)) and torch.equal(one.training_sample(z), few.training_sample(z))
    for a, b in zip(one.training_point(z), few.training_point(z)):  # the chain point too: from pure noise
        assert torch.equal(a, b)
    assert torch.equal(one.training_point(z).sigma_next, torch.zeros(6))


def test_the_chain_renoises_each_output_at_the_next_level():
    d = Recorder()
    gen = FewStepGenerator(d, (80.0, 2.5, 0.2))
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    out = gen(z)
    torch.manual_seed(7)
    x = d.w * (80.0 * z) / 81.0
    for sigma in (2.5, 0.2):
        x = d.w * (x + sigma * torch.randn_like(x)) / (1 + sigma)
    assert torch.allclose(out, x, rtol=1e-6, atol=1e-6)
    assert [float(s[0]) for _, s in d.calls] == pytest.approx([80.0, 2.5, 0.2])


def test_backward_simulation_trains_each_step_on_the_generators_own_input():
    d = Recorder()
    sigmas = (80.0, 2.5, 0.2)
    gen = FewStepGenerator(d, sigmas)
    z = torch.randn(400, 3, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    out = gen.training_sample(z)
    torch.manual_seed(3)
    k = torch.randint(0, 3, (400,))
    inputs = [80.0 * z]
    x = d.w * inputs[0] / 81.0
    inputs.append(x + 2.5 * torch.randn_like(x))
    x = d.w * inputs[1] / 3.5
    inputs.append(x + 0.2 * torch.randn_like(x))
    x_in, sigma = d.calls[-1]
    expected = torch.stack([inputs[int(k[i])][i] for i in range(400)])
    assert torch.allclose(x_in, expected, rtol=1e-6, atol=1e-5)
    assert torch.equal(sigma, torch.tensor(sigmas)[k])
    assert set(k.tolist()) == {0, 1, 2}  # every step is trained
    # gradients reach the weights through the last pass only: the chain that made the inputs is constant
    out.sum().backward()
    want = (x_in / (1 + sigma.view(-1, 1))).sum()
    assert torch.allclose(d.w.grad, want, rtol=1e-5)
    assert len(d.calls) == 3  # K - 1 passes to make the inputs, one with gradients


def test_the_deterministic_chain_moves_along_the_predicted_noise():
    """The generator TDM trains (methods/tdm.py): DDIM steps, so a sample depends on z alone, and the chain point of a
    training sample is the step's own input."""
    denoiser = lambda x, s, cond=None: 0.5 * x / (1 + s[:, None])  # noqa: E731
    gen = FewStepGenerator(denoiser, (2.0, 0.7), chain="deterministic")
    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(5))
    x0 = denoiser(2.0 * z, torch.full((64,), 2.0))
    x_in = x0 + 0.7 / 2.0 * (2.0 * z - x0)
    assert torch.allclose(gen(z), denoiser(x_in, torch.full((64,), 0.7)), atol=1e-6)
    torch.manual_seed(2)
    first = gen(z)
    torch.manual_seed(3)
    assert torch.equal(first, gen(z))  # no noise between the steps
    point = gen.training_point(z)
    last = point.sigma == 0.7
    assert 0 < last.sum() < 64
    assert torch.allclose(point.x_in[last], x_in[last], atol=1e-6)
    assert torch.equal(point.sigma_next, torch.where(last, 0.0, 0.7))
