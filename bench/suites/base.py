"""What a suite is: the teacher, how to build generator and fake score, samplers, the evaluator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .. import validate
from ..errors import BadInput
from ..registry import unknown_name
from ..metrics.base import Evaluator


@dataclass
class Parts:
    """The three networks of a distillation run, on their device.

    ``teacher`` and ``fake`` are denoisers ``D(x, sigma, cond=None)``; ``generator`` maps
    ``(z, cond)`` to a sample. ``discriminator`` is optional (DMD2's GAN head on the fake network), and
    so is ``loss_weight`` (built by the method, trained with the generator).
    """

    teacher: nn.Module
    generator: nn.Module
    fake: nn.Module
    discriminator: nn.Module | None = None
    loss_weight: nn.Module | None = None  # a method's own module trained with the generator (sCM's weighting)


class Suite:
    """Base class of a suite. ``defaults`` are its options, overridable with ``--set suite.KEY=V``."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    # For `bench suites`: what a reader needs to pick a suite (teacher, data, shape, conditioning, metrics).
    summary: ClassVar[dict[str, str]] = {}
    samples_are_images: ClassVar[bool] = True  # False: the generator makes latents or vectors (bench generate refuses)
    guided: ClassVar[bool] = False  # True: the teacher is a GuidedDenoiser (conditional, classifier-free guidance)
    samples_are_images: ClassVar[bool] = True  # False: the generator makes latents or vectors
    decodes_to_images: ClassVar[bool] = False  # True: ``to_images`` decodes its latents (bench generate writes those)

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise BadInput(f"suite {self.name}: {unknown_name('option', unknown[0], self.defaults)}")
        for key, value in options.items():
            validate.like_default(self.option_name(key), value, self.defaults[key])
        for key in ("n_eval", "n_eval_final"):  # one evaluated sample has no covariance
            if key in options:
                validate.sample_count(self.option_name(key), options[key])
        self.options = {**self.defaults, **options}

    def option_name(self, key: str) -> str:
        """How errors name option ``key`` (``suite.KEY`` of suite NAME)."""
        return f"suite {self.name}: suite.{key}"

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent ``z`` (and of one sample)."""
        raise NotImplementedError

    @property
    def classes(self) -> int | None:
        """How many classes its conditioning has (one-hot rows ``[B, classes]``), or None: unconditional,
        or conditioned on something else (prompts). Methods that route samples by class need it."""
        return None

    def student_info(self) -> dict[str, Any]:
        """What sets the generator apart from a copy of the teacher (e.g. a wider student), for readers: it
        joins a run's ``hparams_in_use``, so config labels and ``hp_`` columns show it. Empty by default."""
        return {}

    def build(self, sigma_init: float, device: torch.device) -> Parts:
        """Teacher (frozen), generator and fake score, both initialised from the teacher."""
        raise NotImplementedError

    def load_teacher(self, device: torch.device) -> nn.Module:
        """The teacher denoiser alone (suites with a costly build override this)."""
        return self.build(1.0, device).teacher

    def sample_cond(self, n: int, generator: torch.Generator) -> Any:
        """Conditioning for ``n`` samples (labels, prompt embeddings), or None."""
        return None

    def discriminator(self, fake: nn.Module) -> nn.Module:
        """DMD2's GAN head on ``fake``'s bottleneck features (suites with other networks override)."""
        from ..nets.precond import BottleneckDiscriminator
        from ..nets.routed import prototype

        if not hasattr(getattr(prototype(fake), "model", None), "features"):
            raise BadInput(f"suite {self.name}: the fake network exposes no bottleneck features for a GAN head")
        return BottleneckDiscriminator(fake, self.latent_shape).to(next(fake.parameters()).device)

    def real_data(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        """``n`` real training examples and their conditioning (DMD2's GAN term)."""
        raise BadInput(f"suite {self.name} has no real data")

    def check_real_data(self) -> None:
        """BadInput unless ``real_data`` can serve (checked before a run that needs it starts)."""
        if type(self).real_data is Suite.real_data:
            raise BadInput(f"suite {self.name} has no real data")

    def teacher_sample(self, teacher: nn.Module, z: torch.Tensor, cond: Any = None, steps: int | None = None) -> torch.Tensor:
        """The teacher's own multi-step sampler from latents ``z`` (the leaderboard's baseline row), at the
        suite's ``teacher_steps`` or at ``steps`` (the teacher's curve against NFE)."""
        raise NotImplementedError

    def teacher_info(self, steps: int | None = None) -> dict[str, Any]:
        """What identifies the teacher's baseline row (sampler, steps), at ``steps`` when given."""
        return {}

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        """Samples as images in [-1, 1] for sample grids (latent-space suites decode them)."""
        return samples

    def evaluator(self, device: torch.device) -> Evaluator:
        raise NotImplementedError


def to_device(cond, device):
    """Conditioning (a tensor, a dict of tensors, or None) on ``device``."""
    if isinstance(cond, torch.Tensor):
        return cond.to(device)
    if isinstance(cond, dict):
        return {k: to_device(v, device) for k, v in cond.items()}
    return cond


def slice_cond(cond, i: int, j: int):
    """Rows ``i:j`` of conditioning: a tensor, a list, a dict of those (entries may be None), or None."""
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: slice_cond(v, i, j) for k, v in cond.items()}
    return cond[i:j]


def heun_sampler(denoiser, z, cond=None, steps: int = 18, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """EDM's deterministic 2nd-order Heun sampler (NFE = 2 * steps - 1) from ``z ~ N(0, I)``."""
    from methods.base import karras_sigma

    u = torch.linspace(1, 0, steps, device=z.device, dtype=torch.float64)
    sigmas = torch.cat([karras_sigma(u, sigma_min, sigma_max, rho), torch.zeros(1, device=z.device, dtype=torch.float64)])
    x = z.to(torch.float64) * sigmas[0]
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - denoiser(x.float(), s.float().expand(x.shape[0]), cond=cond).double()) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            d2 = (x_next - denoiser(x_next.float(), s_next.float().expand(x.shape[0]), cond=cond).double()) / s_next
            x_next = x + (s_next - s) * (0.5 * d + 0.5 * d2)
        x = x_next
    return x.float()
