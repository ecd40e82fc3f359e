"""SIM: the generator-loss gradient is the gradient of E_q d(f_psi - f_phi), for L2 and pseudo-Huber."""
import math

import pytest
import torch

import methods
from methods.sim import SIM

SIGMAS = (0.5, 2.0)


_TRUE_GRADIENTS = {}


def huber_gradient(case, seed, sigma, c, n=400_000):
    """Monte-Carlo gradient of E_{q_sigma} d(f_psi - f_phi), f_psi the theta-dependent exact denoiser.

    Samples are reparameterised as ``x = b + chol(A A^T + sigma^2 I) eps`` (independent of the loss's
    own noise bank), so the whole dependence on theta, distribution and fake score, is differentiated.
    Cached: the broken-surrogate tests compare against the same gradients.
    """
    key = (seed, sigma, c)
    if key in _TRUE_GRADIENTS:
        return _TRUE_GRADIENTS[key]
    a, b = (t.clone().requires_grad_() for t in case.theta(seed))
    cov_q = a @ a.T
    eps = torch.randn(n, case.dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x = b + eps @ torch.linalg.cholesky(cov_q + sigma**2 * torch.eye(case.dim, dtype=torch.float64)).T
    s = torch.full((n,), float(sigma), dtype=torch.float64)
    y = type(case.teacher)(b, cov_q)(x, s) - case.teacher(x, s)
    d = (y.pow(2).sum(1) + c**2).sqrt() - c
    _TRUE_GRADIENTS[key] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(d.mean(), (a, b))])
    return _TRUE_GRADIENTS[key]


@pytest.mark.parametrize("sigma", SIGMAS)
def test_l2_gradient_is_sigma4_fisher_gradient(case, closed_forms, sigma):
    """E_q |f_psi - f_phi|^2 = sigma^4 Fisher(q_sigma, p_sigma): factor 1 on that divergence."""
    sim = methods.create("sim", distance="l2", weighting="none")
    results = []
    for seed in (0, 1):
        theta = case.theta(seed)
        g_fisher = case.divergence_gradient(closed_forms.fisher, theta, sigma)
        results.append(closed_forms.compare(case.loss_gradient(sim, theta, sigma), sigma**4 * g_fisher))
    print(f"sim l2 sigma={sigma}: (cosine, ratio) =", results)
    assert closed_forms.proportional(results, 1.0), results


def huber_results(case, closed_forms, method, sigma, c):
    results = []
    for seed in (0, 1):
        results.append(closed_forms.compare(case.loss_gradient(method, case.theta(seed), sigma),
                                            huber_gradient(case, seed, sigma, c)))
    return results


# c = 1 sits in the middle of |y| at these sigmas (0.6..2.4): both regimes of d are exercised;
# the default c (0.0015 in 8-d) makes d almost the Euclidean norm.
@pytest.mark.parametrize("huber_c", [None, 1.0])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_pseudo_huber_gradient(case, closed_forms, sigma, huber_c):
    sim = methods.create("sim", distance="pseudo_huber", huber_c=huber_c, weighting="none")
    c = huber_c if huber_c is not None else 0.00054 * math.sqrt(case.dim)
    results = huber_results(case, closed_forms, sim, sigma, c)
    print(f"sim pseudo_huber c={c:.4g} sigma={sigma}: (cosine, ratio) =", results)
    assert closed_forms.proportional(results, 1.0), results


class DetachedGradD(SIM):
    """SIM with ``grad d(y)`` detached: the gradient through the argument of grad d is lost."""

    def distance_and_grad(self, y):
        d, grad_d = super().distance_and_grad(y)
        return d, grad_d.detach()


@pytest.mark.parametrize("sigma", SIGMAS)
def test_detached_grad_d_fails_the_check(case, closed_forms, sigma):
    """METHODS.md: detaching grad d(y) gives a visibly different gradient."""
    broken = DetachedGradD(distance="pseudo_huber", huber_c=1.0, weighting="none")
    results = huber_results(case, closed_forms, broken, sigma, 1.0)
    print(f"DetachedGradD sigma={sigma}: (cosine, ratio) =", results)
    assert not any(closed_forms.proportional([r], 1.0) for r in results), results


def test_without_d_term_is_not_the_gradient(case, closed_forms):
    """``d_term=False`` (the related code's choice) is no positive multiple of the exact gradient: its
    direction and size change with theta and sigma (0.68 of it at sigma 0.5, theta 1, as METHODS.md says)."""
    variant = methods.create("sim", distance="pseudo_huber", huber_c=1.0, d_term=False, weighting="none")
    results = {sigma: huber_results(case, closed_forms, variant, sigma, 1.0) for sigma in SIGMAS}
    print("sim d_term=False: (cosine, ratio) =", results)
    flat = [r for rs in results.values() for r in rs]
    assert not closed_forms.proportional(flat, 1.0) and not closed_forms.proportional(flat, flat[0][1])
    assert min(c for c, _ in flat) < 0.9
    assert results[0.5][1][1] == pytest.approx(0.68, abs=0.03)


def test_normaliser_none_keeps_the_scale_and_drops_the_division():
    x_g = torch.randn(4, 6, requires_grad=True)
    sigma, noise = torch.rand(4) + 0.2, torch.randn(4, 6)
    teacher = lambda x, s, cond=None: 0.5 * x + 0.2  # noqa: E731
    fake = lambda x, s, cond=None: 0.3 * x.cos()  # noqa: E731
    paper, _ = methods.create("sim", normaliser="none").generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    plain, _ = methods.create("sim", weighting="none").generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    torch.testing.assert_close(paper, 100 * plain)
    both, _ = methods.create("sim", d_term=False, normaliser="none", weighting="none").generator_loss(
        x_g, teacher, fake, sigma=sigma, noise=noise)
    d, _ = methods.create("sim").distance_and_grad(fake(x_g + sigma[:, None] * noise, sigma) -
                                                   teacher(x_g + sigma[:, None] * noise, sigma))
    torch.testing.assert_close(both, plain - d.mean())


@pytest.mark.parametrize("bad", [{"d_term": "no"}, {"normaliser": "dmd"}, {"huber_c": -1.0}, {"distance": "l1"}])
def test_invalid_choices_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        methods.create("sim", **bad)


def test_l2_is_twice_sid_at_alpha_half():
    x_g = torch.randn(6, 4, requires_grad=True)
    sigma, noise = torch.rand(6) + 0.1, torch.randn(6, 4)
    teacher = lambda x, s, cond=None: 0.7 * x - 0.1  # noqa: E731
    fake = lambda x, s, cond=None: 0.4 * x.sin()  # noqa: E731
    for weighting in ("none", "paper"):
        sim, _ = methods.create("sim", distance="l2", weighting=weighting).generator_loss(
            x_g, teacher, fake, sigma=sigma, noise=noise)
        sid, _ = methods.create("sid", alpha=0.5, weighting=weighting).generator_loss(
            x_g, teacher, fake, sigma=sigma, noise=noise)
        torch.testing.assert_close(sim, 2 * sid)
        torch.testing.assert_close(torch.autograd.grad(sim, x_g)[0], 2 * torch.autograd.grad(sid, x_g)[0])


def test_paper_weighting_normaliser_and_scale():
    """loss = 100 * mean_b [ (d(y) - <grad d(y), f_psi - x_g>) / sg(mean_i |x_g - f_phi|) ]."""
    c = 0.3
    x_g = torch.randn(3, 5, requires_grad=True)
    sigma, noise = torch.tensor([0.3, 1.0, 4.0]), torch.randn(3, 5)
    teacher = lambda x, s, cond=None: 0.6 * x + 0.1 * s[:, None]  # noqa: E731
    fake = lambda x, s, cond=None: 0.3 * x.tanh() - 0.2  # noqa: E731
    loss, _ = methods.create("sim", huber_c=c).generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)

    def by_hand(x):
        x_t = x + sigma[:, None] * noise
        f_phi, f_psi = teacher(x_t, sigma), fake(x_t, sigma)
        y = f_psi - f_phi
        root = (y.pow(2).sum(1, keepdim=True) + c**2).sqrt()
        surrogate = (root - c).squeeze(1) - (y / root * (f_psi - x)).sum(1)
        return 100 * (surrogate / (x - f_phi).abs().mean(1).detach()).mean()

    torch.testing.assert_close(loss, by_hand(x_g))
    torch.testing.assert_close(torch.autograd.grad(loss, x_g)[0], torch.autograd.grad(by_hand(x_g), x_g)[0])


def test_default_huber_c_scales_with_dimension():
    y = torch.zeros(2, 3, 4, 4)  # 48 dimensions: d(0) = 0 whatever c is; grad d(0) = 0
    d, grad_d = methods.create("sim").distance_and_grad(y + 1.0)
    c = 0.00054 * math.sqrt(48)
    torch.testing.assert_close(d, torch.full((2,), math.sqrt(48 + c**2) - c))
    torch.testing.assert_close(grad_d, torch.full_like(y, 1 / math.sqrt(48 + c**2)))


def test_recipe_is_sids():
    assert methods.create("sim").training_recipe == methods.create("sid").training_recipe


def test_in_use_resolves_the_default_huber_c():
    sim = methods.create("sim")
    assert sim.config()["huber_c"] is None  # the run's identity keeps "the default"
    assert sim.in_use((3, 4, 4))["huber_c"] == pytest.approx(0.00054 * math.sqrt(48))
    assert methods.create("sim", huber_c=0.5).in_use((3, 4, 4))["huber_c"] == 0.5
    assert methods.create("sid").in_use((3, 4, 4)) == methods.create("sid").config()
