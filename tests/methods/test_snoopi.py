"""SNOOPI's PG-SB against closed forms on the class-conditional Gaussian mixture.

Teacher: a mixture of diagonal Gaussians, each component a class (exact conditional and null denoisers).
Generator: ``x = b_c + A_c z`` per class ``c``, classes balanced, so ``q(.|c) = N(b_c, A_c A_c^T)`` and its
class marginal is their equal-weight mixture. Fake score: the generator's exact denoisers, ``D(., c)``
component ``c``'s and ``D(., null)`` the marginal's, as a perfectly trained fake with label dropout would be.
At a fixed scale ``w`` and ``weighting="none"`` the expected gradient is ``sigma^2`` times that of
``w E_c KL(q_sigma(.|c) || p_sigma(.|c)) + (1 - w) KL(q_sigma || p_sigma)``: the conditional KLs in closed
form, the marginal one (two mixtures) by Monte Carlo differentiated along an independent sample bank.
"""
import functools
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

import methods
from bench.nets.guidance import GuidedDenoiser, one_hot
from bench.suites.gaussian import ClassConditionalMixture, Gaussian

DIM, CLASSES, N_MC, N_TRUTH, SIGMA = 4, 3, 200_000, 400_000, 0.7
F64 = torch.float64


def mixture():
    gen = torch.Generator().manual_seed(21)
    means = 1.5 * torch.randn(CLASSES, DIM, generator=gen, dtype=F64)
    stds = 0.4 + 0.4 * torch.rand(CLASSES, DIM, generator=gen, dtype=F64)
    return ClassConditionalMixture(torch.ones(CLASSES, dtype=F64), means, stds)


def generator_theta(seed):
    """Per class ``(A_c, b_c)``, away from the teacher's components."""
    gen = torch.Generator().manual_seed(100 + seed)
    a = 0.7 * torch.eye(DIM, dtype=F64) + 0.2 * torch.randn(CLASSES, DIM, DIM, generator=gen, dtype=F64)
    b = mixture().means + 0.6 * torch.randn(CLASSES, DIM, generator=gen, dtype=F64)
    return a, b


class GeneratorDenoiser(torch.nn.Module):
    """The exact denoisers of the generator's noised conditionals and of their equal-weight mixture."""

    def __init__(self, a, b):
        super().__init__()
        self.parts = [Gaussian(b[k], a[k] @ a[k].T) for k in range(CLASSES)]

    def forward(self, x, sigma, cond=None):
        s = float(sigma[0])
        assert torch.all(sigma == s)
        means = torch.stack([g(x, sigma) for g in self.parts], 1)  # [B, K, D]
        if cond is None:
            log_lik = torch.stack([MultivariateNormal(g.mean, g.noised(s).cov).log_prob(x) for g in self.parts], 1)
            weights = log_lik.softmax(1)
        else:
            weights = cond.to(x.dtype)
        return (weights[:, :, None] * means).sum(1)


def labels(n):
    return torch.arange(n) % CLASSES


def estimate(method, theta, w, seed=3):
    """The autograd gradient of the generator loss w.r.t. every ``(A_c, b_c)`` at scale ``w``."""
    a, b = (t.clone().requires_grad_() for t in theta)
    gen = torch.Generator().manual_seed(seed)
    z, noise = (torch.randn(N_MC, DIM, generator=gen, dtype=F64) for _ in range(2))
    c = labels(N_MC)
    x_g = b[c] + torch.einsum("nij,nj->ni", a[c], z)
    guided = GuidedDenoiser(mixture(), 2.0)  # its own scale is not used
    loss, logs = method.generator_loss(x_g, guided, GeneratorDenoiser(a.detach(), b.detach()),
                                       cond=one_hot(c, CLASSES, F64), sigma=torch.full((N_MC,), SIGMA, dtype=F64),
                                       noise=noise, guidance=guided, guidance_scale=w)
    assert logs["guidance_scale"].item() == pytest.approx(w)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, (a, b))])


@functools.lru_cache(maxsize=None)
def reference(seed, closed_forms_kl):
    """Gradients w.r.t. theta of ``E_c KL(q_sigma(.|c) || p_sigma(.|c))`` and ``KL(q_sigma || p_sigma)``."""
    mix, theta = mixture(), generator_theta(seed)
    eye = SIGMA**2 * torch.eye(DIM, dtype=F64)
    a, b = (t.clone().requires_grad_() for t in theta)
    conditional = sum(closed_forms_kl(b[k], a[k] @ a[k].T + eye, mix.means[k], torch.diag(mix.stds[k] ** 2) + eye)
                      for k in range(CLASSES)) / CLASSES
    g_cond = torch.cat([g.reshape(-1) for g in torch.autograd.grad(conditional, (a, b))])

    a, b = (t.clone().requires_grad_() for t in theta)
    gen = torch.Generator().manual_seed(77)
    z, n = (torch.randn(N_TRUTH, DIM, generator=gen, dtype=F64) for _ in range(2))
    c = labels(N_TRUTH)
    x = b[c] + torch.einsum("nij,nj->ni", a[c], z) + SIGMA * n
    log_q = torch.logsumexp(torch.stack([MultivariateNormal(b[k], a[k] @ a[k].T + eye).log_prob(x)
                                         for k in range(CLASSES)], 1), 1) - math.log(CLASSES)
    teacher = [MultivariateNormal(mix.means[k], torch.diag(mix.stds[k] ** 2) + eye) for k in range(CLASSES)]
    log_p = torch.logsumexp(torch.stack([p.log_prob(x) for p in teacher], 1) + mix.log_weights, 1)
    g_marg = torch.cat([g.reshape(-1) for g in torch.autograd.grad((log_q - log_p).mean(), (a, b))])
    return g_cond, g_marg


@pytest.mark.parametrize("w", [0.5, 1.0, 2.0, 4.0])
def test_expected_gradient_is_the_guided_reverse_kl(closed_forms, w):
    method = methods.create("snoopi", weighting="none")
    results = []
    for seed in (0, 1):
        g_cond, g_marg = reference(seed, closed_forms.kl)
        truth = SIGMA**2 * (w * g_cond + (1 - w) * g_marg)
        results.append(closed_forms.compare(estimate(method, generator_theta(seed), w), truth))
    print(f"snoopi w={w} (cosine, ratio):", results)
    assert closed_forms.proportional(results, 1.0, cos_min=0.998, rtol=0.03), results


def test_paper_weighting_is_swiftbrush_vsd(toy):
    """``0.5 |x0 - sg(x0 - sigma_t^2 (eps_teacher - eps_fake))|^2`` on VP scalings, mean-reduced, at one ``w``."""
    method, w = methods.create("snoopi"), 2.5
    loss, _ = method.generator_loss(toy.x_g, toy.teacher, toy.fake, sigma=toy.sigma, noise=toy.noise,
                                    guidance_scale=w)
    (grad,) = torch.autograd.grad(loss, toy.x_g)
    x_t = toy.x_g.detach() + toy.sigma[:, None] * toy.noise
    alpha = 1 / (1 + toy.sigma[:, None] ** 2).sqrt()
    s_vp = toy.sigma[:, None] * alpha  # VP: x_vp = alpha x0 + s_vp eps
    eps = lambda d: (x_t - d) / toy.sigma[:, None]  # noqa: E731  (VP eps of an EDM denoiser at x_vp = alpha x_t)
    # unguided denoisers: cond and null agree, so the w-guided ones are the denoisers themselves
    vsd = s_vp**2 * (eps(toy.teacher(x_t, toy.sigma)) - eps(toy.fake(x_t, toy.sigma)))
    torch.testing.assert_close(grad, vsd / toy.x_g[0].numel() / len(toy.x_g))


def test_drawn_scales_lie_in_the_range():
    torch.manual_seed(0)
    step = methods.create("snoopi", guidance_min=1.5, guidance_max=3.0)
    draws = torch.stack([step.draw_guidance(8) for _ in range(4000)])
    assert torch.all(draws == draws[:, :1])  # one scale per step
    assert draws.min() >= 1.5 and draws.max() <= 3.0 and draws.min() < 1.51 and draws.max() > 2.99
    assert abs(draws[:, 0].mean().item() - 2.25) < 0.02 and abs(draws[:, 0].std().item() - 1.5 / 12**0.5) < 0.02
    per_sample = methods.create("snoopi", guidance_draw="sample").draw_guidance(20000)
    assert per_sample.unique().numel() > 19000 and 0.5 <= per_sample.min() and per_sample.max() <= 4.0
    fixed = methods.create("snoopi", guidance_min=2.0, guidance_max=2.0).draw_guidance(5)
    assert torch.all(fixed == 2.0)  # SwiftBrush's fixed scale
    seen = []
    x_g = torch.randn(6, 3)
    for _ in range(200):
        _, logs = step.generator_loss(x_g, lambda x, s, cond=None: 0.5 * x, lambda x, s, cond=None: 0.4 * x)
        seen.append(logs["guidance_scale"].item())
    assert 1.5 <= min(seen) < 1.6 and 2.9 < max(seen) <= 3.0


def test_both_teachers_are_guided_at_the_drawn_scale():
    """Teacher parts from ``guidance=``, fake parts from ``cond=None`` and ``cond``, combined at ``w``."""
    cond = torch.eye(3)[[0, 2]]

    class Parts:
        scale = 99.0  # the suite's fixed scale is not used

        def conditional(self, x, s, c):
            assert c is cond
            return 3 * x

        def unconditional(self, x, s):
            return x

    fake = lambda x, s, cond=None: (2 * x if cond is None else 5 * x)  # noqa: E731
    x_g = torch.randn(2, 3, requires_grad=True)
    sigma, noise = torch.tensor([0.5, 2.0]), torch.randn(2, 3)
    loss, _ = methods.create("snoopi", weighting="none").generator_loss(
        x_g, None, fake, cond=cond, sigma=sigma, noise=noise, guidance=Parts(), guidance_scale=1.5)
    (grad,) = torch.autograd.grad(loss, x_g)
    x_t = x_g.detach() + sigma[:, None] * noise
    expected = (2 + 1.5 * 3) * x_t - (1 + 1.5 * 2) * x_t
    torch.testing.assert_close(grad, expected / 2)


def test_fake_score_label_dropout():
    cond = torch.eye(3)
    seen = []

    def fake(x, s, cond=None):
        seen.append(cond)
        return 0 * x

    x_g = torch.randn(3, 2)
    torch.manual_seed(1)
    for p, calls in ((0.0, 50), (1.0, 50), (0.3, 2000)):
        seen.clear()
        method = methods.create("snoopi", fake_label_dropout=p)
        for _ in range(calls):
            method.fake_score_loss(x_g, fake, cond=cond)
        assert all(c is None or c is cond for c in seen)
        dropped = sum(c is None for c in seen) / calls
        assert abs(dropped - p) < 0.04, (p, dropped)
    seen.clear()
    method.fake_score_loss(x_g, fake)  # no labels: nothing to drop
    assert seen == [None]


@pytest.mark.parametrize("hparams,word", [
    ({"guidance_min": 3.0, "guidance_max": 2.0}, "guidance_min"),
    ({"guidance_min": -0.5}, "guidance_min"),
    ({"guidance_max": -1.0}, "guidance_max"),
    ({"guidance_max": math.nan}, "guidance_max"),
    ({"guidance_min": True}, "guidance_min"),
    ({"guidance_draw": "batch"}, "guidance_draw"),
    ({"fake_label_dropout": 1.5}, "fake_label_dropout"),
    ({"fake_label_dropout": -0.1}, "fake_label_dropout"),
])
def test_bad_hyperparameters_are_refused(hparams, word):
    with pytest.raises(ValueError, match=word) as info:
        methods.create("snoopi", **hparams)
    assert "\n" not in str(info.value)


def test_published_defaults():
    method = methods.create("snoopi")
    assert (method.guidance_min, method.guidance_max, method.guidance_draw) == (0.5, 4.0, "step")
    recipe = method.training_recipe
    assert recipe.lr == 1e-6 and recipe.optimizer == "adamw" and recipe.generator_inputs == ("guidance",)
