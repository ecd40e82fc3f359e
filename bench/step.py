"""One training step serves every method.

The method's recipe says how many fake-score updates go with each generator update, whether they
reuse the generator's samples, and which extra inputs each loss takes; ``bench.inputs`` supplies
those by name. The step knows no method and no input.
"""
from __future__ import annotations

import math

import torch

from . import distributed as dist_utils
from . import inputs
from .nets.ema import update_ema
from .suites.base import to_device


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
    params = [p for p in params if p.grad is not None]
    dist_utils.average_gradients(params)
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else math.inf)
    if not torch.isfinite(norm):
        raise Diverged(f"non-finite gradient norm {norm.item()}")
    opt.step()
    return total, norm.item(), logs


def set_warmup_lr(run) -> None:
    """Linear learning-rate warm-up over ``train.warmup_kimg`` (EDM's ``lr_rampup_kimg``)."""
    warm_nimg = (run.train_opts["warmup_kimg"] or 0.0) * 1000
    factor = min(1.0, run.nimg / warm_nimg) if warm_nimg > 0 else 1.0
    for opt, lr in ((run.opt_g, run.config["lr_g"]), (run.opt_f, run.config["lr_fake"])):
        for group in opt.param_groups:
            group["lr"] = lr * factor


def training_step(run) -> dict:
    """One generator update and its fake-score updates, in the method's ratio and order.

    ``run`` holds the networks, optimisers, method and progress (``bench.loop.Run``); returns the
    step's losses and gradient norms for stats.jsonl.
    """
    cfg, recipe = run.config, run.recipe
    rounds = cfg["batch"] // (cfg["batch_gpu"] * run.world)
    b = cfg["batch_gpu"]
    grad_clip = run.train_opts["grad_clip"]
    reused = []  # DMD2: the generator's samples feed the first fake update of the step
    set_warmup_lr(run)

    def generator_loss(i):
        z, cond = draw_latents(run.suite, b, run.device)
        x_g = run.generator(z, cond)
        if not recipe.fresh_latents_per_phase:
            reused.append((x_g.detach(), cond))
        extra = inputs.supply(recipe.generator_inputs, run, b)
        return run.method.generator_loss(x_g, run.parts.teacher, run.fake, cond=cond, **extra)

    def fake_loss(i):
        if reused:
            x_g, cond = reused.pop(0)
        else:
            z, cond = draw_latents(run.suite, b, run.device)
            with torch.no_grad():
                x_g = run.generator(z, cond)
        extra = inputs.supply(recipe.fake_inputs, run, b)
        return run.method.fake_score_loss(x_g, run.fake, cond=cond, **extra)

    def generator_phase():
        for p in run.fake_params:  # gradients reach the generator through the fake's inputs only
            p.requires_grad_(False)
        try:
            return optimizer_step(run.opt_g, run.generator.parameters(), generator_loss, rounds, grad_clip,
                                  run.autocast)
        finally:
            for p in run.fake_params:
                p.requires_grad_(True)

    def fake_phase():
        out = None
        for _ in range(recipe.fake_updates_per_generator_update):
            out = optimizer_step(run.opt_f, run.fake_params, fake_loss, rounds, grad_clip, run.autocast)
        return out

    if recipe.fresh_latents_per_phase:  # SiD's order: fake score first, then generator
        loss_f, norm_f, logs_f = fake_phase()
        loss_g, norm_g, logs_g = generator_phase()
    else:  # DMD2's order: generator on fresh samples, then fake updates starting on the same ones
        loss_g, norm_g, logs_g = generator_phase()
        loss_f, norm_f, logs_f = fake_phase()
    update_ema(run.ema, run.generator, cfg["batch"], run.nimg + cfg["batch"], run.train_opts["ema_halflife_kimg"],
               run.train_opts["ema_rampup"])
    run.step += 1
    run.nimg += cfg["batch"]
    row = {"loss_g": loss_g, "loss_fake": loss_f, "grad_norm_g": norm_g, "grad_norm_fake": norm_f}
    for k, v in {**logs_f, **logs_g}.items():
        row.setdefault(k, float(v))
    return row


def check_finite(run) -> None:
    """Raise Diverged if a generator or fake-score parameter is not finite."""
    for name, net in (("generator", run.generator), ("fake score", run.fake)):
        for p in net.parameters():
            if not torch.isfinite(p).all():
                raise Diverged(f"non-finite {name} parameter")
