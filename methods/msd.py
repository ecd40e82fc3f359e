"""Multi-Student Distillation (Song et al., 2024): K one-step students, each owning a subset of the classes.

A router maps each class to a student; a sample of class ``c`` is made by student ``r(c)`` alone, so
sampling costs one student's pass. Each student is distilled with DMD2's losses on its own classes,
against its own fake score (the students are independent DMD2 distillations of the conditionals they
own, as in the paper, where they train in parallel): with ``q_k`` student ``k``'s distribution,
``sum_{c: r(c)=k} p(c) KL(q_k,sigma(.|c) || p_sigma(.|c))``. The losses are DMD2's unchanged; what the
method adds is the routing, which the harness builds from the recipe (``students``, ``router``): the
generator's and the fake score's denoisers become K routed copies of the suite's (same-size students,
initialised from the teacher). One student is DMD2 exactly.
"""
from .base import parse_router, replace_recipe
from .dmd import DMD2


class MSD(DMD2):
    """DMD2 with ``students`` routed students and fake scores; ``router`` is ``"contiguous"`` (class ``c`` to
    student ``c * students // classes``) or one student index per class, e.g. ``"0,0,1,1,1"``."""
    paper = "Song et al. 2024, Multi-student Diffusion Distillation for Better One-step Generators"
    minimises = "reverse KL of each class's conditional, by the student its router picks (plus a GAN term)"

    name = "msd"
    defaults = {**DMD2.defaults, "students": 4, "router": "contiguous"}  # the paper's headline: 4 same-size students

    def check(self):
        super().check()
        try:
            parse_router(self.router, None, self.students)
        except ValueError as exc:
            raise ValueError(f"msd: {exc}") from None

    @property
    def training_recipe(self):
        return replace_recipe(super().training_recipe, students=self.students, router=self.router)
