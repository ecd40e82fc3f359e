"""The extra inputs a method's losses declare in its recipe, and how a run supplies each.

A recipe names inputs (``generator_inputs``, ``fake_inputs``); each name has a provider here with
three hooks: ``build`` once the networks exist (before the optimisers, so new parameters train),
``prepare`` before training starts (fixed data, kept in the checkpoint), and ``supply``: the
loss's keyword arguments for one micro-batch. A method with a new kind of input adds one provider
to ``PROVIDERS``; the training step never names an input.
"""
from __future__ import annotations

import difflib

import torch

from ..errors import BadInput
from ..nets.augment import AUGMENT_DIM, AugmentPipe, augment_dim
from ..suites.base import slice_cond, to_device

PAIRS_SEED_OFFSET = 2_000_006  # the regression latents of seed s, apart from training and evaluation noise


class Provider:
    """Supplies one named input to the losses of a run."""

    def build(self, run) -> None:
        """Create what the input needs once the run's networks exist."""

    def prepare(self, run) -> None:
        """Compute fixed data before the first step (a resumed run already has it)."""

    def supply(self, run, batch: int) -> dict:
        """Keyword arguments for one loss call on a micro-batch of ``batch``."""
        raise NotImplementedError


class TeacherPairs(Provider):
    """DMD's regression targets: the teacher's ODE output for a fixed bank of latents."""

    def prepare(self, run):
        if run.pairs is not None:
            return
        n = run.train_opts["n_regression_pairs"]
        gen = torch.Generator().manual_seed(run.config["seed"] + PAIRS_SEED_OFFSET)
        z = torch.randn(n, *run.suite.latent_shape, generator=gen)
        cond = run.suite.sample_cond(n, gen)  # class labels; None (unconditional) keeps the pairs (z, x)
        cond = cond if torch.is_tensor(cond) else None  # text conditioning: unconditional pairs, as before
        with torch.no_grad(), run.cost.once("regression_pairs"):  # a one-off cost of the run
            x = torch.cat([run.suite.teacher_sample(run.parts.teacher, z[i:i + 256].to(run.device),
                                                    to_device(slice_cond(cond, i, i + 256), run.device)).cpu()
                           for i in range(0, n, 256)])
        run.pairs = (z, x) if cond is None else (z, x, cond)

    def supply(self, run, batch):
        idx = torch.randint(0, run.pairs[0].shape[0], (batch,))
        z_ref, x_ref = run.pairs[0][idx].to(run.device), run.pairs[1][idx].to(run.device)
        cond = to_device(run.pairs[2][idx], run.device) if len(run.pairs) > 2 else None
        return {"pairs": (run.generator(z_ref, cond), x_ref)}


class RealData(Provider):
    """Real training examples and their conditioning, from the suite."""

    def supply(self, run, batch):
        real, real_cond = run.suite.real_data(batch, None)
        return {"real": real.to(run.device), "real_cond": to_device(real_cond, run.device)}


class Augment(Provider):
    """EDM's non-leaking augmentation for the fake-score loss, at ``train.augment_p``.

    Only a fake score that takes augment labels (``augment_dim`` 9, EDM's DDPM++) is augmented:
    without the labels the augmentation would leak into what it learns.
    """

    def build(self, run):
        p = run.train_opts.get("augment_p", 0.0)
        run.augment = AugmentPipe(p) if p > 0 and augment_dim(run.fake) == AUGMENT_DIM else None

    def supply(self, run, batch):
        return {} if run.augment is None else {"augment": run.augment}


class Discriminator(Provider):
    """A GAN discriminator built by the suite, trained with the fake score."""

    def build(self, run):
        if run.parts.discriminator is None:
            run.parts.discriminator = run.suite.discriminator(run.fake)

    def supply(self, run, batch):
        return {"discriminator": run.parts.discriminator}


class Progress(Provider):
    """Training progress in kimg, for losses with a schedule (SiDA's and Uni-Instruct's warm-ups)."""

    def supply(self, run, batch):
        return {"kimg": run.nimg / 1000}


class GeneratorUpdates(Provider):
    """Generator updates so far, for schedules counted in iterations (sCM's and rCM's tangent warm-up)."""

    def supply(self, run, batch):
        return {"generator_updates": run.step}


class Student(Provider):
    """The generator's denoiser as a function ``D(x, sigma, cond)``: a consistency model trained at every
    noise level (sCM), with gradients to the generator's parameters."""

    def supply(self, run, batch):
        return {"student": run.generator.denoiser}


class LossWeight(Provider):
    """The module the method's generator loss trains alongside the generator (sCM's adaptive weighting):
    built by ``Method.loss_weight_network()``, optimised with the generator, kept in the checkpoint."""

    def build(self, run):
        if run.parts.loss_weight is None:
            module = run.method.loss_weight_network()
            run.parts.loss_weight = None if module is None else module.to(run.device)

    def supply(self, run, batch):
        return {} if run.parts.loss_weight is None else {"loss_weight": run.parts.loss_weight}


class Guidance(Provider):
    """The conditional suite's guided teacher, whose conditional and unconditional parts and scale the
    guidance-based losses read (``GuidedDenoiser``; ``runconfig`` refuses a suite without one)."""

    def supply(self, run, batch):
        return {"guidance": run.parts.teacher}


PROVIDERS: dict[str, Provider] = {
    "teacher_pairs": TeacherPairs(),
    "real_data": RealData(),
    "discriminator": Discriminator(),
    "kimg": Progress(),
    "augment": Augment(),
    "generator_updates": GeneratorUpdates(),
    "student": Student(),
    "loss_weight": LossWeight(),
    "guidance": Guidance(),
}


def providers_for(recipe) -> list[Provider]:
    """The providers of every input ``recipe`` names, in order; BadInput for an unknown name."""
    names = dict.fromkeys([*recipe.generator_inputs, *recipe.fake_inputs])
    for name in names:
        if name not in PROVIDERS:
            close = difflib.get_close_matches(name, PROVIDERS, n=2)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise BadInput(f"the method needs input {name!r} that no provider supplies{hint} "
                           f"(known: {', '.join(PROVIDERS)})")
    return [PROVIDERS[name] for name in names]


def supply(names: tuple[str, ...], run, batch: int) -> dict:
    """The keyword arguments of inputs ``names`` for one micro-batch."""
    extra = {}
    for name in names:
        extra.update(PROVIDERS[name].supply(run, batch))
    return extra
