"""The training step around the losses: network modes and dropout, augmentation, warm-up in iterations."""
import pytest
import torch
from bench_helpers import TINY
from edm_helpers import perturbed

import methods
from bench.train import inputs
from bench.train import runconfig
from bench.config import parse_sets
from bench.train.loop import Run
from bench.nets import edm, edm_layers
from bench.nets.augment import AugmentPipe
from bench.nets.edm_pickle import save_teacher
from bench.nets.modes import set_modes
from bench.train.step import draw_latents, set_phase_modes, set_warmup_lr, training_step

CPU = torch.device("cpu")
EPS32 = torch.finfo(torch.float32).eps
# EDM's DDPM++ at toy size: dropout 0.13 and augment_dim 9, as the released CIFAR-10 teacher.
TINY_DDPMPP = dict(img_resolution=32, img_channels=3, model_type="SongUNet", model_channels=8, channel_mult=[1, 1],
                   num_blocks=1, attn_resolutions=[16], augment_dim=9, dropout=0.13, channel_mult_emb=2)


@pytest.fixture(scope="module")
def ddpmpp(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "ddpmpp.pt"
    torch.manual_seed(0)
    save_teacher(perturbed(edm.edm_precond(**TINY_DDPMPP)), path)
    return path


def cifar_run(method, teacher, **sets):
    hparams = {"regression_weight": 0.0} if method == "dmd" else {}  # DMD's regression term is not zero at init
    config = runconfig.resolve("cifar10", method, batch=2, kimg=1,
                               sets={"suite.teacher": str(teacher), **hparams, **sets})
    return Run(config, CPU, quiet=True)


def generator_gradient(run):
    """The generator's gradient of its loss at initialisation, networks in the generator phase's modes."""
    z, cond = draw_latents(run.suite, 2, CPU, torch.Generator().manual_seed(1))
    x_g = run.generator(z, cond)
    extra = inputs.supply(run.recipe.generator_inputs, run, 2)
    loss, _ = run.method.generator_loss(x_g, run.parts.teacher, run.fake, cond=cond, **extra)
    grads = torch.autograd.grad(loss, list(run.generator.parameters()), allow_unused=True)
    return torch.cat([g.flatten() for g in grads if g is not None])  # the augment map is not used


# Methods with a GAN / density-ratio term need real images and have a non-zero GAN gradient at init;
# consistency methods (sCM, rCM) train on real images, and the teacher is no consistency function.
WITHOUT_REAL_DATA = [m for m in methods.available()  # nor a guided teacher: these run on unconditional suites
                     if not {"real_data", "guidance"} & {*methods.create(m).training_recipe.fake_inputs,
                                                         *methods.create(m).training_recipe.generator_inputs}
                     and methods.create(m).training_recipe.students is None]  # nor class-routed students (msd)


@pytest.mark.parametrize("method", WITHOUT_REAL_DATA)
def test_generator_gradient_is_zero_at_initialisation_with_dropout_networks(method, ddpmpp):
    """Fake score = teacher (dropout 0.13 inside): the recipe's modes and dropout make f_psi - f_phi, and
    with it the generator's gradient, vanish (DI: teacher and fake in train mode share one mask).
    Every network in train mode with its dropout, as before, gives a gradient of pure dropout noise."""
    torch.manual_seed(0)
    run = cifar_run(method, ddpmpp)
    set_phase_modes(run, "generator")
    grad = generator_gradient(run)

    noisy = cifar_run(method, ddpmpp, **{"train.dropout": 0.13})
    set_modes({"generator": noisy.generator, "fake": noisy.fake, "teacher": noisy.parts.teacher},
              {"generator", "fake", "teacher"})
    if method == "di":  # DI always shares the mask; noise appears when the calls draw separately
        teacher = noisy.parts.teacher
        noisy.parts.teacher = lambda x, s, cond=None: (torch.rand(1), teacher(x, s, cond=cond))[1]
    reference = generator_gradient(noisy)
    scale = reference.abs().max().item()
    assert scale > 0
    assert grad.abs().max().item() <= 16 * EPS32 * scale, (grad.abs().max().item(), scale)


def test_phase_modes_follow_the_recipe(ddpmpp):
    sid, di = cifar_run("sid", ddpmpp), cifar_run("di", ddpmpp)
    set_phase_modes(sid, "generator")
    assert (sid.generator.training, sid.fake.training, sid.parts.teacher.training) == (True, False, False)
    set_phase_modes(sid, "fake")  # the generator makes the fake score's samples in eval mode
    assert (sid.generator.training, sid.fake.training, sid.parts.teacher.training) == (False, True, False)
    set_phase_modes(di, "generator")
    assert (di.generator.training, di.fake.training, di.parts.teacher.training) == (True, True, True)
    training_step(di)
    assert (di.generator.training, di.fake.training, di.parts.teacher.training) == (True, True, False)


def test_dmd2_builds_every_network_without_dropout(ddpmpp):
    run = cifar_run("dmd2", ddpmpp)
    blocks = [m for net in (run.generator, run.fake, run.parts.teacher) for m in net.modules()
              if isinstance(m, edm_layers.UNetBlock)]
    assert blocks and all(b.dropout == 0 for b in blocks)
    assert all(b.dropout == 0.13 for b in cifar_run("sid", ddpmpp).fake.modules() if isinstance(b, edm_layers.UNetBlock))


def test_augmentation_reaches_a_fake_score_with_augment_labels_only(ddpmpp, monkeypatch):
    sid = cifar_run("sid", ddpmpp)
    assert isinstance(sid.augment, AugmentPipe) and sid.augment.p == 0.12
    assert cifar_run("sid", ddpmpp, **{"train.augment_p": 0.0}).augment is None
    assert "augment" not in methods.create("dmd2").training_recipe.fake_inputs
    seen = []
    forward = type(sid.fake).forward
    monkeypatch.setattr(type(sid.fake), "forward",
                        lambda self, *a, augment_labels=None, **k: seen.append(augment_labels) or forward(
                            self, *a, augment_labels=augment_labels, **k))
    training_step(sid)
    assert any(labels is not None and labels.shape == (2, 9) for labels in seen)
    gaussian = Run(runconfig.resolve("gaussian", "sid", batch=4, kimg=1, sets=_tiny_sets()), CPU, quiet=True)
    assert gaussian.augment is None  # an MLP takes no augment labels: not augmented


def _tiny_sets():
    """The tiny gaussian suite's options, as ``runconfig.resolve`` takes them."""
    return parse_sets(TINY[1::2])


def test_dmd2_warm_up_counts_iterations_as_its_official_scheduler():
    """lr = min(1, k / warm-up) at iteration k (one fake-score update), the generator's with the first."""
    config = runconfig.resolve("gaussian", "dmd2", lr=1e-3, batch=4, kimg=1,
                               sets={**_tiny_sets(), "train.warmup_iterations": 10})
    run = Run(config, CPU, quiet=True)
    used = {"g": [], "f": []}
    for key, opt in (("g", run.opt_g), ("f", run.opt_f)):
        step = opt.step
        opt.step = lambda *a, _s=step, _k=key, _o=opt, **k: (used[_k].append(_o.param_groups[0]["lr"]), _s(*a, **k))[1]
    rows = [training_step(run) for _ in range(3)]
    assert used["g"] == pytest.approx([0.0, 0.5e-3, 1e-3])
    assert used["f"] == pytest.approx([min(1.0, k / 10) * 1e-3 for k in range(15)])
    assert [r["iterations"] for r in rows] == [5, 10, 15] and run.nimg == 12  # kimg counts generator images
    set_warmup_lr(run, 3)
    assert run.opt_f.param_groups[0]["lr"] == pytest.approx(0.3e-3)
