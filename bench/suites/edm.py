"""The papers' image suites: EDM's CIFAR-10 (DDPM++) and ImageNet-64 (ADM) teachers from NVlabs checkpoints.

Teacher, generator and fake score all come from the checkpoint (``--set suite.teacher=PATH``, a
``.pkl`` from NVlabs or this project's ``.pt``; by default the released file found in
``$BENCH_WEIGHTS_DIR`` or ``~/.cache/distill-bench``). The generator is the teacher's denoiser
evaluated once at ``sigma_init``; augmentation labels are zero (``None``), as when sampling.
Networks run at the runner's precision; ``fp16=true`` restores the checkpoint's fp16 execution on CUDA.
Class labels are drawn uniformly and passed one-hot, as EDM, SiD and DMD2 do. Real images (DMD2's
GAN term) come from ``--set suite.data=PATH``, a zip or folder made by EDM's ``dataset_tool.py``
(``bench.suites.edm_dataset``). The baseline row is
EDM's deterministic Heun sampler: 18 steps (35 NFE) on CIFAR-10, 40 steps (79 NFE) on ImageNet-64.
Evaluation is Inception FID and IS against the training set's statistics (torch-fidelity's
``cifar10-train`` input, or a statistics ``.npz`` such as EDM's ``cifar10-32x32.npz``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from .. import validate
from ..errors import BadInput
from ..nets.edm_pickle import load_teacher
from ..weights import find_weight
from ..nets.precond import EDMPrecond, OneStepGenerator
from ..metrics.base import Evaluator
from .base import Parts, Suite, heun_sampler
from .edm_dataset import EDMDataset

def find_file(weight: str, option: str) -> Path:
    """``bench.weights.find_weight``, its error also naming the suite option that takes a path."""
    try:
        return find_weight(weight)
    except BadInput as exc:
        raise BadInput(f"{exc} (or give a path with --set suite.{option}=PATH)") from None


class EDMSuite(Suite):
    """What the CIFAR-10 and ImageNet-64 suites share; subclasses fix resolution, labels and files."""

    resolution: ClassVar[int] = 32
    num_classes: ClassVar[int] = 10

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        for key in ("teacher_steps", "n_eval"):
            validate.positive(self.option_name(key), o[key], integer=True)
        for key in ("teacher", "reference", "data"):
            if o[key] is not None and (not isinstance(o[key], str) or not o[key]):
                raise BadInput(f"{self.option_name(key)} must be a path, got {o[key]!r}")
        for key in ("cond", "fp16"):
            if key in o:
                validate.boolean(self.option_name(key), o[key])
        self._teacher: EDMPrecond | None = None
        self._data: EDMDataset | None = None

    @property
    def label_dim(self) -> int:
        """Number of classes the networks are conditioned on (0: unconditional)."""
        return self.num_classes

    @property
    def classes(self):
        return self.label_dim or None

    @property
    def latent_shape(self):
        return (3, self.resolution, self.resolution)

    def default_teacher(self) -> str:
        """``bench weights`` name of the released checkpoint for these options."""
        raise NotImplementedError

    def teacher_path(self) -> Path:
        """The teacher file: the ``teacher`` option, else the released checkpoint in the weights dirs."""
        if self.options["teacher"]:
            return Path(self.options["teacher"]).expanduser()
        return find_file(self.default_teacher(), "teacher")

    def _load(self) -> EDMPrecond:
        if self._teacher is None:
            path = self.teacher_path()
            net = load_teacher(path)
            self.check_network(net, path, "teacher")
            # fp16 execution as the checkpoint records it (EDM's ImageNet-64) is opt-in: the runner's
            # precision (fp32, or bf16 autocast; DMD2 reports that fp16 diverges) applies otherwise.
            net.use_fp16 = self.options["fp16"]
            self._teacher = net
        return self._teacher

    def check_network(self, net: EDMPrecond, path, what: str = "generator") -> None:
        """BadInput unless ``net`` (from ``path``) makes this suite's images with its conditioning."""
        shape = (net.img_channels, net.img_resolution, net.img_resolution)
        if shape != self.latent_shape:
            raise BadInput(f"{what} {path} makes {shape} images, suite {self.name} needs {self.latent_shape}")
        if net.label_dim != self.label_dim:
            want = f"{self.label_dim} classes" if self.label_dim else "an unconditional network"
            raise BadInput(f"{what} {path} has label_dim {net.label_dim}, suite {self.name} with these "
                           f"options needs {want} (suite.cond)")

    def load_teacher(self, device):
        return self._load().to(device)

    def build(self, sigma_init, device):
        teacher = self.load_teacher(device)
        student = copy.deepcopy(teacher).train().requires_grad_(True)
        generator = OneStepGenerator(copy.deepcopy(student), sigma_init)
        return Parts(teacher=teacher, generator=generator, fake=student)

    def sample_cond(self, n, generator):
        if not self.label_dim:
            return None
        labels = torch.randint(self.label_dim, (n,), generator=generator)
        return F.one_hot(labels, self.label_dim).to(torch.float32)

    def dataset(self) -> EDMDataset:
        """The real images of ``--set suite.data=PATH``; BadInput when there are none."""
        if self._data is None:
            if not self.options["data"]:
                raise BadInput(f"suite {self.name} has no real images: give a zip or folder made by EDM's "
                               "dataset_tool.py with --set suite.data=PATH")
            self._data = EDMDataset(self.options["data"], self.latent_shape, self.label_dim)
        return self._data

    def check_real_data(self):
        self.dataset()

    def real_data(self, n, generator):
        return self.dataset().sample(n, generator)

    def teacher_sample(self, teacher, z, cond=None, steps=None):
        if cond is not None:
            cond = cond.to(z.device)
        return heun_sampler(teacher, z, cond, steps=steps or self.options["teacher_steps"])

    def teacher_info(self, steps=None):
        steps = steps or self.options["teacher_steps"]
        return {"sampler": "heun", "steps": steps, "nfe": 2 * steps - 1}

    def reference(self) -> str:
        """The FID reference: a torch-fidelity input name or a statistics ``.npz`` path."""
        return self.options["reference"]

    def evaluator(self, device) -> Evaluator:
        """Inception FID and IS through the evaluation layer (imported here: it is optional)."""
        from ..metrics.fidelity import FidelityEvaluator

        return FidelityEvaluator(reference=self.reference(), extractor="inception", metrics=("fid", "is"),
                                 device=device, n_samples=self.options["n_eval"])


class Cifar10Suite(EDMSuite):
    """CIFAR-10 32x32, EDM's DDPM++ teachers (``cond`` selects the class-conditional one)."""

    name = "cifar10"
    summary = {
        "teacher": "NVlabs EDM DDPM++ checkpoint (.pkl)",
        "data": "CIFAR-10 (EDM dataset_tool zip, for real-data methods)",
        "shape": "3x32x32",
        "conditioning": "none",
        "metrics": "fid, is (Inception)",
    }
    defaults = {"teacher": None, "cond": False, "teacher_steps": 18, "n_eval": 50000, "reference": "cifar10-train",
                "fp16": False, "data": None}

    @property
    def label_dim(self):
        return self.num_classes if self.options["cond"] else 0

    def default_teacher(self):
        return "edm-cifar10-cond" if self.options["cond"] else "edm-cifar10-uncond"


class ImageNet64Suite(EDMSuite):
    """ImageNet 64x64, EDM's class-conditional ADM teacher; FID against EDM's reference statistics."""

    name = "imagenet64"
    summary = {
        "teacher": "NVlabs EDM ADM checkpoint (.pkl)",
        "data": "ImageNet 64x64 (EDM dataset_tool zip)",
        "shape": "3x64x64",
        "conditioning": "class labels (1000, one-hot)",
        "metrics": "fid, is (Inception)",
    }
    resolution = 64
    num_classes = 1000
    defaults = {"teacher": None, "teacher_steps": 40, "n_eval": 50000, "reference": None, "fp16": False, "data": None}

    def default_teacher(self):
        return "edm-imagenet64-cond"

    def reference(self):
        if self.options["reference"]:
            return self.options["reference"]
        return str(find_file("imagenet64-fid-stats", "reference"))
