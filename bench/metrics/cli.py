"""``bench fid IMAGES_A IMAGES_B``: FID, IS, KID and precision/recall between two image sets."""
from __future__ import annotations

import json


def cli_fid(args) -> int:
    """Score IMAGES_A (generated) against IMAGES_B (reference: folder, .npz images or mu/sigma stats).

    ``--extractor digits`` imports the digits suite's classifier only then (fidelity.EXTRACTORS).
    """
    from ..config import pick_device
    from . import registry as metric_registry
    from .fidelity import FidelityEvaluator
    from .images import load_images

    device = pick_device(args.device)
    images = load_images(args.images_a)
    evaluator = FidelityEvaluator(args.images_b, extractor=args.extractor, device=device.type)
    measurements = evaluator.evaluate(images)
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
