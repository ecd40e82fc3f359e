"""The class-conditional Gaussian mixture: every component a class, exact conditional and guided scores.

The teacher is ``GuidedDenoiser(ClassConditionalMixture, guidance)``: component ``c``'s exact denoiser,
the mixture's for the null class, and their guided combination, all closed forms, so a guidance-based
estimator can be checked against the gradient of its stated objective. Generator and fake score are the
gaussian suite's MLP with the one-hot class as an input.

Guidance above 1 makes a distribution with no closed form (CFG's samples follow no single noised
family), so the evaluator measures against the guided teacher's own Heun samples: the Fréchet distance
of the Gaussian fits per class (``frechet_class``, the mean over classes) and over all samples
(``frechet``), and the Bayes classifier's accuracy on the requested classes (``class_accuracy``: the
exact posterior of the clean mixture).
"""
from __future__ import annotations

import torch

from .. import validate
from ..metrics.base import Evaluator, Measurement
from ..nets.guidance import GuidedDenoiser, one_hot
from ..nets.mlp import ResidualMLP
from ..nets.precond import EDMPrecond, OneStepGenerator
from .base import Parts, heun_sampler
from .gaussian import ClassConditionalMixture, GaussianSuite, frechet_distance

REFERENCE_SEED_OFFSET = 3_000_017  # the teacher's reference samples, apart from training and evaluation noise
IMPL = "exact Gaussian fits against the guided teacher's Heun samples (distill-bench)"


def _fit(x: torch.Tensor):
    return x.mean(0), torch.cov(x.T)


class ConditionalGaussianEvaluator(Evaluator):
    """Per-class and overall Fréchet distances to the guided teacher's samples, and class accuracy."""

    def __init__(self, suite: "ConditionalGaussianSuite", n_samples: int, seed: int):
        self.n_samples, self.mixture = n_samples, suite.mixture
        gen = torch.Generator().manual_seed(seed + REFERENCE_SEED_OFFSET)
        z = torch.randn(n_samples, *suite.latent_shape, generator=gen)
        labels = torch.arange(n_samples) % suite.classes
        cond = one_hot(labels, suite.classes)
        reference = suite.teacher_sample(suite.teacher, z, cond).double()
        self.reference = {int(k): _fit(reference[labels == k]) for k in range(suite.classes)}
        self.overall = _fit(reference)

    def evaluate(self, samples, cond=None):
        x = samples.double().reshape(samples.shape[0], -1).cpu()
        labels = cond.argmax(1).cpu()
        per_class = [frechet_distance(*_fit(x[labels == k]), *self.reference[k]).item()
                     for k in self.reference if int((labels == k).sum()) > x.shape[1]]
        overall = frechet_distance(*_fit(x), *self.overall).item()
        predicted = self.mixture.log_posterior(x.to(self.mixture.means.dtype), torch.zeros(1)).argmax(1)
        accuracy = (predicted == labels).double().mean().item()
        return [Measurement("frechet", overall, len(x), IMPL),
                Measurement("frechet_class", sum(per_class) / len(per_class), len(x), IMPL),
                Measurement("class_accuracy", accuracy, len(x), IMPL)]


class ConditionalGaussianSuite(GaussianSuite):
    """The gaussian suite's mixture with its components as classes and a guided teacher."""

    name = "gaussian_cond"
    guided = True
    summary = {
        "teacher": "exact guided denoiser of a class-conditional Gaussian mixture (closed form)",
        "data": "samples of the mixture with their classes",
        "shape": "8",
        "conditioning": "class (one component each), classifier-free guidance suite.guidance",
        "metrics": "frechet, frechet_class, class_accuracy (against the guided teacher's samples)",
    }
    defaults = {**GaussianSuite.defaults, "guidance": 2.0}

    def __init__(self, **options):
        super().__init__(**options)
        validate.positive(self.option_name("guidance"), self.options["guidance"])
        self.mixture = ClassConditionalMixture(self.teacher.log_weights.exp(), self.teacher.means, self.teacher.stds)
        self.teacher = GuidedDenoiser(self.mixture, self.options["guidance"])

    @property
    def classes(self) -> int:
        return int(self.options["components"])

    def _mlp(self):
        o = self.options
        return EDMPrecond(ResidualMLP(int(o["dim"]), width=int(o["width"]), depth=int(o["depth"]),
                                      cond_dim=self.classes))

    def build(self, sigma_init, device):
        generator = OneStepGenerator(self._mlp(), sigma_init).to(device)
        return Parts(teacher=self.teacher.to(device), generator=generator, fake=self._mlp().to(device))

    def sample_cond(self, n, generator):
        return one_hot(torch.randint(0, self.classes, (n,), generator=generator), self.classes)

    def teacher_sample(self, teacher, z, cond=None, steps=None):
        return heun_sampler(teacher, z, cond, steps=int(steps or self.options["teacher_steps"]))

    def teacher_info(self, steps=None):
        return {"sampler": "heun", "steps": int(steps or self.options["teacher_steps"]),
                "guidance": float(self.options["guidance"])}

    def real_data(self, n, generator):
        labels = torch.randint(0, self.classes, (n,), generator=generator)
        return self.mixture.sample(n, generator, labels=labels).float(), one_hot(labels, self.classes)

    def evaluator(self, device):
        return ConditionalGaussianEvaluator(self, int(self.options["n_eval"]), int(self.options["teacher_seed"]))
