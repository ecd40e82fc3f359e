"""SiD, Score identity Distillation (Zhou et al., 2024)."""

from .base import KARRAS_U08, LOGNORMAL, SID_MODES, Method, Recipe, check_positive, per_sample_sum

SID_RECIPE = Recipe(
    sigma_init=2.5,
    generator_sigma=KARRAS_U08,
    fake_sigma=LOGNORMAL,
    lr=1e-5,  # sid_train.py --lr and --glr defaults, and run_sid.sh
    optimizer="adam",
    betas=(0.0, 0.999),
    eps=1e-8,
    ema_halflife_kimg=500.0,
    dropout=None,  # the teacher's own (see the recipe's field); sid_train.py passes 0.13 to every network
    modes=SID_MODES,
    augment_p=0.12,  # sid_train.py --augment default (EDM's pipe, xflip at full strength)
    fake_inputs=("augment",),
    published=dict(batch=256, budget_mimg=500, loss_scale=100.0),
)


class SiD(Method):
    """``[(1-alpha)|Delta|^2 + Delta.(f_psi - x_g)] / sg(mean|x_g - f_phi|)``, Delta = f_phi - f_psi.

    Gradients flow through ``x_g`` and through both denoisers' inputs. With ``alpha = 0.5`` and
    ``weighting="none"`` its expected gradient is ``sigma^4 / 2`` times that of the Fisher
    divergence ``E_q |s_q - s_p|^2``; the published ``alpha = 1.2`` is deliberately not.
    The paper weighting divides by the normaliser and scales the loss by 100.
    """
    paper = "Zhou et al. 2024, Score identity Distillation (ICML)"
    minimises = "Fisher divergence (model-based explicit score matching)"

    name = "sid"
    defaults = {"alpha": 1.2}
    recipe = SID_RECIPE
    loss_scale = 100.0

    def check(self):
        check_positive(self, "alpha", allow_zero=True)

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, **extra):
        x_t, sigma = self._noised(x_g, sigma, noise, self.recipe.generator_sigma)
        f_teacher, f_fake = teacher(x_t, sigma, cond=cond), fake(x_t, sigma, cond=cond)
        delta = f_teacher - f_fake
        per_sample = per_sample_sum((1 - self.alpha) * delta**2 + delta * (f_fake - x_g))
        per_sample = per_sample / self._normaliser(x_g, f_teacher)
        scale = self.loss_scale if self.weighting == "paper" else 1.0
        loss = scale * per_sample.mean()
        return loss, {"loss_g": loss.detach(), "delta_rms": delta.detach().pow(2).mean().sqrt()}
