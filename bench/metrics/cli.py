"""``bench fid IMAGES_A IMAGES_B``: FID, IS, KID and precision/recall between two image sets."""
from __future__ import annotations

import json

from ..errors import BadInput


def _colour(images) -> str:
    return "greyscale" if images.shape[1] == 1 else "RGB"


# An extractor's Frechet distance under its own name where it is not Inception's FID (metrics registry).
FRECHET_NAMES = {"dinov2": "fd_dinov2"}


def _metrics_of(extractor: str) -> tuple[str, ...]:
    """The fidelity metrics ``extractor`` supports: IS only where it has class logits (DINOv2 has none)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from .fidelity import METRICS, resolve_extractor

    cls = FEATURE_EXTRACTORS_REGISTRY[resolve_extractor(extractor).fidelity_name]
    try:
        cls.get_default_feature_layer_for_metric("isc")
    except KeyError:
        return tuple(m for m in METRICS if m != "is")
    return METRICS


def cli_fid(args) -> int:
    """Score IMAGES_A (generated) against IMAGES_B (reference: folder, .npz images or mu/sigma stats).

    ``--extractor digits`` imports the digits suite's classifier only then (fidelity.EXTRACTORS);
    ``--extractor dinov2`` gives FD-DINOv2 (EDM2's recipe), KID and precision/recall, no IS.
    """
    from ..config import pick_device
    from . import registry as metric_registry
    from .fidelity import FidelityEvaluator
    from .images import load_images

    device = pick_device(args.device)
    images = load_images(args.images_a)
    evaluator = FidelityEvaluator(args.images_b, extractor=args.extractor, device=device.type,
                                  metrics=_metrics_of(args.extractor))
    reference = getattr(evaluator.reference_input, "images", None)
    if reference is not None and reference.shape[1] != images.shape[1]:
        raise BadInput(f"{args.images_a} holds {_colour(images)} images but {args.images_b} holds "
                       f"{_colour(reference)} ones: compare sets of one kind")
    frechet = FRECHET_NAMES.get(args.extractor, "fid")
    measurements = [m if m.metric != "fid" else type(m)(frechet, m.value, m.n_samples, m.impl)
                    for m in evaluator.evaluate(images)]
    if args.json:
        print(json.dumps({"a": args.images_a, "b": args.images_b, "extractor": args.extractor,
                          "n_a": images.shape[0], "n_b": evaluator.n_reference,
                          "impl": measurements[0].impl, **{m.metric: m.value for m in measurements}}))
        return 0
    print(f"{args.images_a} ({images.shape[0]} images) vs {args.images_b} "
          f"({evaluator.n_reference if evaluator.n_reference else 'statistics'}); {measurements[0].impl}")
    for m in measurements:
        print(f"{metric_registry.info(m.metric).label:10s} {m.value:.6g}")
    return 0
