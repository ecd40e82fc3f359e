"""bench.train.inputs: a method declares extra inputs in its recipe and the step supplies them, by name."""
import pytest
import torch

import methods
from bench.train import runconfig
from bench.errors import BadInput
from bench.train.loop import Run
from bench.train.step import training_step
from methods.base import Method, replace_recipe
from methods.sid import SiD

CPU = torch.device("cpu")


class Recording(Method):
    """A method unknown to the harness that needs teacher pairs, real data and a discriminator."""

    name = "recording"
    recipe = replace_recipe(SiD.recipe, generator_inputs=("teacher_pairs", "discriminator"),
                            fake_inputs=("real_data",))
    seen = {}

    def generator_loss(self, x_g, teacher, fake, cond=None, **extra):
        Recording.seen["generator"] = extra
        x_ref, x_teacher = extra["pairs"]
        loss = (x_g - teacher(x_g, torch.ones(len(x_g)))).pow(2).mean() + (x_ref - x_teacher).pow(2).mean()
        return loss + 0 * extra["discriminator"](x_g, torch.ones(len(x_g))).sum(), {}

    def fake_score_loss(self, x_g, fake, cond=None, **extra):
        Recording.seen["fake"] = extra
        return super().fake_score_loss(x_g, fake, cond=cond)


def run_of(monkeypatch, cls):
    monkeypatch.setitem(methods._REGISTRY, cls.name, cls)
    config = runconfig.resolve("gaussian", cls.name, batch=8, sets={"suite.dim": 4, "suite.width": 16,
                                                                    "suite.depth": 1, "train.n_regression_pairs": 5})
    return Run(config, CPU, quiet=True)


def test_a_new_method_gets_what_its_recipe_declares(monkeypatch):
    run = run_of(monkeypatch, Recording)
    assert run.parts.discriminator is not None  # built by the suite, trained with the fake score
    assert any(p is q for p in run.parts.discriminator.parameters() for q in run.fake_params)
    for provider in run.inputs:
        provider.prepare(run)
    assert run.pairs[0].shape == (5, 4) and run.pairs[1].shape == (5, 4)
    training_step(run)
    assert set(Recording.seen["generator"]) == {"pairs", "discriminator"}
    assert set(Recording.seen["fake"]) == {"real", "real_cond"}
    assert Recording.seen["generator"]["pairs"][0].requires_grad  # G(z_ref) carries the generator's gradient


def test_an_input_nobody_supplies_is_bad_input(monkeypatch):
    class Needy(Recording):
        name = "needy"
        recipe = replace_recipe(SiD.recipe, fake_inputs=("real_dta",))

    with pytest.raises(BadInput, match="'real_dta'.*did you mean real_data"):
        run_of(monkeypatch, Needy)


def test_a_consistency_method_gets_the_student_and_trains_its_loss_weight(monkeypatch, tmp_path):
    """sCM's inputs: the generator's denoiser as student, real data, the update count, and the learned
    weight, optimised with the generator and carried through a checkpoint; no fake-score phase, no x_g."""
    seen = {}

    class Spy(methods.get("scm")):
        name = "spy_scm"

        def generator_loss(self, x_g, teacher, fake, cond=None, **extra):
            seen.update(extra, x_g=x_g)
            return super().generator_loss(x_g, teacher, fake, cond=cond, **extra)

    run = run_of(monkeypatch, Spy)
    weight = run.parts.loss_weight
    assert weight is not None and all(any(p is q for q in run.generator_params) for p in weight.parameters())
    fake_before = [p.detach().clone() for p in run.fake.parameters()]
    training_step(run)
    training_step(run)
    assert seen["x_g"] is None and seen["student"] is run.generator.denoiser and seen["generator_updates"] == 1
    assert seen["loss_weight"] is weight and seen["real"].shape == (8, 4)
    assert weight.linear.weight.abs().sum() > 0  # learned: it started at zero
    assert all(torch.equal(a, b) for a, b in zip(fake_before, run.fake.parameters()))
    run.attach(tmp_path)
    resumed = run_of(monkeypatch, Spy)
    resumed._apply(run.state_dict())
    assert torch.equal(resumed.parts.loss_weight.linear.weight, weight.linear.weight)
