"""Networks: EDM preconditioning, the one-step generator wrapper, and the raw architectures."""
from .precond import EDMPrecond, OneStepGenerator

__all__ = ["EDMPrecond", "OneStepGenerator"]
