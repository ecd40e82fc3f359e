"""What every distillation method shares: noise-level samplers, the fake-score loss, the recipe.

Conventions are EDM's (see shared METHODS.md): ``x_t = x_0 + sigma * noise``, a denoiser is any
callable ``D(x, sigma, cond=None) -> x0_hat`` with ``sigma`` of shape ``[B]``, and the score is
``(D(x_t) - x_t) / sigma**2``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, NamedTuple

import torch

SIGMA_DATA = 0.5
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0

Denoiser = Callable[..., torch.Tensor]


def karras_sigma(u: torch.Tensor | float, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO):
    """Karras et al.'s noise schedule: ``u`` in [0, 1] maps to sigma in [sigma_min, sigma_max]."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + u * (hi - lo)) ** rho


@dataclass(frozen=True)
class SigmaDistribution:
    """A distribution of noise levels, as the published training code samples them.

    kind ``lognormal``: ``ln sigma ~ N(mean, std)``;
    kind ``karras_uniform``: ``sigma = karras(u)``, ``u ~ U(0, u_max)``;
    kind ``karras_grid``: ``sigma = karras(i / (n - 1))`` with ``i`` uniform in ``[lo, hi]``.
    """

    kind: str
    mean: float = -1.2
    std: float = 1.2
    u_max: float = 1.0
    n: int = 1000
    lo: int = 0
    hi: int = 999

    def sample(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``batch`` noise levels (float32, shape ``[batch]``)."""
        if self.kind == "lognormal":
            eps = torch.randn(batch, device=device, generator=generator)
            return (self.mean + self.std * eps).exp()
        if self.kind == "karras_uniform":
            u = torch.rand(batch, device=device, generator=generator) * self.u_max
            return karras_sigma(u)
        if self.kind == "karras_grid":
            i = torch.randint(self.lo, self.hi + 1, (batch,), device=device, generator=generator)
            return karras_sigma(i.float() / (self.n - 1))
        raise ValueError(f"unknown sigma distribution kind {self.kind!r}")


LOGNORMAL = SigmaDistribution("lognormal", mean=-1.2, std=1.2)
KARRAS_U08 = SigmaDistribution("karras_uniform", u_max=0.8)
KARRAS_GRID = SigmaDistribution("karras_grid", lo=0, hi=999)
KARRAS_GRID_20_980 = SigmaDistribution("karras_grid", lo=20, hi=980)


class ChainPoint(NamedTuple):
    """A training sample and its place on the generator's chain, per sample: the step's output ``x0``
    (with gradients), its input ``x_in`` (constant), its noise level ``sigma`` and the chain's next
    one ``sigma_next`` (0 after the last step). TDM's losses place each step's target between them."""

    x0: torch.Tensor
    x_in: torch.Tensor
    sigma: torch.Tensor
    sigma_next: torch.Tensor


@dataclass(frozen=True)
class Modes:
    """Which networks are in train mode (dropout on) in each phase of an update; the rest are in eval.

    Names are ``"generator"``, ``"fake"`` and ``"teacher"``. In the fake-score phase the generator
    makes the fake score's training samples; in the generator phase the generator is trained.
    """

    generator_phase: frozenset = frozenset({"generator"})
    fake_phase: frozenset = frozenset({"fake"})

    def train(self, phase: str, network: str) -> bool:
        """True when ``network`` runs in train mode during ``phase`` (``"generator"`` or ``"fake"``)."""
        return network in {"generator": self.generator_phase, "fake": self.fake_phase}[phase]


# SiD (sid_training_loop.py): fake score in eval during the generator update, generator in eval
# when it makes the fake score's samples, teacher always in eval.
SID_MODES = Modes()
# Diff-Instruct (di_loss.py gloss): teacher and fake score both in train mode in the generator
# update (with one dropout mask, see methods/di.py); generator in eval for fake-phase samples.
DI_MODES = Modes(generator_phase=frozenset({"generator", "fake", "teacher"}))


@dataclass(frozen=True)
class Recipe:
    """How a method is trained, as data, so that one training step serves every method.

    An *iteration* is one fake-score update; a generator update comes with every
    ``fake_updates_per_generator_update``-th one (DMD2 counts its schedule in iterations).
    """

    sigma_init: float  # the generator is the denoiser evaluated once at this noise level
    generator_sigma: SigmaDistribution
    fake_sigma: SigmaDistribution
    lr: float  # the published learning rate of generator and fake score (a run's default)
    optimizer: str = "adam"  # "adam" or "adamw"
    betas: tuple[float, float] = (0.0, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None
    warmup_iterations: float = 0.0  # linear learning-rate warm-up from 0, in iterations
    fake_updates_per_generator_update: int = 1
    fake_lr_ratio: float = 1.0  # the fake score's published learning rate over the generator's (TDM: 5)
    fresh_latents_per_phase: bool = True  # False: fake updates reuse the generator's samples
    # False: the method trains no fake score (sCM); the step runs no fake-score phase, and an
    # iteration is a generator update.
    fake_score: bool = True
    # False: the generator loss takes no sample of the generator (``x_g=None``); sCM trains the
    # generator's denoiser on noised real data through the "student" input instead.
    generator_sample: bool = True
    # How a K-step generator moves between its steps: "stochastic" re-noises each output (DMD2),
    # "deterministic" follows the predicted noise (DDIM; TDM). One step has no between.
    chain: str = "stochastic"
    # True: both losses also take ``trajectory=``, the ``ChainPoint`` each sample was made at (its step's
    # input and noise levels; TDM's targets lie between a step's level and the next).
    chain_point: bool = False
    # Extra inputs of each loss, by name; the harness supplies every name it knows (see
    # bench/train/inputs.py): "teacher_pairs" (DMD's regression on (G(z_ref), teacher ODE output)),
    # "real_data" (real images and their conditioning), "discriminator" (the GAN / density-ratio
    # head on the fake network), "kimg" (training progress, for scheduled losses), "augment"
    # (EDM's augmentation at augment_p, for a fake score that takes augment labels), "student" (the
    # generator's denoiser as a function of (x, sigma): a consistency model), "loss_weight" (the
    # module ``Method.loss_weight_network()`` builds, trained with the generator), "generator_updates"
    # (generator updates so far, for schedules counted in iterations), "guidance" (a conditional suite's
    # guided teacher: ``.conditional(x, sigma, c)``, ``.unconditional(x, sigma)`` and ``.scale``).
    generator_inputs: tuple[str, ...] = ()
    fake_inputs: tuple[str, ...] = ()
    ema_halflife_kimg: float | None = 500.0
    # An integer K: the generator and the fake score are each K copies of the suite's networks, every
    # sample routed to the copy that owns its class (Multi-Student Distillation); ``router`` is the class ->
    # student table, "contiguous" (equal blocks) or one student index per class ("0,0,1,..."). Needs a
    # class-conditional suite (``Suite.classes``). None: one generator and one fake score.
    students: int | None = None
    router: str = "contiguous"
    precision: str = "fp32"
    # Dropout every network is built with. None keeps the teacher's own: the official SiD and DI
    # scripts pass 0.13, which is what EDM's DDPM++ was trained with; a network trained without
    # dropout should not gain it. DMD2 builds every network with 0.
    dropout: float | None = None
    modes: Modes = SID_MODES
    augment_p: float = 0.0  # EDM's non-leaking augmentation in the fake-score loss, at this probability
    fake_loss_reduction: str = "per_sample_sum"  # or "mean": over every element (DMD2)
    published: dict = field(default_factory=dict)  # batch, budget of the paper, for the docs


class Unguided:
    """A plain teacher seen as guided at scale 1, for guidance-based losses given no ``guidance=``: its
    ``cond=None`` is the unconditional denoiser (runs are refused earlier; unit tests call the losses so)."""

    scale = 1.0

    def __init__(self, teacher):
        self.teacher = teacher

    def conditional(self, x, sigma, cond):
        """``D(x, sigma, c)``."""
        return self.teacher(x, sigma, cond=cond)

    def unconditional(self, x, sigma):
        """``D(x, sigma, null)``."""
        return self.teacher(x, sigma, cond=None)


def per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum every dimension but the batch one."""
    return t.reshape(t.shape[0], -1).sum(1)


def per_sample_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch one."""
    return t.reshape(t.shape[0], -1).mean(1)


def expand_as_batch(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a ``[B]`` tensor so it broadcasts against ``x`` of shape ``[B, ...]``."""
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


class Method:
    """Base class of a distillation method: losses plus the recipe that trains them.

    Subclasses set ``name``, ``defaults`` (published hyperparameters) and ``recipe``, implement
    ``generator_loss`` and, where needed, ``check``/``training_recipe``.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""  # authors, year, title: for `bench methods`
    minimises: ClassVar[str] = ""  # the divergence (or loss) the generator is trained to minimise
    defaults: ClassVar[dict[str, Any]] = {}
    recipe: ClassVar[Recipe]
    WEIGHTINGS = ("paper", "none")

    def __init__(self, weighting: str = "paper", **hparams):
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            known = ", ".join(["weighting", *self.defaults]) or "none"
            raise ValueError(f"{self.name}: unknown hyperparameter {unknown[0]!r} (known: {known})")
        if weighting not in self.WEIGHTINGS:
            raise ValueError(f"{self.name}: weighting must be one of {self.WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        self.hparams = {**self.defaults, **hparams}
        for key, value in self.hparams.items():
            setattr(self, key, value)
        self.check()

    def check(self) -> None:
        """Raise ValueError naming the first invalid hyperparameter."""

    @property
    def training_recipe(self) -> Recipe:
        """The recipe for these hyperparameters (a method may adjust it, e.g. DMD2's GAN term)."""
        return self.recipe

    def loss_weight_network(self):
        """A module the generator loss trains alongside the generator (``None``: none; sCM's adaptive
        weighting). The harness builds it once, optimises it with the generator and checkpoints it."""
        return None

    def work_key(self, kimg: float) -> tuple:
        """What, besides the batch shape, decides which network passes a step at ``kimg`` runs: the
        harness measures a step's cost once per distinct key. ``()``: the same passes throughout; a
        method whose losses switch a term on at some point (SiDA's GAN term) returns where it stands."""
        return ()

    def config(self) -> dict[str, Any]:
        """Hyperparameters including the weighting, as stored in a run's config."""
        return {"weighting": self.weighting, **self.hparams}

    def in_use(self, latent_shape: tuple[int, ...]) -> dict[str, Any]:
        """``config()`` with every default that depends on the data (``None`` in ``defaults``) resolved
        for one sample of ``latent_shape``: the values the losses actually use, for readers."""
        return self.config()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # --- shared pieces --------------------------------------------------------------------
    def _noised(self, x, sigma, noise, dist: SigmaDistribution):
        if sigma is None:
            sigma = dist.sample(x.shape[0], device=x.device)
        sigma = sigma.to(device=x.device, dtype=x.dtype)
        if noise is None:
            noise = torch.randn_like(x)
        return x + expand_as_batch(sigma, x) * noise, sigma

    def fake_score_loss(self, x_g, fake: Denoiser, cond=None, sigma=None, noise=None, augment=None, **extra):
        """EDM denoising score matching of the fake denoiser on detached generator samples.

        Weight ``1/sigma^2 + 1/sigma_data^2``; summed over dimensions and averaged over the batch,
        or averaged over every element under the recipe's ``fake_loss_reduction="mean"`` (DMD2).
        Its minimiser is the exact denoiser of the noised generator distribution. ``augment``, when
        given, maps clean samples to ``(augmented samples, augment labels)`` (EDM's non-leaking
        augmentation); the labels condition the fake denoiser.
        """
        x0 = x_g.detach()
        labels = None
        if augment is not None:
            x0, labels = augment(x0)
        x_t, sigma = self._noised(x0, sigma, noise, self.training_recipe.fake_sigma)
        weight = 1 / sigma**2 + 1 / SIGMA_DATA**2
        kwargs = {} if labels is None else {"augment_labels": labels}
        error = (fake(x_t, sigma, cond=cond, **kwargs) - x0) ** 2
        if self.training_recipe.fake_loss_reduction == "mean":
            loss = (expand_as_batch(weight, error) * error).mean()
        else:
            loss = (weight * per_sample_sum(error)).mean()
        return loss, {"loss_fake": loss.detach()}

    def generator_loss(self, x_g, teacher: Denoiser, fake: Denoiser, cond=None, sigma=None, noise=None, **extra):
        """Scalar loss whose gradient with respect to the generator drives ``x_g`` to the teacher."""
        raise NotImplementedError

    def _normaliser(self, x_g, f_teacher):
        """SiD/DMD's per-sample normaliser ``sg(mean |x_g - f_phi|)`` under the paper weighting."""
        if self.weighting == "none":
            return torch.ones(x_g.shape[0], device=x_g.device, dtype=x_g.dtype)
        return per_sample_mean((x_g - f_teacher).abs()).detach().clamp_min(1e-8)


def check_positive(method: Method, name: str, allow_zero: bool = False) -> None:
    """Raise ValueError unless hyperparameter ``name`` is a finite positive number."""
    value = getattr(method, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{method.name}: {name} must be a finite {bound} number, got {value!r}")


def replace_recipe(recipe: Recipe, **changes) -> Recipe:
    """A copy of ``recipe`` with some fields changed."""
    return dataclasses.replace(recipe, **changes)


def contiguous_router(classes: int, students: int) -> list[int]:
    """Equal contiguous blocks of classes: class ``c`` belongs to student ``c * students // classes``."""
    return [c * students // classes for c in range(classes)]


def parse_router(router, classes: int | None, students: int) -> list[int]:
    """The class -> student table of ``router``: ``"contiguous"`` or an explicit assignment, one student
    index per class (a list, or a string such as ``"0,0,1,1,1"``). ``classes=None`` checks an explicit
    table on its own. ValueError naming the problem."""
    if not isinstance(students, int) or isinstance(students, bool) or students < 1:
        raise ValueError(f"students must be an integer >= 1, got {students!r}")
    if router == "contiguous":
        if classes is None:
            return []
        if students > classes:
            raise ValueError(f"{students} students for {classes} classes: every student needs a class")
        return contiguous_router(classes, students)
    table = router
    if isinstance(router, str):
        try:
            table = [int(part) for part in router.replace(" ", "").split(",") if part]
        except ValueError:
            table = None
    if not isinstance(table, (list, tuple)) or not all(isinstance(k, int) and not isinstance(k, bool) for k in table):
        raise ValueError(f"router must be 'contiguous' or one student index per class such as '0,0,1', got {router!r}")
    if classes is not None and len(table) != classes:
        raise ValueError(f"router lists {len(table)} classes; the suite has {classes}")
    if set(table) != set(range(students)):
        raise ValueError(f"router must give each of the {students} students a class and name no other, got {router!r}")
    return list(table)


def router_text(table: list[int]) -> str:
    """A class -> student table for readers: each student's classes as ranges, students apart by ``/``
    (4 contiguous students of 10 classes: ``0-2/3-4/5-7/8-9``)."""
    parts = []
    for k in range(max(table) + 1):
        owned, ranges = [c for c, s in enumerate(table) if s == k], []
        for c in owned:
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
        parts.append(",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges))
    return "/".join(parts)
