"""The shared pieces: the fake-score loss and its minimiser, the noise-level distributions."""
import math

import pytest
import torch

import methods
from methods.base import KARRAS_GRID, KARRAS_GRID_20_980, KARRAS_U08, LOGNORMAL, SIGMA_DATA, karras_sigma

N = 40_000


def generator_distribution(closed_forms):
    """Samples of an affine generator's q = N(b, A A^T), its exact denoiser, and the teacher's."""
    a, b = closed_forms.theta(3)
    x_g = b + torch.randn(N, a.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(5)) @ a.T
    return x_g, closed_forms.Gaussian(b, a @ a.T), closed_forms.teacher()


def noise_bank(method, x_g):
    """Fixed sigma (from the method's fake-score distribution) and noise for every compared denoiser."""
    gen = torch.Generator().manual_seed(11)
    sigma = method.training_recipe.fake_sigma.sample(len(x_g), generator=gen).double()
    return sigma, torch.randn(x_g.shape, generator=gen, dtype=x_g.dtype)


def c_in_out(sigma):
    """EDM's input and output scalings: a change of F by h changes D by c_out h at unit loss weight."""
    s = sigma[:, None]
    return 1 / (s**2 + SIGMA_DATA**2).sqrt(), s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()


class Perturbed(torch.nn.Module):
    """``D(x; s) = base(x; s) + c_out(s) (W c_in(s) x + r)``: a denoiser family through ``base`` at 0."""

    def __init__(self, base, dim, weight=None, bias=None):
        super().__init__()
        self.base = base
        self.weight = torch.nn.Parameter(torch.zeros(dim, dim, dtype=torch.float64) if weight is None else weight)
        self.bias = torch.nn.Parameter(torch.zeros(dim, dtype=torch.float64) if bias is None else bias)

    def forward(self, x, sigma, cond=None):
        c_in, c_out = c_in_out(sigma)
        return self.base(x, sigma) + c_out * ((c_in * x) @ self.weight.T + self.bias)


def zero_logits(x, sigma, cond=None):
    """A discriminator that cannot tell real from generated (r = 1): its GAN terms are constants."""
    return torch.zeros(x.shape[0], dtype=x.dtype)


def declared_inputs(names, x, method=None, student=None, cond=None):
    """What the harness would supply for the inputs a recipe declares, with a neutral discriminator; a
    consistency method (sCM, rCM) gets ``student``, the real data's ``cond`` and its loss weight."""
    extra = {"discriminator": zero_logits} if "discriminator" in names else {}
    if "real_data" in names:
        extra["real"], extra["real_cond"] = x.detach().flip(0), cond
    if "student" in names:
        extra["student"] = student
    if "generator_updates" in names:
        extra["generator_updates"] = 10**6  # past every warm-up: every term of the loss is on
    if "loss_weight" in names and method is not None and method.loss_weight_network() is not None:
        extra["loss_weight"] = method.loss_weight_network().to(x.dtype)
    return extra


@pytest.mark.slow
@pytest.mark.parametrize("name", methods.available())
def test_exact_denoiser_minimises_fake_score_loss(closed_forms, name):
    method = methods.create(name)
    x_g, exact, teacher = generator_distribution(closed_forms)
    sigma, noise = noise_bank(method, x_g)
    dim = x_g.shape[1]

    extra = declared_inputs(method.training_recipe.fake_inputs, x_g)

    def loss(denoiser):
        return method.fake_score_loss(x_g, denoiser, sigma=sigma, noise=noise, **extra)[0].item()

    gen = torch.Generator().manual_seed(2)
    a, b = closed_forms.theta(3)
    rivals = {
        "scaled up": lambda x, s, cond=None: 1.01 * exact(x, s),
        "scaled down": lambda x, s, cond=None: 0.99 * exact(x, s),
        "affine change": Perturbed(exact, dim, 0.1 * torch.randn(dim, dim, generator=gen, dtype=torch.float64),
                                   0.1 * torch.randn(dim, generator=gen, dtype=torch.float64)),
        "shifted": Perturbed(exact, dim, bias=torch.full((dim,), 0.05, dtype=torch.float64)),
        "nearby generator": closed_forms.Gaussian(b + 0.05, 1.05**2 * a @ a.T),
        "teacher": teacher,
    }
    best = loss(exact)
    with torch.no_grad():
        losses = {key: loss(rival) for key, rival in rivals.items()}
    assert all(value > best for value in losses.values()), (best, losses)


def gradient_z_score(method, x_g, denoiser, sigma, noise, chunks=20):
    """Mean squared z-score of d loss / d (W, r) over its components, from per-chunk gradients.

    About 1 when the expected gradient vanishes; large when it does not.
    """
    grads = []
    for idx in torch.arange(len(x_g)).chunk(chunks):
        extra = declared_inputs(method.training_recipe.fake_inputs, x_g[idx])
        loss, _ = method.fake_score_loss(x_g[idx], denoiser, sigma=sigma[idx], noise=noise[idx], **extra)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, (denoiser.weight, denoiser.bias))]))
    grads = torch.stack(grads)
    z = grads.mean(0) / (grads.std(0) / math.sqrt(chunks))
    return z.pow(2).mean().item()


@pytest.mark.parametrize("name", methods.available())
def test_fake_score_gradient_vanishes_at_exact_denoiser(closed_forms, name):
    method = methods.create(name)
    x_g, exact, teacher = generator_distribution(closed_forms)
    sigma, noise = noise_bank(method, x_g)
    at_exact = gradient_z_score(method, x_g, Perturbed(exact, x_g.shape[1]), sigma, noise)
    at_teacher = gradient_z_score(method, x_g, Perturbed(teacher, x_g.shape[1]), sigma, noise)
    print(f"{name}: mean z^2 at the exact denoiser {at_exact:.2f}, at the teacher's {at_teacher:.1f}")
    assert at_exact < 3.0 and at_teacher > 30.0, (at_exact, at_teacher)


def test_fake_score_loss_weighting_and_detach():
    """lambda(sigma) = 1/sigma^2 + 1/sigma_data^2, summed over dimensions, averaged over the batch."""
    x_g = torch.randn(4, 3, requires_grad=True)
    sigma, noise = torch.tensor([0.01, 0.5, 2.0, 40.0]), torch.randn(4, 3)
    fake = torch.nn.Linear(3, 3)
    loss, logs = methods.create("sim").fake_score_loss(x_g, lambda x, s, cond=None: fake(x), sigma=sigma, noise=noise)
    x = x_g.detach()
    expected = ((1 / sigma**2 + 4) * (fake(x + sigma[:, None] * noise) - x).pow(2).sum(1)).mean()
    torch.testing.assert_close(loss, expected)
    assert loss.requires_grad and not torch.autograd.grad(loss, fake.weight)[0].eq(0).all()
    with pytest.raises(RuntimeError):  # x_g is detached: no path back to the generator
        torch.autograd.grad(loss, x_g)


def test_karras_schedule_endpoints():
    assert karras_sigma(0.0) == pytest.approx(0.002) and karras_sigma(1.0) == pytest.approx(80.0)
    assert karras_sigma(0.8) == pytest.approx(24.4, abs=0.05)
    assert karras_sigma(20 / 999) == pytest.approx(0.003, abs=0.0005)
    assert karras_sigma(980 / 999) == pytest.approx(72.0, abs=0.1)


def samples(dist, n=100_000):
    return dist.sample(n, generator=torch.Generator().manual_seed(0)).double()


def test_lognormal_distribution():
    log_sigma = samples(LOGNORMAL).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.02)


def test_karras_uniform_to_u_08():
    """SiD/SIM: u ~ U(0, 0.8), sigma in [0.002, 24.4], median karras(0.4)."""
    sigma = samples(KARRAS_U08)
    assert sigma.min() >= 0.002 - 1e-9 and sigma.max() <= karras_sigma(0.8) + 1e-6
    assert sigma.min() < 0.0025 and sigma.max() > 23.0
    assert sigma.median().item() == pytest.approx(karras_sigma(0.4), rel=0.02)


@pytest.mark.parametrize("dist,lo,hi", [(KARRAS_GRID_20_980, 20, 980), (KARRAS_GRID, 0, 999)])
def test_karras_grid(dist, lo, hi):
    """DMD/DMD2: grid indices uniform in [lo, hi] of the 1000-point grid (20..980: sigma 0.003..72)."""
    sigma = samples(dist)
    grid = karras_sigma(torch.arange(1000, dtype=torch.float64) / 999)
    above = torch.searchsorted(grid, sigma).clamp(max=999)
    below = (above - 1).clamp(min=0)
    index = torch.where((grid[above] - sigma).abs() <= (grid[below] - sigma).abs(), above, below)  # nearest
    torch.testing.assert_close(sigma, grid[index], rtol=1e-5, atol=0)  # on the grid
    assert index.min().item() == lo and index.max().item() == hi
    counts = torch.bincount(index - lo, minlength=hi - lo + 1).double()
    assert counts.std() / counts.mean() < 0.25  # roughly uniform over indices, not over sigma


def test_given_sigma_and_noise_are_used_as_they_are():
    x_g = torch.zeros(2, 3)
    sigma, noise = torch.tensor([0.5, 2.0]), torch.ones(2, 3)
    seen = []

    def fake(x, s, cond=None):
        seen.append((x, s))
        return x

    methods.create("di").fake_score_loss(x_g, fake, sigma=sigma, noise=noise)
    torch.testing.assert_close(seen[0][0], torch.tensor([[0.5] * 3, [2.0] * 3]))
    torch.testing.assert_close(seen[0][1], sigma)


def test_ground_truth_denoiser_is_the_posterior_mean(closed_forms):
    """The Gaussian denoiser the tests rely on: one shared sigma and per-sample sigmas agree with
    Tweedie's formula ``D(x) = x + sigma^2 grad log p_sigma(x)``."""
    teacher = closed_forms.teacher()
    x = torch.randn(6, teacher.dim, dtype=torch.float64)
    for sigma in (torch.full((6,), 0.7, dtype=torch.float64), torch.linspace(0.01, 30, 6, dtype=torch.float64)):
        tweedie = torch.stack([x[i] + sigma[i] ** 2 * teacher.noised(sigma[i].item()).score(x[i:i + 1])[0]
                               for i in range(6)])
        torch.testing.assert_close(teacher(x, sigma), tweedie)


@pytest.mark.parametrize("name", methods.available())
def test_image_batches_sampled_sigma_and_cond(name):
    """Image-shaped batches, the method's own sigma and noise, and ``cond`` handed to every denoiser."""
    cond = torch.arange(3)
    seen = []

    def denoiser(scale):
        def d(x, sigma, cond=None):
            seen.append(cond)
            assert sigma.shape == (3,) and (sigma > 0).all()
            return scale * x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)
        return d

    method = methods.create(name)
    weight = torch.nn.Parameter(torch.tensor(1.5))
    x_g = weight * torch.randn(3, 2, 4, 4)
    recipe = method.training_recipe
    extra = {"pairs": (x_g[:1], torch.zeros(1, 2, 4, 4))} if "teacher_pairs" in recipe.generator_inputs else {}
    student = lambda x, s, cond=None: weight * denoiser(1.0)(x, s, cond=cond)  # noqa: E731  (the generator's denoiser)
    extra.update(declared_inputs(recipe.generator_inputs, x_g, method, student, cond))
    loss, logs = method.generator_loss(x_g, denoiser(1.0), denoiser(0.5), cond=cond, **extra)
    assert loss.shape == () and torch.isfinite(loss) and "loss_g" in logs
    (grad,) = torch.autograd.grad(loss, weight)
    assert torch.isfinite(grad) and grad != 0
    loss, logs = method.fake_score_loss(x_g, denoiser(0.5), cond=cond, **declared_inputs(recipe.fake_inputs, x_g))
    assert loss.shape == () and torch.isfinite(loss) and "loss_fake" in logs
    guided = "guidance" in method.training_recipe.generator_inputs  # its unconditional teacher passes take none
    assert seen and all(c is cond or (guided and c is None) for c in seen) and any(c is cond for c in seen)
