"""The suite registry: what is distilled (teacher, data shape, conditioning, evaluator)."""
from __future__ import annotations

from ..registry import Registry

# name -> "module:Class", imported lazily so a suite's heavy dependencies load only when used.
SUITES = Registry("suite", {
    "gaussian": "bench.suites.gaussian:GaussianSuite",
    "gaussian_cond": "bench.suites.gaussian_cond:ConditionalGaussianSuite",
    "digits": "bench.suites.digits:DigitsSuite",
    "digits_cond": "bench.suites.digits_cond:ConditionalDigitsSuite",
    "cifar10": "bench.suites.edm:Cifar10Suite",
    "imagenet64": "bench.suites.edm:ImageNet64Suite",
    "t2i": "bench.suites.t2i:TextToImageSuite",
})

# Suites whose networks are EDM's (NVlabs checkpoints): their generators leave and enter as EDM/SiD pickles.
EDM_SUITES = ("cifar10", "imagenet64")


def check_name(name: str) -> None:
    """BadInput naming close matches when ``name`` is not a registered suite (imports nothing)."""
    SUITES.check(name)


def get(name: str):
    """The suite class registered as ``name``; BadInput naming close matches otherwise."""
    return SUITES.get(name)


def create(name: str, **options):
    """An instance of suite ``name`` with options."""
    return get(name)(**options)
