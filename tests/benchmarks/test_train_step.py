"""One training step of each method against the raw network passes that step needs.

Run: ``python -m pytest tests/benchmarks/test_train_step.py --benchmark-only -p no:cacheprovider``.
Each group holds two rows: ``harness`` (Run.train_step: sigma sampling, losses, normalisers,
gradient clipping, EMA, finiteness checks) and ``raw`` (the same network forward/backward passes
and optimiser steps written out by hand). Their ratio is the harness overhead.
"""
import json
import subprocess
import sys

import pytest
import torch

import methods
from bench.nets.mlp import ResidualMLP
from bench.nets.precond import EDMPrecond
from bench.train.runconfig import resolve
from bench.train.loop import Run
from bench.train.step import training_step

DIM, WIDTH, DEPTH, BATCH = 64, 512, 4, 256
THROUGH_INPUTS = {"sid": True, "sim": True, "di": False, "dmd": False, "dmd2": False}


def make_run(method):
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


# The raw reference writes out the teacher / fake / generator passes only: methods with a
# discriminator (f-distill, SiDA, Uni-Instruct) get a harness row without a raw one beside it.
CASES = [(m, "harness") for m in methods.available()  # msd routes by class: gaussian has none
         if methods.create(m).training_recipe.students is None] + [(m, "raw") for m in THROUGH_INPUTS]


@pytest.mark.parametrize(("method", "kind"), CASES)
def test_train_step(benchmark, method, kind):
    run = make_run(method)
    benchmark.group = f"train step: {method}"
    if kind == "harness":
        benchmark.pedantic(training_step, args=(run,), rounds=15, warmup_rounds=2)
    else:
        benchmark.pedantic(raw_step, args=(run, THROUGH_INPUTS[method]), rounds=15, warmup_rounds=2)
    benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.mean
    benchmark.extra_info["step_peak_mem_mb"] = step_memory_mb(method, kind)


def step_memory_mb(method, kind):
    """Peak memory of two steps above the memory of the built networks, in a fresh process
    (in this one, the allocator keeps what earlier rounds freed and hides the peak)."""
    script = f"""
import json, sys, torch
sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
from test_train_step import make_run, raw_step, THROUGH_INPUTS
from bench.train.loop import peak_memory_mb, reset_peak_memory
from bench.train.step import training_step
run = make_run({method!r})
cpu = torch.device('cpu')
reset_peak_memory(cpu)
before = peak_memory_mb(cpu)
for _ in range(2):
    training_step(run) if {kind!r} == 'harness' else raw_step(run, THROUGH_INPUTS[{method!r}])
print(json.dumps(peak_memory_mb(cpu) - before))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
