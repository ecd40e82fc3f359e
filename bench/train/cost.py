"""What training costs: network passes by network and direction, their FLOPs, and seconds.

FLOPs are measured with ``torch.utils.flop_counter.FlopCounterMode`` on real steps, not estimated
from parameter counts. A training step's phases (the fake-score updates, the generator update) repeat
with the same shapes, so each phase shape is measured once, with hooks counting the passes; later
phases of that shape add the measured figures and run with no hook or counter at all (the overhead is
one instrumented step per shape). FlopCounterMode counts matrix products, convolutions and attention,
forward and backward, not element-wise arithmetic: the cost of the networks, as papers quote it.

Passes are counted in images: a forward pass of a batch of 64 through the teacher adds 64 to
``teacher_forward``. A forward-mode Jacobian-vector product (``torch.func.jvp``, sCM's tangent) is a pass
of its own, ``<network>_jvp``: it computes the primal and the tangent together, and its FLOPs, measured
like every other pass, come to about three forward passes for matrix products (the primal's and two
for the tangent). A backward pass is one whose output received a gradient (through a frozen network
too: SiD's generator loss backpropagates through the teacher and the fake score into the generator).
Figures are global: a process's counts times the number of processes (every process runs the same
shapes). One-off costs (DMD's teacher regression pairs) join the cumulative total and are also kept
apart, so a per-kimg rate can leave them out.
"""
from __future__ import annotations

import contextlib
import time
from collections import Counter

import torch
from torch.utils.flop_counter import FlopCounterMode


@contextlib.contextmanager
def count_passes(networks: dict):
    """Count images through each named network, forward and backward, while the block runs.

    Yields a Counter keyed ``<network>_<direction>``; ``None`` networks are skipped.
    """
    passes = Counter()
    handles = []

    def hook(name):
        def on_forward(module, inputs, output):
            out = _first_tensor(output)
            if out is None:
                return
            images = out.shape[0] if out.ndim else 1
            passes[f"{name}_{'jvp' if in_jvp() else 'forward'}"] += images
            if out.requires_grad:  # the tensor hook fires when backward reaches this network's output
                out.register_hook(lambda grad: passes.update({f"{name}_backward": images}))
        return on_forward

    for name, net in networks.items():
        if net is not None:
            handles.append(net.register_forward_hook(hook(name)))
    try:
        yield passes
    finally:
        for h in handles:
            h.remove()


def in_jvp() -> bool:
    """True inside ``torch.func.jvp``: the pass carries tangents (primal and tangent at once)."""
    if torch._C._functorch.maybe_current_level() is None:
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter

    return retrieve_current_functorch_interpreter().key() == TransformType.Jvp


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


@contextlib.contextmanager
def measure(networks: dict):
    """FLOPs and passes of whatever runs in the block: yields a dict filled in when it ends."""
    found = {}
    with count_passes(networks) as passes, FlopCounterMode(display=False) as counter:
        yield found
    found.update(flops=int(counter.get_total_flops()), passes=Counter(passes))


class CostMeter:
    """Cumulative cost of one run: FLOPs, passes, seconds in the update phases, one-off costs.

    ``networks`` maps names (teacher, fake, generator, discriminator) to modules; ``scale`` is the
    number of processes doing the same work. The state (``state_dict``) rides in ``state.pt``, so a
    resumed run continues from the checkpoint's figures exactly.
    """

    def __init__(self, networks: dict, scale: int = 1):
        self.networks, self.scale = networks, scale
        self.flops, self.passes, self.seconds = 0, Counter(), 0.0
        self.oneoff: dict[str, int] = {}  # name -> FLOPs of a cost paid once (e.g. "regression_pairs")
        self.per_phase: dict[tuple, tuple[int, Counter]] = {}  # phase shape -> its measured (FLOPs, passes)

    @contextlib.contextmanager
    def phase(self, *shape):
        """Account for one phase of a training step; measured the first time ``shape`` is seen (under
        FlopCounterMode a backward pass rounds differently, so that step is not bit-identical to an
        unmeasured one; it is as valid).

        ``shape`` must determine the phase's work (name, micro-batch, micro-batches, updates): the
        same shape repeats the same passes at the same sizes. Nothing is added if the block raises.
        """
        start = time.perf_counter()
        known = self.per_phase.get(shape)
        if known is None:
            with measure(self.networks) as found:
                yield
            known = self.per_phase[shape] = (found["flops"] * self.scale,
                                             Counter({k: v * self.scale for k, v in found["passes"].items()}))
        else:
            yield
        self.seconds += time.perf_counter() - start
        self.flops += known[0]
        self.passes.update(known[1])

    @contextlib.contextmanager
    def once(self, name: str):
        """Account for a one-off cost (measured in full): added to the totals and kept under ``name``."""
        with measure(self.networks) as found:
            yield
        flops = found["flops"] * self.scale
        self.oneoff[name] = self.oneoff.get(name, 0) + flops
        self.flops += flops
        self.passes.update({k: v * self.scale for k, v in found["passes"].items()})

    @property
    def gflop(self) -> float:
        return self.flops / 1e9

    def row(self) -> dict:
        """The cumulative figures every log row carries: gflop, passes (images per network and
        direction), train_s (seconds in the update phases)."""
        return {"gflop": self.gflop, "passes": dict(sorted(self.passes.items())), "train_s": round(self.seconds, 3)}

    def summary(self) -> dict:
        """The manifest's ``cost`` entry: the cumulative figures plus the one-off costs in GFLOP."""
        return {**self.row(), "oneoff_gflop": {k: v / 1e9 for k, v in sorted(self.oneoff.items())}}

    def state_dict(self) -> dict:
        """Totals and the measured phase shapes. A resumed run must not measure again: FlopCounterMode
        changes the backward pass's rounding, and an uninterrupted run measured only its first step."""
        return {"flops": self.flops, "passes": dict(self.passes), "seconds": self.seconds, "oneoff": dict(self.oneoff),
                "per_phase": [[list(shape), flops, dict(passes)] for shape, (flops, passes) in self.per_phase.items()]}

    def load_state_dict(self, state: dict) -> None:
        self.flops, self.seconds = int(state["flops"]), float(state["seconds"])
        self.passes, self.oneoff = Counter(state["passes"]), dict(state["oneoff"])
        self.per_phase = {tuple(shape): (int(flops), Counter(passes)) for shape, flops, passes in state["per_phase"]}


def sampling_cost(networks: dict, sample, n_images: int, counted: str) -> dict:
    """The cost per image of a sampler: ``sample()`` draws ``n_images`` images.

    Returns gflop_per_image, nfe (forward passes of network ``counted`` per image) and
    forward_gflop_per_image (gflop_per_image / nfe), and the samples under ``samples``.
    """
    with measure(networks) as found:
        samples = sample()
    gflop = found["flops"] / 1e9 / n_images
    nfe = found["passes"].get(f"{counted}_forward", 0) / n_images
    return {"samples": samples, "gflop_per_image": gflop, "nfe": nfe,
            "forward_gflop_per_image": gflop / nfe if nfe else None}
