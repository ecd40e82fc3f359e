"""The f-divergence table: h = r^2 f''(r), the Uni-Instruct term h - r h', and the high-precision truths."""
import pytest
import torch

from methods import divergences


@pytest.mark.parametrize("name", list(divergences.DIVERGENCES))
def test_weights_are_second_derivatives_of_f(name):
    d = divergences.DIVERGENCES[name]
    r = torch.linspace(0.05, 8.0, 97, dtype=torch.float64, requires_grad=True)
    (df,) = torch.autograd.grad(d.f(r).sum(), r, create_graph=True)
    (d2f,) = torch.autograd.grad(df.sum(), r)
    torch.testing.assert_close(d.h(r.detach()), r.detach() ** 2 * d2f)
    h = d.h(r)
    dh = torch.autograd.grad(h.sum(), r)[0] if h.requires_grad else torch.zeros_like(r)  # constant h
    torch.testing.assert_close(d.h_minus_r_dh(r.detach()), d.h(r.detach()) - r.detach() * dh)
    one = torch.ones(1, dtype=torch.float64)
    torch.testing.assert_close(d.f(one), torch.zeros(1, dtype=torch.float64))  # D_f(p || p) = 0


def test_named_divergences_are_what_they_say(closed_forms):
    """Between two Gaussians the importance-sampled f-divergences match the closed forms of KL and Jeffreys."""
    a, b = closed_forms.theta(0)
    teacher = closed_forms.teacher()
    mean_q, cov_q, mean_p, cov_p = b, a @ a.T + torch.eye(8, dtype=torch.float64), teacher.mean, teacher.cov + torch.eye(8, dtype=torch.float64)
    forward, reverse = closed_forms.kl(mean_p, cov_p, mean_q, cov_q), closed_forms.kl(mean_q, cov_q, mean_p, cov_p)
    for name, exact in (("kl", forward), ("rkl", reverse), ("jf", forward + reverse)):
        estimate = closed_forms.f_divergence(divergences.DIVERGENCES[name].f)(mean_q, cov_q, mean_p, cov_p)
        assert abs(estimate / exact - 1) < 0.01, (name, estimate, exact)


def test_density_ratio_clamps_logits_then_ratio():
    logits = torch.tensor([-30.0, -1.0, 0.0, 2.0, 30.0], requires_grad=True)
    exact = divergences.density_ratio(logits, None, None)
    torch.testing.assert_close(exact, logits.detach().exp())
    assert not exact.requires_grad
    clamped = divergences.density_ratio(logits, 0.1, 20.0)
    torch.testing.assert_close(clamped, torch.tensor([0.1, torch.e**-1, 1.0, torch.e**2, 20.0]))
    weights = divergences.normalise_by_batch_mean(torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(weights, torch.tensor([0.5, 1.5]), atol=1e-5, rtol=0)


def test_unknown_divergence_is_named():
    with pytest.raises(ValueError, match="known: rkl, kl, js"):
        divergences.get("tv", "fdistill")
