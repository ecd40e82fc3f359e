"""sCM and rCM against closed forms on Gaussians with exact denoisers.

For data ``N(mu, S)`` EDM's probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma`` is linear:
``x(sigma) - mu = (S + sigma^2)^(1/2) (S + s0^2)^(-1/2) (x(s0) - mu)``, so the consistency function (the
map to the ODE's ``sigma = 0`` end) is ``f(x, sigma) = mu + S^(1/2) (S + sigma^2)^(-1/2) (x - mu)``. Every
matrix is a function of S, computed in S's eigenbasis. Cases: isotropic ``s^2 I`` and a full covariance.
"""
import math

import pytest
import torch

import methods
from bench.nets.precond import OneStepGenerator
from methods.base import SIGMA_DATA
from methods.dmd import DMD
from methods.scm import AdaptiveWeight, consistency_tangent, teacher_velocity, trig_time, trigflow_velocity

DIM, BATCH = 4, 64
DT = torch.float64


def gaussians(closed_forms):
    mean = torch.linspace(-0.5, 1.0, DIM, dtype=DT)
    return {"isotropic": closed_forms.Gaussian(mean, 0.3**2 * torch.eye(DIM, dtype=DT)),
            "full": closed_forms.teacher(DIM)}


@pytest.fixture(params=["isotropic", "full"])
def teacher(request, closed_forms):
    return gaussians(closed_forms)[request.param]


class ConsistencyOf(torch.nn.Module):
    """The exact consistency function of ``N(mu, beta S)``: ``mu + (beta S)^(1/2) (beta S + sigma^2)^(-1/2) (x - mu)``.

    At ``beta = 1`` it is the teacher's own; any ``beta`` keeps the boundary condition ``f(x, 0) = x``.
    """

    def __init__(self, teacher, beta=1.0):
        super().__init__()
        self.mean, self.lam, self.u = teacher.mean, *torch.linalg.eigh(teacher.cov)
        self.beta = torch.nn.Parameter(torch.tensor(float(beta), dtype=DT))

    def forward(self, x, sigma, cond=None):
        lam = self.beta * self.lam
        scale = (lam / (lam + sigma.reshape(-1, 1) ** 2)).sqrt()
        return self.mean + (((x - self.mean) @ self.u) * scale) @ self.u.T


def ode_solution(teacher, x, sigma, sigma_to):
    """The teacher's ODE from ``x`` at ``sigma`` to ``sigma_to`` (both ``[B]``), in closed form."""
    lam, u = torch.linalg.eigh(teacher.cov)
    ratio = ((lam + sigma_to.reshape(-1, 1) ** 2) / (lam + sigma.reshape(-1, 1) ** 2)).sqrt()
    return teacher.mean + (((x - teacher.mean) @ u) * ratio) @ u.T


def batch(teacher, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.randn(BATCH, generator=gen, dtype=DT) * 1.4 - 1.0)  # sCM's training levels
    x = teacher.sample(BATCH, gen) + sigma[:, None] * torch.randn(BATCH, DIM, generator=gen, dtype=DT)
    return x, sigma


def test_teacher_ode_direction_in_sigma_and_trigflow_time(teacher):
    x, sigma = batch(teacher)
    lam, u = torch.linalg.eigh(teacher.cov)
    closed = sigma[:, None] * (((x - teacher.mean) @ u) / (lam + sigma[:, None] ** 2)) @ u.T  # sigma (S+sigma^2)^-1 (x-mu)
    torch.testing.assert_close(teacher_velocity(teacher, x, sigma), closed)
    # TrigFlow: x_t = cos(t) x(sigma_d tan t); d/dt of the closed-form trajectory by central differences
    t, h = trig_time(sigma), 1e-6
    x_t = torch.cos(t)[:, None] * x

    def along(dt):
        s = SIGMA_DATA * torch.tan(t + dt)
        return torch.cos(t + dt)[:, None] * ode_solution(teacher, x, sigma, s)
    numeric = (along(h) - along(-h)) / (2 * h)
    torch.testing.assert_close(trigflow_velocity(teacher, x_t, t), numeric, rtol=1e-6, atol=1e-7)


def test_jvp_tangent_is_the_total_derivative_along_the_teacher_ode(teacher):
    """For the teacher's denoiser as student, ``d/dsigma D(x(sigma); sigma) = -sigma S (S + sigma^2)^-2 (x - mu)``;
    for the exact consistency function it is zero."""
    x, sigma = batch(teacher, seed=1)
    lam, u = torch.linalg.eigh(teacher.cov)
    velocity = teacher_velocity(teacher, x, sigma)
    primal, tangent = consistency_tangent(teacher, x, sigma, velocity)
    closed = -sigma[:, None] * (((x - teacher.mean) @ u) * lam / (lam + sigma[:, None] ** 2) ** 2) @ u.T
    torch.testing.assert_close(primal, teacher(x, sigma))
    torch.testing.assert_close(tangent, SIGMA_DATA * sigma[:, None] * closed)  # the rearranged JVP's scale
    exact = ConsistencyOf(teacher)
    primal, tangent = consistency_tangent(exact, x, sigma, velocity)
    torch.testing.assert_close(primal, exact(x, sigma))
    assert tangent.abs().max() < 1e-12
    # the consistency function maps onto the ODE's sigma = 0 end
    torch.testing.assert_close(exact(x, sigma), ode_solution(teacher, x, sigma, torch.zeros_like(sigma)))


def scm_gradient(method, teacher, student, x0, sigma, noise, **extra):
    """d loss / d beta of the consistency term (rCM's takes its noise as ``real_sigma``, ``real_noise``)."""
    keys = ("real_sigma", "real_noise") if method.name == "rcm" else ("sigma", "noise")
    loss, logs = method.generator_loss(None, teacher, None, real=x0, student=student,
                                       **dict(zip(keys, (sigma, noise))), **extra)
    return torch.autograd.grad(loss, student.beta)[0].item(), logs


@pytest.mark.parametrize("name,weighting", [("scm", "paper"), ("scm", "none"), ("rcm", "paper")])
def test_loss_gradient_vanishes_at_the_exact_consistency_function_and_points_to_it(teacher, name, weighting):
    """beta = 1 is the teacher's consistency function: zero gradient. Other beta are consistent along their
    own Gaussian's ODE but not the teacher's: the gradient's sign moves beta back to 1."""
    method = methods.create(name, weighting=weighting, **({"dmd_weight": 0.0} if name == "rcm" else {}))
    gen = torch.Generator().manual_seed(2)
    x0 = teacher.sample(BATCH, gen)
    sigma = torch.exp(torch.randn(BATCH, generator=gen, dtype=DT) * 1.4 - 1.0)
    noise = torch.randn(BATCH, DIM, generator=gen, dtype=DT)
    extra = {"generator_updates": 10**6}  # past the tangent warm-up
    if weighting == "paper" and name == "scm":
        extra["loss_weight"] = AdaptiveWeight().double()
    at_exact, _ = scm_gradient(method, teacher, ConsistencyOf(teacher), x0, sigma, noise, **extra)
    assert abs(at_exact) < 1e-12
    for beta in (0.6, 1.5):
        grad, _ = scm_gradient(method, teacher, ConsistencyOf(teacher, beta), x0, sigma, noise, **extra)
        assert grad * (beta - 1) > 1e-6, (beta, grad)


def test_none_weighting_is_the_limit_of_the_discrete_consistency_loss(teacher):
    """``d/dbeta`` of ``0.5 |f(x, sigma) - sg f(x', sigma - Delta)|^2`` over Delta, x' the teacher's exact ODE
    step, tends to sCM's ``weighting="none"`` gradient as Delta -> 0."""
    method = methods.create("scm", weighting="none")
    student = ConsistencyOf(teacher, 1.4)
    x0, _ = batch(teacher, seed=3)
    gen = torch.Generator().manual_seed(4)
    sigma = torch.exp(torch.randn(BATCH, generator=gen, dtype=DT) * 1.4 - 1.0)
    noise = torch.randn(BATCH, DIM, generator=gen, dtype=DT)
    continuous, _ = scm_gradient(method, teacher, student, x0, sigma, noise)
    x = x0 + sigma[:, None] * noise
    for delta in (1e-4, 1e-5):
        earlier = sigma - delta
        with torch.no_grad():
            target = student(ode_solution(teacher, x, sigma, earlier), earlier)
        discrete = (0.5 * (student(x, sigma) - target).pow(2).sum(1)).mean() / delta
        grad = torch.autograd.grad(discrete, student.beta)[0].item()
        assert grad == pytest.approx(continuous, rel=3 * delta), (delta, grad, continuous)  # first order in Delta


def trigflow_reference_loss(student, teacher, x0, sigma, noise, r, c, loss_weight):
    """Algorithm 1 of the paper written in TrigFlow variables, independently of the method's sigma-space form:
    ``F(x_t, t) = (cos t x_t - D(x_t / cos t; sigma_d tan t)) / (sigma_d sin t)``, its JVP along the teacher's
    ``dx_t/dt``, ``g = -cos^2 t (sigma_d F - dx_t/dt) - r cos t sin t (x_t + sigma_d dF/dt)``."""
    t = trig_time(sigma)
    cos, sin = torch.cos(t)[:, None], torch.sin(t)[:, None]
    x_t = cos * (x0 + sigma[:, None] * noise)

    def F(x_t_, t_):
        c_, s_ = torch.cos(t_)[:, None], torch.sin(t_)[:, None]
        return (c_ * x_t_ - student(x_t_ / c_, SIGMA_DATA * torch.tan(t_))) / (SIGMA_DATA * s_)
    with torch.no_grad():
        dx_dt = trigflow_velocity(teacher, x_t, t)
        f_minus, df_dt = torch.func.jvp(F, (x_t, t), (dx_dt, torch.ones_like(t)))
        g = -cos**2 * (SIGMA_DATA * f_minus - dx_dt) - r * cos * sin * (x_t + SIGMA_DATA * df_dt)
        g = g / (g.pow(2).mean(1, keepdim=True).sqrt() + c)
    logvar = loss_weight(sigma)
    residual = (F(x_t, t) - f_minus - g).pow(2).mean(1)
    return (residual / sigma / logvar.exp() + logvar).mean()


@pytest.mark.parametrize("r", [0.3, 1.0])
def test_paper_loss_equals_algorithm_1_in_trigflow_variables(teacher, r):
    """Loss value and gradient (student and weight network) of the sigma-space form against TrigFlow's."""
    method = methods.create("scm", tangent_warmup_iterations=10)
    x0, _ = batch(teacher, seed=5)
    gen = torch.Generator().manual_seed(6)
    sigma = torch.exp(torch.randn(BATCH, generator=gen, dtype=DT) * 1.4 - 1.0)
    noise = torch.randn(BATCH, DIM, generator=gen, dtype=DT)
    weight = AdaptiveWeight().double()
    torch.nn.init.normal_(weight.linear.weight, std=0.3)  # a non-trivial learned weight
    student = ConsistencyOf(teacher, 1.3)
    loss, logs = method.generator_loss(None, teacher, None, real=x0, student=student, sigma=sigma, noise=noise,
                                       loss_weight=weight, generator_updates=round(10 * r))
    assert logs["tangent_warmup"] == r
    reference = trigflow_reference_loss(student, teacher, x0, sigma, noise, r, 0.1, weight)
    torch.testing.assert_close(loss, reference)
    params = [student.beta, weight.linear.weight]
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(reference, params)):
        torch.testing.assert_close(a, b)


def test_tangent_warm_up_and_weights_of_the_paper():
    scm = methods.create("scm")
    assert (scm.tangent_c, scm.tangent_warmup_iterations) == (0.1, 10_000)
    assert [scm.warmup_ratio(n) for n in (0, 2500, 10_000, 20_000)] == [0.0, 0.25, 1.0, 1.0]
    assert methods.create("scm", weighting="none").warmup_ratio(0) == 1.0
    assert isinstance(scm.loss_weight_network(), AdaptiveWeight)
    assert methods.create("scm", weighting="none").loss_weight_network() is None
    assert methods.create("rcm").loss_weight_network() is None
    weight = AdaptiveWeight()
    assert torch.equal(weight(torch.tensor([0.01, 1.0, 80.0])), torch.zeros(3))  # starts at weight 1
    with pytest.raises(ValueError, match="tangent_c"):
        methods.create("scm", tangent_c=0.0)
    with pytest.raises(ValueError, match="dmd_weight"):
        methods.create("rcm", dmd_weight=-1.0)


def test_recipes_one_step_from_sigma_max_and_what_each_declares():
    scm, rcm = methods.create("scm").training_recipe, methods.create("rcm").training_recipe
    assert scm.sigma_init == rcm.sigma_init == 80.0
    assert not scm.fake_score and not scm.generator_sample
    assert {"real_data", "student", "loss_weight", "generator_updates"} == set(scm.generator_inputs)
    assert rcm.fake_score and rcm.generator_sample and rcm.fake_updates_per_generator_update == 5
    assert (scm.generator_sigma.kind, scm.generator_sigma.mean, scm.generator_sigma.std) == ("lognormal", -1.0, 1.4)
    assert (rcm.optimizer, rcm.betas, rcm.weight_decay, rcm.lr) == ("adamw", (0.0, 0.999), 0.01, 2e-6)


def test_one_step_sample_of_the_exact_consistency_function_is_the_teacher(closed_forms, teacher):
    """The harness's one-step generator ``D(sigma_init z; sigma_init)`` with the exact consistency function:
    at sigma_init = 80 the samples' moments are the teacher's up to the ``O(1/80)`` prior mismatch."""
    generator = OneStepGenerator(ConsistencyOf(teacher), methods.create("scm").training_recipe.sigma_init)
    z = torch.randn(200_000, DIM, generator=torch.Generator().manual_seed(7), dtype=DT)
    with torch.no_grad():
        x = generator(z)
    torch.testing.assert_close(x.mean(0), teacher.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), teacher.cov, atol=0.02, rtol=0)


def test_rcm_dmd_term_is_dmds_tested_gradient(case, closed_forms):
    """With a student that does not depend on the generator's parameters, rCM's generator gradient is
    ``dmd_weight`` times DMD's exactly, and so ``dmd_weight sigma^2`` times the KL gradient."""
    teacher = case.teacher
    rcm = methods.create("rcm", weighting="none", dmd_weight=0.05)
    dmd = methods.create("dmd", weighting="none", regression_weight=0.0)
    assert type(rcm._dmd).distribution_matching_loss is DMD.distribution_matching_loss  # reused, not copied
    real = teacher.sample(256, torch.Generator().manual_seed(8))
    extra = dict(real=real, student=teacher, generator_updates=0)
    sigma, results = 1.0, []
    for seed in (0, 1):
        theta = case.theta(seed)
        g_rcm = case.loss_gradient(rcm, theta, sigma, **extra)
        g_dmd = case.loss_gradient(dmd, theta, sigma)
        torch.testing.assert_close(g_rcm, 0.05 * g_dmd)
        results.append(closed_forms.compare(g_rcm, case.divergence_gradient(closed_forms.kl, theta, sigma, key="kl")))
    assert closed_forms.proportional(results, 0.05 * sigma**2), results


def test_rcm_adds_the_dmd_term_after_the_tangent_warm_up(closed_forms):
    teacher = closed_forms.teacher(DIM)
    rcm = methods.create("rcm", tangent_warmup_iterations=100)
    gen = torch.Generator().manual_seed(9)
    x_g = teacher.sample(BATCH, gen).requires_grad_()
    fake = closed_forms.Gaussian(teacher.mean + 0.3, teacher.cov)
    common = dict(real=teacher.sample(BATCH, gen), student=ConsistencyOf(teacher, 1.2))
    early, before = rcm.generator_loss(x_g, teacher, fake, generator_updates=99, **common)
    loss, after = rcm.generator_loss(x_g, teacher, fake, generator_updates=100, **common)
    torch.testing.assert_close(before["loss_g"], before["loss_scm"])  # the DMD term at weight 0
    assert torch.autograd.grad(early, x_g)[0].abs().sum() == 0
    torch.testing.assert_close(after["loss_g"], after["loss_scm"] + 0.01 * after["loss_dm"], rtol=1e-5, atol=0)
    assert torch.autograd.grad(loss, x_g)[0].abs().sum() > 0  # the DMD term reaches the generator's samples
    with pytest.raises(ValueError, match="student"):
        rcm.generator_loss(x_g, teacher, fake)
    assert math.isfinite(float(after["tangent_rms"]))


@pytest.mark.parametrize("name", ["scm", "rcm"])
def test_training_reaches_the_exact_consistency_function(teacher, name):
    """Adam on the consistency loss drives ``beta`` (a family of consistency functions with the boundary
    condition, exact at 1) from 1.6 to the teacher's within 1%, on fresh data and noise each step. What is
    checked is the median of the last 200 iterates: the adaptive weighting's heavy-tailed noise (a rare
    tiny sigma) kicks single iterates away by up to 6% (measured on the isotropic teacher: 0.938 at step
    600 between 0.999 at 500 and 0.996 at 700), which a mean would carry too."""
    method = methods.create(name, tangent_warmup_iterations=0, **({"dmd_weight": 0.0} if name == "rcm" else {}))
    student = ConsistencyOf(teacher, 1.6)
    weight = method.loss_weight_network()
    params = [student.beta] + ([] if weight is None else list(weight.double().parameters()))
    opt = torch.optim.Adam(params, lr=0.02)
    gen = torch.Generator().manual_seed(10)
    keys = ("real_sigma", "real_noise") if name == "rcm" else ("sigma", "noise")
    late = []
    for _ in range(600):
        x0 = teacher.sample(256, gen)
        sigma = torch.exp(torch.randn(256, generator=gen, dtype=DT) * 1.4 - 1.0)
        noise = torch.randn(256, DIM, generator=gen, dtype=DT)
        extra = {} if weight is None else {"loss_weight": weight}
        loss, _ = method.generator_loss(None, teacher, None, real=x0, student=student,
                                        **dict(zip(keys, (sigma, noise))), **extra)
        opt.zero_grad()
        loss.backward()
        opt.step()
        late.append(student.beta.item())
    beta = float(torch.tensor(late[-200:]).median())
    assert abs(beta - 1) < 0.01, beta
