"""Multi-Student Distillation against DMD2 and against closed forms on the class-conditional mixture.

Teacher: a mixture of diagonal Gaussians, each component a class (exact conditional denoisers). Students:
``x = b_k + A_k z`` for every class student ``k`` owns, routed by the class, each with the exact denoiser of
``N(b_k, A_k A_k^T)`` as its own fake score. Under ``weighting="none"`` at a fixed sigma, student ``k``'s
expected gradient is ``sigma^2`` times that of ``sum_{c owned by k} p(c) KL(q_k,sigma || p_sigma(.|c))``,
DMD2's restricted to its classes, and no other student's parameters move.
"""
import pytest
import torch

import methods
from bench.errors import BadInput
from bench.nets.guidance import one_hot
from bench.nets.precond import OneStepGenerator
from bench.nets.routed import RoutedDenoiser
from bench.suites.gaussian import ClassConditionalMixture
from bench.train import runconfig
from bench.train.loop import Run
from bench.train.step import training_step

DIM, CLASSES, STUDENTS, N_MC, SIGMA = 3, 4, 2, 200_000, 0.7
ROUTER = [0, 1, 1, 0]  # an explicit, non-contiguous router
CPU = torch.device("cpu")


def mixture():
    gen = torch.Generator().manual_seed(5)
    means = 1.5 * torch.randn(CLASSES, DIM, generator=gen, dtype=torch.float64)
    stds = 0.4 + 0.4 * torch.rand(CLASSES, DIM, generator=gen, dtype=torch.float64)
    return ClassConditionalMixture(torch.ones(CLASSES, dtype=torch.float64), means, stds)


class Affine(torch.nn.Module):
    """A student denoiser whose one step at ``sigma_init`` is ``b + A z`` (for every class it owns)."""

    def __init__(self, a, b, sigma_init=1.0):
        super().__init__()
        self.a, self.b, self.sigma_init = torch.nn.Parameter(a.clone()), torch.nn.Parameter(b.clone()), sigma_init

    def forward(self, x, sigma, cond=None):
        return self.b + (x / self.sigma_init) @ self.a.T


def thetas(seed):
    gen = torch.Generator().manual_seed(seed)
    return [(0.8 * torch.eye(DIM, dtype=torch.float64) + 0.2 * torch.randn(DIM, DIM, generator=gen, dtype=torch.float64),
             0.3 * torch.randn(DIM, generator=gen, dtype=torch.float64)) for _ in range(STUDENTS)]


def test_each_student_follows_dmd2_on_its_own_classes(closed_forms):
    mix, method = mixture(), methods.create("msd", weighting="none", students=STUDENTS, router="0,1,1,0")
    results = []
    for seed in (0, 1):
        students = [Affine(a, b) for a, b in thetas(seed)]
        generator = OneStepGenerator(RoutedDenoiser(students, ROUTER), 1.0)
        fake = RoutedDenoiser([closed_forms.Gaussian(s.b.detach(), (s.a @ s.a.T).detach()) for s in students], ROUTER)
        gen = torch.Generator().manual_seed(11)
        z, noise = (torch.randn(N_MC, DIM, generator=gen, dtype=torch.float64) for _ in range(2))
        labels = torch.arange(N_MC) % CLASSES  # p(c) = 1 / CLASSES
        cond = one_hot(labels, CLASSES, torch.float64)
        x_g = generator(z, cond)
        loss, _ = method.generator_loss(x_g, mix, fake, cond=cond, sigma=torch.full((N_MC,), SIGMA, dtype=torch.float64),
                                        noise=noise)
        loss.backward()
        eye = SIGMA**2 * torch.eye(DIM, dtype=torch.float64)
        for k, s in enumerate(students):
            a, b = (t.detach().clone().requires_grad_() for t in (s.a, s.b))
            kl = sum(closed_forms.kl(b, a @ a.T + eye, mix.means[c], torch.diag(mix.stds[c] ** 2) + eye)
                     for c in range(CLASSES) if ROUTER[c] == k) / CLASSES
            truth = SIGMA**2 * closed_forms.flat_grad(kl, (a, b))
            results.append(closed_forms.compare(torch.cat([s.a.grad.flatten(), s.b.grad.flatten()]), truth))
    print("msd per student (cosine, ratio):", results)
    assert closed_forms.proportional(results, 1.0, cos_min=0.999, rtol=0.03), results


def test_one_student_is_dmd2_exactly(closed_forms):
    """Same inputs, same loss and gradient: the generator and fake-score losses of msd(students=1) are DMD2's."""
    mix = mixture()
    (a0, b0), = thetas(3)[:1]
    gen = torch.Generator().manual_seed(9)
    z, noise = (torch.randn(512, DIM, generator=gen, dtype=torch.float64) for _ in range(2))
    cond = one_hot(torch.randint(0, CLASSES, (512,), generator=gen), CLASSES, torch.float64)
    sigma = 0.05 + 5 * torch.rand(512, generator=gen, dtype=torch.float64)
    out = []
    for name, extra, routed in (("msd", dict(students=1), True), ("dmd2", {}, False)):
        student = Affine(a0, b0)
        fake = closed_forms.Gaussian(b0, a0 @ a0.T)
        net, fake = (RoutedDenoiser([student], [0] * CLASSES), RoutedDenoiser([fake], [0] * CLASSES)) if routed \
            else (student, fake)
        x_g = OneStepGenerator(net, 1.0)(z, cond)
        m = methods.create(name, **extra)
        loss, _ = m.generator_loss(x_g, mix, fake, cond=cond, sigma=sigma, noise=noise)
        grad = closed_forms.flat_grad(loss, (student.a, student.b))
        fake_loss, _ = m.fake_score_loss(x_g, fake, cond=cond, sigma=sigma, noise=noise)
        out.append((loss.detach(), grad, fake_loss.detach()))
    (l1, g1, f1), (l2, g2, f2) = out
    assert abs(l1 - l2) <= 1e-9 * abs(l2) and abs(f1 - f2) <= 1e-9 * abs(f2)
    assert torch.allclose(g1, g2, rtol=1e-9, atol=0)


TINY = {"suite.width": 16, "suite.depth": 1, "suite.n_eval": 64, "suite.dim": 4}


def test_one_student_run_steps_as_dmd2():
    """A runner step of msd(students=1) on gaussian_cond gives DMD2's losses on the same seed."""
    rows = []
    for name, sets in (("msd", {"students": 1}), ("dmd2", {})):
        run = Run(runconfig.resolve("gaussian_cond", name, batch=16, kimg=1, sets={**TINY, **sets}), CPU, quiet=True)
        torch.manual_seed(0)
        rows.append([training_step(run) for _ in range(2)])
    for msd_row, dmd2_row in zip(*rows):
        for key in ("loss_g", "loss_fake", "grad_norm_g", "grad_norm_fake"):
            assert msd_row[key] == pytest.approx(dmd2_row[key], rel=1e-9, abs=0), key


def test_run_builds_routed_students_and_fake_scores():
    run = Run(runconfig.resolve("gaussian_cond", "msd", batch=16, kimg=1, sets=TINY), CPU, quiet=True)
    classes = run.suite.classes
    assert run.generator.denoiser.router.tolist() == [c * 4 // classes for c in range(classes)]
    assert len(run.generator.denoiser.students) == 4 and len(run.fake.students) == 4
    assert len(run.ema.denoiser.students) == 4
    first, second = (dict(s.named_parameters()) for s in run.generator.denoiser.students[:2])
    assert all(torch.equal(first[k], second[k]) for k in first)  # same-size students, initialised alike
    assert all(first[k] is not second[k] for k in first)


@pytest.mark.parametrize("sets, message", [
    ({}, "not class-conditional"),
])
def test_msd_is_refused_on_an_unconditional_suite(sets, message):
    with pytest.raises(BadInput, match=message):
        runconfig.resolve("gaussian", "msd", batch=16, kimg=1, sets={**TINY, **sets})


@pytest.mark.parametrize("sets, message", [
    ({"students": 9}, "every student needs a class"),
    ({"students": 2, "router": "0,1,1"}, "lists 3 classes"),
    ({"students": 2, "router": "0,0,0,0,0,0,0,0"}, "each of the 2 students"),
])
def test_bad_routers_are_refused(sets, message):
    with pytest.raises(BadInput, match=message):
        runconfig.resolve("gaussian_cond", "msd", batch=16, kimg=1, sets={**TINY, **sets})


def test_a_gaussian_cond_run_trains_and_resumes_as_an_uninterrupted_one(tmp_path):
    """End to end through the runner: stopped after a few steps and resumed, the EMA students and the cost
    figures come out as those of a run never stopped; every student moved, and a sample costs one student."""
    from bench.train.runner import execute

    config = runconfig.resolve("gaussian_cond", "msd", batch=32, kimg=0.384, eval_every=0.192, checkpoint_every=0.128,
                               lr=1e-3, sets={**TINY, "students": 2})
    whole, status = execute(config, tmp_path / "whole", CPU, quiet=True)
    assert status == "done"
    calls = iter(range(10**6))
    part, status = execute(config, tmp_path / "part", CPU, quiet=True, stop=lambda: 15 if next(calls) == 5 else 0)
    assert status != "done"
    part, status = execute(config, tmp_path / "part", CPU, quiet=True)
    assert status == "done"
    a, b = (torch.load(d / "state.pt", weights_only=True) for d in (whole, part))
    assert a["ema"].keys() == b["ema"].keys() and any(".students.1." in k for k in a["ema"])
    for key in a["ema"]:
        assert torch.allclose(a["ema"][key], b["ema"][key], rtol=1e-5, atol=1e-7), key
    manifest = {d: __import__("json").loads((d / "manifest.json").read_text()) for d in (whole, part)}
    assert manifest[whole]["cost"]["gflop"] == manifest[part]["cost"]["gflop"]
    assert manifest[whole]["cost"]["sample"]["nfe"] == 1.0
    initial = Run(config, CPU, quiet=True).generator.state_dict()
    for k in (0, 1):  # both students trained
        prefix = f"denoiser.students.{k}."
        assert any(not torch.equal(initial[n], a["generator"][n]) for n in initial if n.startswith(prefix))


def test_the_config_label_shows_the_resolved_router():
    from methods.base import contiguous_router, router_text

    assert router_text(contiguous_router(10, 4)) == "0-2/3-4/5-7/8-9"
    assert router_text(contiguous_router(1000, 4)) == "0-249/250-499/500-749/750-999"
    assert router_text([2, 0, 1, 1, 0, 2]) == "1,4/2-3/0,5"
    config = runconfig.resolve("gaussian_cond", "msd", batch=16, kimg=1, sets={**TINY, "router": "1,0,0,1", "students": 2})
    assert config["hparams_in_use"]["router"] == "1-2/0,3" and config["hparams"]["router"] == "1,0,0,1"


def test_the_gan_term_runs_on_routed_fake_scores():
    """DMD2's GAN head reads each sample's bottleneck from its own student's fake score."""
    run = Run(runconfig.resolve("gaussian_cond", "msd", batch=16, kimg=1, sets={**TINY, "gan_weight": 0.1, "students": 2}),
              CPU, quiet=True)
    row = training_step(run)
    assert "loss_gan_g" in row and "loss_gan_d" in row and all(torch.isfinite(torch.tensor(row[k])) for k in row
                                                              if isinstance(row[k], float))


@pytest.mark.slow
def test_a_two_process_run_reduces_students_missing_from_one_process(tmp_path):
    """Batches of 2 per process and 4 students: a student's classes are often absent on one process, whose
    gradient is then zero there (bench.train.distributed), so both processes reduce the same tensors."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    args = ["run", "--suite", "gaussian_cond", "--method", "msd", "--kimg", "0.04", "--batch", "4", "--eval-every", "1",
            "--results", str(tmp_path), "--quiet", *[x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29537",
                           "-m", "bench", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"


def test_a_two_step_msd_run_routes_every_step_and_exports_to_safetensors(tmp_path):
    from bench.train.export import load_exported
    from bench.train.runner import execute

    config = runconfig.resolve("gaussian_cond", "msd", batch=16, kimg=0.032, eval_every=1, steps=2,
                               sets={**TINY, "students": 2})
    run_dir, status = execute(config, tmp_path, CPU, quiet=True)
    assert status == "done"
    from bench.cli import main

    out = tmp_path / "g.safetensors"
    assert main(["export", str(run_dir), "-o", str(out)]) == 0
    run, _ = load_exported(out, CPU)
    assert len(run.ema.denoiser.students) == 2 and run.ema.sigmas[0] == config["train"]["sigma_init"]
    z, cond = torch.randn(8, 4), one_hot(torch.arange(8) % 4, 4)
    state = torch.load(run_dir / "state.pt", weights_only=True)["ema"]
    assert all(torch.equal(state[k], v) for k, v in run.ema.state_dict().items())
    assert run.ema(z, cond).shape == (8, 4)
