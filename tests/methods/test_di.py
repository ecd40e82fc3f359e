"""DI: the gradient of its generator loss is sigma^2 times the gradient of KL(q_sigma || p_sigma)."""
import copy

import pytest
import torch

import methods

THETAS = (0, 1)  # two generator parameter settings: the factor must not change between them


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_gradient_is_sigma_squared_times_kl_gradient(case, closed_forms, sigma):
    di = methods.create("di", weighting="none")
    results = []
    for seed in THETAS:
        theta = case.theta(seed)
        results.append(closed_forms.compare(case.loss_gradient(di, theta, sigma),
                                            case.divergence_gradient(closed_forms.kl, theta, sigma)))
    print(f"di sigma={sigma}: (cosine, ratio/sigma^2) =", [(c, r / sigma**2) for c, r in results])
    assert closed_forms.proportional(results, sigma**2), results


def test_paper_weighting_is_unit_weight():
    """The published DI loss already has unit weight: "paper" and "none" give the same loss and gradient."""
    x_g = torch.randn(4, 3, requires_grad=True)
    sigma, noise = torch.tensor([0.1, 0.5, 1.0, 3.0]), torch.randn(4, 3)
    teacher = lambda x, s, cond=None: 0.5 * x  # noqa: E731
    fake = lambda x, s, cond=None: 0.2 * x + 0.1  # noqa: E731
    x_t = x_g.detach() + sigma[:, None] * noise
    by_hand = ((fake(x_t, sigma) - teacher(x_t, sigma)) * x_g).sum(1).mean()
    for weighting in ("paper", "none"):
        loss, _ = methods.create("di", weighting=weighting).generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
        torch.testing.assert_close(loss, by_hand)
        (grad,) = torch.autograd.grad(loss, x_g)
        torch.testing.assert_close(grad, (fake(x_t, sigma) - teacher(x_t, sigma)) / 4)


def test_recipe_is_published():
    recipe = methods.create("di").training_recipe
    assert recipe.sigma_init == 1.0 and recipe.optimizer == "adam" and recipe.betas == (0.0, 0.999)
    assert recipe.generator_sigma == recipe.fake_sigma
    assert (recipe.generator_sigma.kind, recipe.generator_sigma.mean, recipe.generator_sigma.std) == ("lognormal", -1.2, 1.2)
    assert recipe.fake_updates_per_generator_update == 1 and recipe.fresh_latents_per_phase


class DropoutDenoiser(torch.nn.Module):
    """A denoiser with dropout inside, so two calls in train mode differ unless their masks agree."""

    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(6, 32)
        self.outer = torch.nn.Linear(32, 6)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x, sigma, cond=None):
        return x + self.outer(self.drop(torch.tanh(self.inner(x))))


def test_teacher_and_fake_share_one_dropout_mask():
    """di_loss.py restores the random state between the two calls: at fake = teacher, both in train
    mode, the direction and the generator gradient are exactly zero."""
    teacher = DropoutDenoiser().train()
    fake = copy.deepcopy(teacher).train()
    x_g = torch.randn(16, 6, requires_grad=True)
    loss, logs = methods.create("di").generator_loss(x_g, teacher, fake)
    assert logs["direction_rms"] == 0 and not torch.autograd.grad(loss, x_g)[0].any()
    x_t, sigma = torch.randn(16, 6), torch.ones(16)
    assert not torch.equal(teacher(x_t, sigma), fake(x_t, sigma))  # separate calls: different masks


def test_recipe_follows_di_train_py():
    recipe = methods.create("di").training_recipe
    assert (recipe.lr, recipe.dropout, recipe.augment_p, recipe.fake_loss_reduction) == (1e-5, None, 0.12, "per_sample_sum")
    assert recipe.modes.train("generator", "teacher") and recipe.modes.train("generator", "fake")
    assert not recipe.modes.train("fake", "generator") and recipe.modes.train("fake", "fake")
