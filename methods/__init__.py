"""The method registry: every one-step distillation method under one interface.

    import methods
    methods.available()   # ['ddmd', 'di', 'dmd', 'dmd2', 'fdistill', 'msd', 'rcm', 'scm', 'sid', 'sida', 'sim', 'snoopi', 'tdm', 'uni_instruct']
    m = methods.create("sim", distance="pseudo_huber", huber_c=0.03)
    loss, logs = m.generator_loss(x_g, teacher, fake)
    loss, logs = m.fake_score_loss(x_g, fake)

Adding a method: write ``methods/<name>.py`` with a ``Method`` subclass (its losses, its
``defaults`` and its ``recipe``) and list it in ``_REGISTRY`` below.
"""
import difflib

from .base import Method, Recipe, SigmaDistribution, karras_sigma
from .ddmd import DecoupledDMD
from .di import DI
from .dmd import DMD, DMD2
from .fdistill import FDistill
from .msd import MSD
from .rcm import RCM
from .scm import SCM
from .sid import SiD
from .sida import SiDA
from .sim import SIM
from .snoopi import SNOOPI
from .tdm import TDM
from .uni_instruct import UniInstruct

_REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (DecoupledDMD, DI, DMD, DMD2, FDistill, MSD, RCM, SCM, SiD,
                                                                    SiDA, SIM, SNOOPI, TDM, UniInstruct)}


def available() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Method]:
    """The class registered as ``name``; ValueError naming the close matches otherwise."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name).lower(), available(), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown method {name!r}{hint} (available: {', '.join(available())})")
    return _REGISTRY[name]


def create(name: str, **hparams) -> Method:
    """An instance of method ``name`` with published defaults overridden by ``hparams``."""
    return get(name)(**hparams)


__all__ = ["Method", "Recipe", "SigmaDistribution", "available", "create", "get", "karras_sigma"]
