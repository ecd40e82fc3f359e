"""One training step serves every method.

The method's recipe says how many fake-score updates go with each generator update, whether they
reuse the generator's samples, which networks run in train mode in each phase, and which extra
inputs each loss takes; ``bench.train.inputs`` supplies those by name. The step knows no method and no
input. An *iteration* is one fake-score update (DMD2's unit), or a generator update for a method with no fake
score (sCM); learning-rate warm-up counts them.
"""
from __future__ import annotations

import math

import torch

from . import distributed as dist_utils
from . import inputs
from ..nets.ema import update_ema
from ..nets.modes import set_modes
from ..suites.base import to_device


class Diverged(Exception):
    """A non-finite loss, gradient, parameter or sample; the run stops with status ``diverged``."""


def draw_latents(suite, n: int, device, generator: torch.Generator | None = None):
    """``n`` latents and their conditioning, drawn on the CPU (reproducible across devices)."""
    z = torch.randn(n, *suite.latent_shape, generator=generator, device="cpu")
    return z.to(device), to_device(suite.sample_cond(n, generator), device)


def optimizer_step(opt, params, loss_fn, micro_batches: int, grad_clip, autocast):
    """Accumulate ``loss_fn(i)`` over micro-batches, average across processes, clip, step.

    Returns the mean loss, the gradient norm before clipping and the last micro-batch's logs.
    """
    opt.zero_grad(set_to_none=True)
    total, logs = 0.0, {}
    for i in range(micro_batches):
        with autocast:
            loss, logs = loss_fn(i)
        if not torch.isfinite(loss):
            raise Diverged(f"non-finite loss {loss.item()}")
        (loss / micro_batches).backward()
        total += loss.item() / micro_batches
    dist_utils.average_gradients(params)  # all of them: a gradient some process lacks is filled with zeros
    params = [p for p in params if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else math.inf)
    if not torch.isfinite(norm):
        raise Diverged(f"non-finite gradient norm {norm.item()}")
    opt.step()
    return total, norm.item(), logs


def set_warmup_lr(run, iteration: int) -> None:
    """Learning rates for ``iteration`` (0-based): linear from 0 over ``train.warmup_iterations``.

    As DMD2's ``constant_with_warmup`` scheduler: iteration ``k`` runs at ``min(1, k / warm-up)``
    of the full rate, for generator and fake score alike.
    """
    warm = run.train_opts.get("warmup_iterations") or 0.0
    factor = min(1.0, iteration / warm) if warm > 0 else 1.0
    for opt, lr in ((run.opt_g, run.config["lr_g"]), (run.opt_f, run.config["lr_fake"])):
        for group in opt.param_groups:
            group["lr"] = lr * factor


def set_phase_modes(run, phase: str | None) -> None:
    """Train or eval mode of generator, fake score and teacher for ``phase`` as the recipe says;
    ``None``: between steps (generator and fake score in train mode, the teacher in eval)."""
    modes = run.recipe.modes
    train = {"generator": modes.generator_phase, "fake": modes.fake_phase, None: {"generator", "fake"}}[phase]
    set_modes({"generator": run.generator, "fake": run.fake, "teacher": run.parts.teacher}, train)


def generator_loss_on(run, batch: int, keep: list | None = None):
    """The generator's loss on ``batch`` fresh latents (``keep`` collects its detached samples); a recipe
    with ``generator_sample=False`` (sCM) draws none and the loss gets ``x_g=None``."""
    x_g, cond, extra = None, None, {}
    if run.recipe.generator_sample:
        z, cond = draw_latents(run.suite, batch, run.device)
        x_g, extra = training_sample(run, z, cond)
        if keep is not None:
            keep.append((x_g.detach(), cond, {k: type(v)(*(t.detach() for t in v)) for k, v in extra.items()}))
    extra.update(inputs.supply(run.recipe.generator_inputs, run, batch))
    return run.method.generator_loss(x_g, run.parts.teacher, run.fake, cond=cond, **extra)


def training_sample(run, z, cond):
    """The generator's training sample of ``z`` and, where the recipe asks (``chain_point``), the
    ``trajectory=`` keyword with where on its chain each sample was made."""
    if not run.recipe.chain_point:
        return run.generator.training_sample(z, cond), {}
    point = run.generator.training_point(z, cond)
    return point.x0, {"trajectory": point}


def fake_loss_on(run, batch: int, reused: list | None = None):
    """The fake score's loss on the generator's kept samples when there are any, else on fresh ones."""
    if reused:
        x_g, cond, extra = reused.pop(0)
    else:
        z, cond = draw_latents(run.suite, batch, run.device)
        with torch.no_grad():
            x_g, extra = training_sample(run, z, cond)
    extra.update(inputs.supply(run.recipe.fake_inputs, run, batch))
    return run.method.fake_score_loss(x_g, run.fake, cond=cond, **extra)


def training_step(run) -> dict:
    """One generator update and its fake-score updates, in the method's ratio and order.

    ``run`` holds the networks, optimisers, method and progress (``bench.train.loop.Run``); returns the
    step's losses and gradient norms for stats.jsonl.
    """
    cfg, recipe = run.config, run.recipe
    rounds = cfg["batch"] // (cfg["batch_gpu"] * run.world)
    b = cfg["batch_gpu"]
    grad_clip = run.train_opts["grad_clip"]
    reused = []  # DMD2: the generator's samples feed the first fake update of the step
    ratio = recipe.fake_updates_per_generator_update
    first = run.step * ratio  # iterations before this step; the generator update comes with the first

    def generator_loss(i):
        return generator_loss_on(run, b, None if recipe.fresh_latents_per_phase else reused)

    def fake_loss(i):
        return fake_loss_on(run, b, reused)

    def generator_phase():
        set_warmup_lr(run, first)
        set_phase_modes(run, "generator")
        for p in run.fake_params:  # gradients reach the generator through the fake's inputs only
            p.requires_grad_(False)
        try:
            return optimizer_step(run.opt_g, run.generator_params, generator_loss, rounds, grad_clip, run.autocast)
        finally:
            for p in run.fake_params:
                p.requires_grad_(True)

    def fake_phase():
        out = None
        set_phase_modes(run, "fake")
        for i in range(ratio):
            set_warmup_lr(run, first + i)
            out = optimizer_step(run.opt_f, run.fake_params, fake_loss, rounds, grad_clip, run.autocast)
        return out

    work = run.method.work_key(run.nimg / 1000)  # the kimg the losses see (bench.train.inputs.Progress)

    def accounted(name, phase):  # each phase shape's passes and FLOPs are measured once (bench.train.cost)
        with run.cost.phase(name, b, rounds, ratio, *work):
            return phase()

    loss_f = norm_f = None
    logs_f = {}
    if not recipe.fake_score:  # sCM trains no fake score: the generator update is the whole step
        loss_g, norm_g, logs_g = accounted("generator", generator_phase)
    elif recipe.fresh_latents_per_phase:  # SiD's order: fake score first, then generator
        loss_f, norm_f, logs_f = accounted("fake", fake_phase)
        loss_g, norm_g, logs_g = accounted("generator", generator_phase)
    else:  # DMD2's order: generator on fresh samples, then fake updates starting on the same ones
        loss_g, norm_g, logs_g = accounted("generator", generator_phase)
        loss_f, norm_f, logs_f = accounted("fake", fake_phase)
    set_phase_modes(run, None)
    update_ema(run.ema, run.generator, cfg["batch"], run.nimg + cfg["batch"], run.train_opts["ema_halflife_kimg"],
               run.train_opts["ema_rampup"])
    run.step += 1
    run.nimg += cfg["batch"]
    row = {"iterations": run.step * ratio, "loss_g": loss_g, "grad_norm_g": norm_g}
    if recipe.fake_score:
        row.update(loss_fake=loss_f, grad_norm_fake=norm_f)
    for k, v in {**logs_f, **logs_g}.items():
        row.setdefault(k, float(v))
    return row


def check_finite(run) -> None:
    """Raise Diverged if a generator or fake-score parameter is not finite."""
    for name, net in (("generator", run.generator), ("fake score", run.fake)):
        for p in net.parameters():
            if not torch.isfinite(p).all():
                raise Diverged(f"non-finite {name} parameter")


def loss_bytes_per_sample(run) -> float:
    """What one more sample of a micro-batch adds to the activations autograd keeps, measured.

    The generator's and the fake score's losses are evaluated forward only at two small batches
    (``bench.train.memory``), as the step evaluates them (fake parameters frozen in the generator's);
    returns the larger slope. The run's random streams and parameters are left as they were.
    """
    from .memory import bytes_per_sample

    for provider in run.inputs:  # fixed inputs (DMD's teacher pairs) exist before the first step anyway
        provider.prepare(run)

    def generator_loss(b):
        with run.autocast:
            return generator_loss_on(run, b)[0]

    def fake_loss(b):
        with run.autocast:
            return fake_loss_on(run, b)[0]

    frozen = [p for p in run.fake_params if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        per_generator = bytes_per_sample(generator_loss)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return max(per_generator, bytes_per_sample(fake_loss)) if run.recipe.fake_score else per_generator
