"""Class-conditional digits with classifier-free guidance: the digits suite with labels.

The teacher is the digits UNet with a class embedding, trained with each label dropped to the null class
with probability ``suite.label_dropout`` (cached by its configuration's hash like the unconditional one);
distillation sees it guided, ``D_w = D(x, null) + w (D(x, c) - D(x, null))`` with ``w = suite.guidance``,
so the teacher's rows at several guidance scales are runs of ``--method teacher`` at several
``suite.guidance`` (a sweep's ``guidance`` grid axis). Generators and fake scores are copies of the
unguided conditional network, conditioned on the class. Metrics: the digits suite's (FID over all
samples against the digits, FD to the guided teacher's class-balanced samples) plus ``class_accuracy``,
the digits classifier's accuracy on the requested classes, and the same two distances class by class
(``fid_class``, ``fd_teacher_class``: the mean over the ten classes, each class's in the measurement's
detail), which an overall FID cannot see (a generator that draws every class as well but mislabels them).
"""
from __future__ import annotations

import copy

import torch

from .. import validate
from ..metrics import features
from ..metrics.base import Combined
from ..metrics.conditional import ClassAccuracy, ClassFrechet
from ..metrics.images import to_uint8
from ..nets.guidance import GuidedDenoiser, one_hot
from ..nets.precond import OneStepGenerator
from ..weights import weights_dir
from .base import Parts
from .digits import (EXTRACTOR, DigitsSuite, cached, load_cached, load_classifier, make_denoiser, quantise,
                     train_denoiser)

CLASSES = 10


class ConditionalDigitsSuite(DigitsSuite):
    """The digits suite with class labels and a guided teacher."""

    name = "digits_cond"
    guided = True
    summary = {**DigitsSuite.summary,
               "teacher": "EDM UNet with a class embedding, trained here with label dropout (cached by its hash)",
               "conditioning": "class (10 digits), classifier-free guidance suite.guidance",
               "metrics": DigitsSuite.summary["metrics"] + ", class_accuracy, fid_class, fd_teacher_class"}
    # student_channels: the generator's base channels when it is not a copy of the teacher (None): a wider
    # student (MSD's baseline, one student of K times the parameters: 32 channels is 3.96x the teacher's 16)
    # cannot start from the teacher's weights, so it starts from a network of its width trained by the
    # teacher's own recipe on the same data (cached by that configuration's hash like the teacher).
    defaults = {**DigitsSuite.defaults, "label_dropout": 0.1, "guidance": 2.0, "student_channels": None}

    def __init__(self, **options):
        super().__init__(**options)
        validate.positive(self.option_name("guidance"), self.options["guidance"])
        validate.fraction(self.option_name("label_dropout"), self.options["label_dropout"], upper_open=True)
        if self.options["student_channels"] is None:  # kept only when set: run ids without it are unchanged
            del self.options["student_channels"]
        else:
            validate.positive(self.option_name("student_channels"), self.options["student_channels"], integer=True)

    @property
    def classes(self) -> int:
        return CLASSES

    def teacher_config(self) -> dict:
        config = super().teacher_config()
        config["net"]["label_dim"] = CLASSES
        config["train"]["label_dropout"] = float(self.options["label_dropout"])
        return config

    def load_teacher(self, device):
        return GuidedDenoiser(super().load_teacher(device), self.options["guidance"])

    def student_info(self):
        channels = self.options.get("student_channels")
        return {} if channels is None else {"student_channels": int(channels)}

    def student_config(self) -> dict:
        """The teacher's configuration at ``student_channels`` base channels: the wide student's cache key."""
        config = self.teacher_config()
        config["net"]["channels"] = int(self.options["student_channels"])
        return config

    def load_student(self, device) -> torch.nn.Module:
        """The wide student's starting point, trained first (the teacher's recipe, its own width) if absent."""
        config = self.student_config()
        path = cached(self.root, "teacher", config,
                      lambda: train_denoiser(config, self.data["x_train"], device, self.data["y_train"]))
        state, info = load_cached(path)
        net = make_denoiser(info["config"]["net"])
        net.load_state_dict(state)
        return net.to(device).train().requires_grad_(True)

    def build(self, sigma_init, device):
        teacher = self.load_teacher(device)
        student = lambda: copy.deepcopy(teacher.base).train().requires_grad_(True)  # noqa: E731
        generator = student() if self.options.get("student_channels") is None else self.load_student(device)
        return Parts(teacher=teacher, generator=OneStepGenerator(generator, sigma_init), fake=student())

    def sample_cond(self, n, generator):
        return one_hot(torch.randint(0, CLASSES, (n,), generator=generator), CLASSES)

    def real_data(self, n, generator):
        idx = torch.randint(0, len(self.data["x_train"]), (n,), generator=generator)
        return self.data["x_train"][idx], one_hot(self.data["y_train"][idx], CLASSES)

    def teacher_info(self, steps=None):
        return {**super().teacher_info(steps), "guidance": float(self.options["guidance"])}

    def reference_tag(self) -> str:
        return f"-cond-w{float(self.options['guidance']):g}"

    def reference_cond(self, n: int):
        return one_hot(torch.arange(n) % CLASSES, CLASSES)  # class-balanced

    def evaluator(self, device):
        """The digits suite's metrics, class accuracy, and FID and FD to the teacher class by class."""
        base = super().evaluator(device)
        path = self.train_classifier()
        classifier = load_classifier(path).to(device)
        logits = lambda x: classifier(quantise(x.to(device)))[1]  # noqa: E731
        accuracy = ClassAccuracy(logits, base.n_samples, impl="digits classifier (distill-bench)")
        space = features.shared(EXTRACTOR, device, options={"path": path})

        def real():
            x, y = self.fid_reference()
            return to_uint8(x), y

        per_class = [ClassFrechet(space, real, "fid_class", base.n_samples)]
        n_teacher = int(self.options["n_teacher_reference"])
        if n_teacher:
            teacher = lambda: (self.teacher_reference(device, n_teacher),  # noqa: E731
                               self.reference_cond(n_teacher).argmax(1))
            key = f"{self.teacher_reference_key(device)}-{space.spec.weights_id}-classes.npz"
            per_class.append(ClassFrechet(space, teacher, "fd_teacher_class", base.n_samples,
                                          cache_file=weights_dir() / "fidelity-cache" / key))
        return Combined(base, accuracy, *per_class, n_final=base.n_final)
