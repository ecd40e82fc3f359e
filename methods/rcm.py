"""rCM, score-regularised continuous-time consistency (Zheng et al., 2025, "Large Scale Diffusion
Distillation via Score-Regularized Continuous-Time Consistency").

sCM's consistency loss on noised real data (``methods/scm.py``) plus DMD's reverse-divergence
distribution-matching loss on the generator's own samples (``methods/dmd.py``'s term, called as it is,
with the fake score it needs), weighted ``dmd_weight``. Read from the authors' code, NVlabs/rcm
(``rcm/models/t2v_model_distill_rcm.py`` and its Wan2.1 experiment config; read, not copied):

- the consistency term has no learned weight and no prior weighting, and normalises the tangent by its
  per-sample L2 norm (``g / (|g|_2 + 0.1)``); both terms are per-sample sums scaled 100 (sCM) and 1
  (DMD), so here, with both as per-element means, ``dmd_weight = 1 / 100``;
- the DMD term starts when the tangent warm-up ends (``tangent_warmup_iterations``, 1000 generator
  updates in the Wan run); the student updates once per 5 fake-score (critic) updates, each on fresh
  samples; AdamW, betas (0, 0.999), weight decay 0.01, no gradient clipping, bf16.

Differences, documented: rCM's warm-up blends the first tangent term as ``sqrt(1 - r^2 sin^2 t)`` and
leaves the JVP term unscaled; this uses sCM's ``g1 + r g2`` (the same tangent once ``r = 1``). The DMD
term samples sigma as DMD does (the Karras grid, indices 20..980), not rCM's log-normal video schedule,
and the fake score uses the harness's EDM weighting (rCM: ``1 / sin^2 t`` with sigma_d 1). rCM's fake
score learns at 4e-7 against the student's 2e-6; a run's ``--lr-fake`` sets it. ``sigma`` and ``noise``
given to ``generator_loss`` are the DMD term's (shaped like ``x_g``); ``real_sigma`` and ``real_noise``
are the consistency term's.
"""
from .base import KARRAS_GRID, check_positive, replace_recipe
from .dmd import DMD
from .scm import SCM, SCM_RECIPE

RCM_RECIPE = replace_recipe(
    SCM_RECIPE,
    fake_sigma=KARRAS_GRID,
    lr=2e-6,  # wan2pt1_t2v.py: optimizer lr 2e-6 (fake score 4e-7)
    optimizer="adamw",
    betas=(0.0, 0.999),
    weight_decay=0.01,
    dropout=None,  # the teacher's own
    fake_score=True,
    generator_sample=True,
    fake_updates_per_generator_update=5,  # student_update_freq
    generator_inputs=("real_data", "student", "generator_updates"),
    precision="bf16",
    published=dict(batch="not stated for images", lr_fake=4e-7, loss_scale_scm=100.0, loss_scale_dmd=1.0,
                   tangent_warmup_iterations=1000, iterations="100k (Wan2.1 1.3B)"),
)


class RCM(SCM):
    """sCM's consistency loss plus ``dmd_weight`` times DMD's distribution-matching loss."""
    paper = "Zheng et al. 2025, Large Scale Diffusion Distillation via Score-Regularized Continuous-Time Consistency"
    minimises = "consistency loss plus reverse KL"

    name = "rcm"
    defaults = {"tangent_c": 0.1, "tangent_warmup_iterations": 1000, "dmd_weight": 0.01}
    recipe = RCM_RECIPE
    tangent_norm = "l2"
    prior_weighting = False

    def __init__(self, weighting: str = "paper", **hparams):
        super().__init__(weighting, **hparams)
        self._dmd = DMD(weighting=self.weighting, regression_weight=0.0)  # the tested DMD term, reused

    def check(self):
        super().check()
        check_positive(self, "dmd_weight", allow_zero=True)

    def loss_weight_network(self):
        return None

    def dmd_active(self, generator_updates) -> bool:
        """rCM adds the DMD term once the tangent warm-up is over (always under ``weighting="none"``)."""
        return self.weighting == "none" or generator_updates >= self.tangent_warmup_iterations

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, real=None, real_cond=None,
                       student=None, generator_updates=0, real_sigma=None, real_noise=None, **extra):
        if real is None or student is None:
            raise ValueError("rcm: the consistency loss needs real= data and student= (the generator's denoiser)")
        loss, logs = self.consistency_loss(real, teacher, student, real_cond, real_sigma, real_noise, None,
                                           generator_updates)
        if self.dmd_weight > 0:
            # computed during the warm-up too, at weight 0: a step's passes stay the same throughout, as the
            # cost meter (which measures a phase once) assumes
            dm, direction = self._dmd.distribution_matching_loss(x_g, teacher, fake, cond, sigma, noise)
            logs.update(loss_dm=dm.detach(), direction_rms=direction.pow(2).mean().sqrt())
            loss = loss + (self.dmd_weight if self.dmd_active(generator_updates) else 0.0) * dm
        logs["loss_g"] = loss.detach()
        return loss, logs
