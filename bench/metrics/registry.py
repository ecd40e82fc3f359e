"""Every metric a run directory may hold: its label, direction, positivity, headline rank and code.

Torch-free: results, leaderboards, plots, the report, the CLI and the suites read it. A new metric
is its implementation plus one ``Metric`` line here. A metric found in a run directory but not
registered is still shown, labelled as unregistered, never dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import unknown_name

UNREGISTERED = "unregistered"


@dataclass(frozen=True)
class Metric:
    """What the harness knows about one metric name of metrics.jsonl.

    ``direction`` is "lower" or "higher" (is better); ``positive`` metrics are always > 0, so a
    spread between two values is a ratio (in decades); ``headline`` ranks the metrics that may head
    a suite's leaderboard, plots and report section (1 first; None never heads); ``impl`` is the
    ``"module:attribute"`` that computes it; ``space`` is the feature space it is measured in: ``"suite"``
    (the suite's own extractor: Inception for images, the classifier for digits), ``"dinov2"``, ``"clip"``, or ""
    where that does not apply (analytic distances, text-to-image scores).
    """

    name: str
    label: str
    direction: str
    positive: bool
    headline: int | None
    impl: str
    space: str = ""

    @property
    def registered(self) -> bool:
        return self.direction != UNREGISTERED


_FIDELITY = "bench.metrics.fidelity:FidelityEvaluator"
_GAUSSIAN = "bench.suites.gaussian:GaussianEvaluator"
_GAUSSIAN_COND = "bench.suites.gaussian_cond:ConditionalGaussianEvaluator"
_DIVERSITY = "bench.metrics.diversity:DiversityEvaluator"
_CLASS_FRECHET = "bench.metrics.conditional:ClassFrechet"

METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("fid", "FID", "lower", True, 1, _FIDELITY, "suite"),
    Metric("is", "IS", "higher", True, 6, _FIDELITY, "suite"),
    Metric("kid", "KID", "lower", False, None, _FIDELITY, "suite"),
    Metric("precision", "Precision", "higher", False, None, _FIDELITY, "suite"),
    Metric("recall", "Recall", "higher", False, None, _FIDELITY, "suite"),
    # the same Frechet distance as FID, against samples of the teacher's own sampler instead of real data
    Metric("fd_teacher", "FD to teacher", "lower", True, 7, _FIDELITY, "suite"),
    # EDM2's FD-DINOv2: the Frechet distance of DINOv2 ViT-L/14 class tokens (bench.metrics.dinov2)
    Metric("fd_dinov2", "FD-DINOv2", "lower", True, 8, _FIDELITY, "dinov2"),
    # Naeem et al. 2020, k-NN balls (k=5); torch-fidelity's precision/recall above are Kynkaanniemi's, k=3
    Metric("prdc_precision", "Precision (PRDC)", "higher", False, None, _DIVERSITY, "suite"),
    Metric("prdc_recall", "Recall (PRDC)", "higher", False, None, _DIVERSITY, "suite"),
    Metric("density", "Density", "higher", False, None, _DIVERSITY, "suite"),
    Metric("coverage", "Coverage", "higher", False, None, _DIVERSITY, "suite"),
    Metric("vendi", "Vendi", "higher", True, None, _DIVERSITY, "suite"),
    # normalised entropy of the classes the suite's classifier assigns (1: all equally frequent)
    Metric("class_balance", "Class balance", "higher", False, None, _DIVERSITY, "suite"),
    Metric("frechet", "Fréchet", "lower", True, 2, _GAUSSIAN),
    Metric("sliced_wasserstein", "Sliced W.", "lower", True, None, _GAUSSIAN),
    # the conditional mixture (bench.suites.gaussian_cond): per-class Frechet to the guided teacher's samples
    Metric("frechet_class", "Fréchet per class", "lower", True, None, _GAUSSIAN_COND),
    # conditional suites: the share of samples classified as the class they were asked for (the digits
    # classifier; the conditional mixture's exact Bayes classifier computes it there)
    Metric("class_accuracy", "Class accuracy", "higher", True, None, "bench.metrics.conditional:ClassAccuracy"),
    # conditional digits: FID against the digits of each class and FD to the guided teacher's samples of each
    # class, averaged over the classes (per class in the measurement's detail)
    Metric("fid_class", "FID per class", "lower", True, None, _CLASS_FRECHET, "suite"),
    Metric("fd_teacher_class", "FD to teacher per class", "lower", True, None, _CLASS_FRECHET, "suite"),
    Metric("aesthetic", "Aesthetic", "higher", True, 5, "bench.metrics.t2i:AestheticScorer"),
    Metric("image_reward", "ImageReward", "higher", False, 3, "bench.metrics.t2i:ImageRewardScorer"),
    Metric("pickscore_raw", "PickScore", "higher", True, 4, "bench.metrics.t2i:PickScorer"),
    # Hessel et al. 2021: 100 * max(cos, 0) of OpenAI CLIP ViT-L/14 image and prompt embeddings
    Metric("clip_score", "CLIP score", "higher", False, None, "bench.metrics.t2i:ClipScorer"),
    # Jayasumana et al. 2024: 1000 * MMD^2 (RBF, sigma 10) of CLIP image embeddings, to the teacher's samples
    Metric("cmmd", "CMMD", "lower", False, None, "bench.metrics.cmmd:cmmd", "clip"),
]}


def get(name: str) -> Metric:
    """The registered metric ``name``; BadInput naming close matches otherwise."""
    if name not in METRICS:
        raise unknown_name("metric", name, sorted(METRICS))
    return METRICS[name]


def info(name: str) -> Metric:
    """``name``'s entry, or an "unregistered" one (label = name) for a metric found in results."""
    return METRICS.get(name) or Metric(name, name, UNREGISTERED, False, None, "")


def implemented_in(module: str) -> tuple[str, ...]:
    """The metric names computed in ``module`` (e.g. ``"bench.metrics.t2i"``), in registry order."""
    return tuple(m.name for m in METRICS.values() if m.impl.split(":")[0] == module)
