"""One training step of each method against the raw network passes that step needs.

Run: ``python -m pytest tests/benchmarks/test_train_step.py --benchmark-only -p no:cacheprovider``.
Each group holds two rows: ``harness`` (Run.train_step: sigma sampling, losses, normalisers,
gradient clipping, EMA, finiteness checks) and ``raw`` (the same network forward/backward passes
and optimiser steps written out by hand). Their ratio is the harness overhead.
"""
import pytest
import torch

import methods
from bench.nets.mlp import ResidualMLP
from bench.nets.precond import EDMPrecond
from bench.runconfig import resolve
from bench.runner import Run, peak_memory_mb, reset_peak_memory

DIM, WIDTH, DEPTH, BATCH = 64, 512, 4, 256
THROUGH_INPUTS = {"sid": True, "sim": True, "di": False, "dmd": False, "dmd2": False}


def make_run(method, tmp_path):
    sets = {"suite.dim": DIM, "suite.width": WIDTH, "suite.depth": DEPTH}
    if method == "dmd":
        sets["regression_weight"] = 0.0
    config = resolve("gaussian", method, batch=BATCH, sets=sets)
    config["device"] = "cpu"
    run = Run(config, torch.device("cpu"), quiet=True)
    teacher = EDMPrecond(ResidualMLP(DIM, WIDTH, DEPTH)).requires_grad_(False)  # a network teacher
    run.parts.teacher = teacher
    return run


def raw_step(run, through_inputs):
    """The step's network passes and optimiser steps, without the harness."""
    G, fake, teacher = run.generator, run.fake, run.parts.teacher
    recipe = run.recipe
    sigma = torch.full((BATCH,), 1.0)

    def fake_update(x):
        run.opt_f.zero_grad(set_to_none=True)
        x_t = x + torch.randn_like(x)
        (fake(x_t, sigma) - x).pow(2).sum().backward()
        run.opt_f.step()

    def generator_update():
        run.opt_g.zero_grad(set_to_none=True)
        x = G(torch.randn(BATCH, DIM))
        x_t = x + torch.randn_like(x)
        fake.requires_grad_(False)
        if through_inputs:
            (teacher(x_t, sigma) - fake(x_t, sigma)).pow(2).sum().backward()
        else:
            with torch.no_grad():
                direction = fake(x_t.detach(), sigma) - teacher(x_t.detach(), sigma)
            (direction * x).sum().backward()
        fake.requires_grad_(True)
        run.opt_g.step()
        return x.detach()

    if recipe.fresh_latents_per_phase:
        for _ in range(recipe.fake_updates_per_generator_update):
            with torch.no_grad():
                x = G(torch.randn(BATCH, DIM))
            fake_update(x)
        generator_update()
    else:
        x = generator_update()
        fake_update(x)
        for _ in range(recipe.fake_updates_per_generator_update - 1):
            with torch.no_grad():
                x = G(torch.randn(BATCH, DIM))
            fake_update(x)


@pytest.mark.parametrize("method", methods.available())
@pytest.mark.parametrize("kind", ["harness", "raw"])
def test_train_step(benchmark, method, kind, tmp_path):
    run = make_run(method, tmp_path)
    benchmark.group = f"train step: {method}"
    if kind == "harness":
        benchmark.pedantic(run.train_step, rounds=15, warmup_rounds=2)
    else:
        benchmark.pedantic(raw_step, args=(run, THROUGH_INPUTS[method]), rounds=15, warmup_rounds=2)
    benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.mean
    cpu = torch.device("cpu")
    reset_peak_memory(cpu)
    baseline = peak_memory_mb(cpu)
    run.train_step() if kind == "harness" else raw_step(run, THROUGH_INPUTS[method])
    benchmark.extra_info["step_peak_mem_mb"] = peak_memory_mb(cpu) - baseline
