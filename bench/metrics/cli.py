"""``bench fid IMAGES_A IMAGES_B``: FID, IS, KID and precision/recall between two image sets."""
from __future__ import annotations

import importlib
import json

from ..errors import BadInput

# Extractors that live with a suite: imported only when asked for.
SUITE_EXTRACTORS = {"digits": "bench.suites.digits"}


def _ensure_extractor(name: str) -> None:
    from .fidelity import EXTRACTOR_LOADERS

    if name in SUITE_EXTRACTORS and name not in EXTRACTOR_LOADERS:
        try:
            importlib.import_module(SUITE_EXTRACTORS[name])
        except ModuleNotFoundError as exc:
            raise BadInput(f"extractor {name!r} needs {SUITE_EXTRACTORS[name]}, which is not installed ({exc})") from None


def cli_fid(args) -> int:
    """Score IMAGES_A (generated) against IMAGES_B (reference: folder, .npz images or mu/sigma stats)."""
    from ..config import pick_device
    from .fidelity import FidelityEvaluator
    from .images import load_images

    device = pick_device(args.device)
    _ensure_extractor(args.extractor)
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
    labels = {"fid": "FID", "is": "IS", "kid": "KID", "precision": "precision", "recall": "recall"}
    for m in measurements:
        print(f"{labels[m.metric]:10s} {m.value:.6g}")
    return 0
