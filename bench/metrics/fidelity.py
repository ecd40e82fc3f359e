"""FID, IS, KID and precision/recall through torch-fidelity, from memory, with cached references.

Generated images go through the extractor in memory (``features.shared``: one pass serves every
metric of the feature space) and into torch-fidelity's metric functions, as its ``calculate_metrics``
would call them; KID through ``kid``, torch-fidelity's estimator on the same subsets, faster. Nothing is
written to disk. Reference features and statistics are cached by
torch-fidelity under ``cache_root/<key>/``, where the key names everything that defines them
(dataset, split, resolution, extractor, weights digest), because torch-fidelity reuses a cache
entry without checking that it matches.

Feature extractors are found by name in ``EXTRACTORS`` (Inception, random features, the digits
suite's classifier), each imported on first use; any class registered with ``register_extractor``
works too.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.metric_fid import (fid_featuresdict_to_statistics, fid_featuresdict_to_statistics_cached,
                                      fid_input_id_to_statistics_cached, fid_statistics_to_metric)
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_prc import prc_featuresdict_to_metric
from torch_fidelity.registry import DATASETS_REGISTRY, FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import extract_featuresdict_from_input_id_cached, get_cacheable_input_name

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None

from ..errors import BadInput
from ..registry import Registry
from .base import Evaluator, Measurement
from .images import check_images, load_images, to_uint8
from .kid import kid_from_features

IMPL = f"torch-fidelity {torch_fidelity.__version__}"
METRICS = ("fid", "is", "kid", "prc")
_FLAGS = {"fid": "fid", "is": "isc", "kid": "kid", "prc": "prc"}


@dataclass
class ExtractorSpec:
    """How to run one feature extractor through torch-fidelity.

    ``weights_id`` enters the reference cache key (a digest of the weight file, or the class name
    of a weight-free network); ``channels`` is 3 when the extractor needs RGB (grayscale is then
    repeated), None when it takes images as they come.
    """

    fidelity_name: str
    weights_id: str
    impl: str
    channels: int | None = 3
    kwargs: dict[str, Any] = field(default_factory=dict)


def register_extractor(name: str, cls) -> None:
    """Register a ``FeatureExtractorBase`` subclass with torch-fidelity; re-registering is harmless.

    The same class (or the same module-qualified class re-imported, as pytest's importlib mode
    does) registered twice is accepted; a different class under a taken name is an error.
    """
    existing = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if existing is None:
        torch_fidelity.register_feature_extractor(name, cls)
    elif existing is not cls:
        if (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"feature extractor name {name!r} is taken by {existing.__module__}.{existing.__qualname__}")
        FEATURE_EXTRACTORS_REGISTRY[name] = cls


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 (first 16 hex digits) of a file, remembered per (path, size, mtime) for this process."""
    from ..weights import sha256_file

    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(Path(path))[:16]
    return _DIGESTS[key]


def inception_spec() -> ExtractorSpec:
    """torch-fidelity's Inception-v3 with the weight file found through ``bench.weights``."""
    from ..weights import find_weight

    path = find_weight("inception")
    return ExtractorSpec("inception-v3-compat", weights_id=file_digest(path), impl="inception-v3-compat",
                         channels=3, kwargs={"feature_extractor_weights_path": str(path)})


# Feature extractors by name, each a function returning an ExtractorSpec (keyword options, e.g. a
# weight path, go to it), imported only when asked for: evaluating CIFAR-10 never imports digits.
EXTRACTORS = Registry("feature extractor", {
    "inception": "bench.metrics.fidelity:inception_spec",
    "random-features": "bench.metrics.random_features:spec",
    "digits": "bench.suites.digits_features:extractor_spec",
    "dinov2": "bench.metrics.dinov2:spec",
})


def resolve_extractor(name: str, **options) -> ExtractorSpec:
    """The spec of extractor ``name``: a registered one, or a class registered with torch-fidelity."""
    if name not in EXTRACTORS and name in FEATURE_EXTRACTORS_REGISTRY:
        cls = FEATURE_EXTRACTORS_REGISTRY[name]
        return ExtractorSpec(name, weights_id=f"{cls.__module__}.{cls.__qualname__}", impl=name, channels=None)
    EXTRACTORS.check(name)
    try:
        loader = EXTRACTORS.get(name)
    except (ImportError, AttributeError) as exc:
        raise BadInput(f"feature extractor {name!r} needs {EXTRACTORS.entries[name]}, which is not available "
                       f"({exc})") from None
    return loader(**options)


class ImageDataset(Dataset):
    """A uint8 NCHW tensor as torch-fidelity's input: items are uint8 C x H x W tensors."""

    def __init__(self, images: torch.Tensor, channels: int | None = 3):
        self.images = images
        self.repeat = channels == 3 and images.shape[1] == 1

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.images[i]
        return x.expand(3, -1, -1) if self.repeat else x


class LazyImages(Dataset):
    """A reference made only when torch-fidelity reads it: ``make()`` returns the uint8 NCHW images.

    torch-fidelity reads a reference only when its cache misses, so an expensive reference (10k
    samples of a multi-step teacher) is drawn once per cache key, not once per evaluation.
    """

    def __init__(self, make, n: int, channels: int | None = 3):
        self.make, self.n, self.channels, self._images = make, n, channels, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._images is None:
            images = self.make()
            check_images(images, "reference images")
            if images.shape[0] != self.n:
                raise ValueError(f"the reference was declared with {self.n} images, made {images.shape[0]}")
            self._images = ImageDataset(images.cpu(), self.channels)
        return self._images[i]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=_-]+", "_", text).strip("_")[:80] or "x"


def _folder_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def _tensor_fingerprint(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:12]


class FidelityEvaluator(Evaluator):
    """FID, IS, KID and precision/recall of generated images against one reference.

    ``reference`` is one of: a uint8 NCHW tensor (name it with ``reference_key``, for example
    ``"digits-heldout"`` or ``"cifar10-train"``; resolution is added to the key), a folder of PNGs or
    an .npz image array, a torch-fidelity dataset name (``"cifar10-train"``; never downloaded), or
    an .npz of precomputed statistics ``mu``/``sigma`` (EDM's ``cifar10-32x32.npz``), with which only
    FID and IS (which needs no reference) are computed; or None for IS alone; or a function returning
    uint8 images, called only when the cache misses (``reference_key`` and ``reference_size`` then
    required: the key must name everything that determines the images).
    ``n_samples`` is how many samples the caller should generate (FID-10k by default); KID's subset
    size shrinks to the smaller set when that is under 1000 (torch-fidelity raises otherwise).
    """

    def __init__(self, reference, extractor: str = "inception", metrics=METRICS, device="cpu",
                 cache_root=None, n_samples: int = 10000, kid_subset_size: int | None = None,
                 batch_size: int = 64, reference_key: str | None = None, datasets_root=None,
                 extractor_options: dict | None = None, reference_size: int | None = None, n_final: int | None = None):
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown or not metrics:
            raise BadInput(f"unknown metric {unknown[0] if unknown else '(none)'}; choose from {', '.join(METRICS)}")
        from ..weights import weights_dir

        self.spec = resolve_extractor(extractor, **(extractor_options or {}))
        self._extractor_options = dict(extractor_options or {})
        self.extractor = extractor
        self.metrics = tuple(metrics)
        self.device = torch.device(device)
        self.n_samples = n_samples
        self._n_final = n_final
        self.reference_size = reference_size
        self.kid_subset_size = kid_subset_size
        self.batch_size = batch_size
        self.datasets_root = datasets_root
        self.reference_stats = None  # {"mu", "sigma"} when the reference is a statistics file
        self.reference_input, dataset_key, self.n_reference = self._reference(reference, reference_key)
        key = f"{dataset_key}-{extractor}-{self.spec.weights_id}"
        self.cache_key = _slug(key) + "-" + hashlib.sha256(key.encode()).hexdigest()[:8]
        self.cache_dir = Path(cache_root or weights_dir() / "fidelity-cache") / self.cache_key

    def _reference(self, reference, reference_key):
        """(torch-fidelity input, cache key part, number of reference images or None)."""
        if reference is None:
            if set(self.metrics) != {"is"}:
                raise BadInput("a reference is needed for fid, kid and prc (only is works without one)")
            return None, "none", None
        if callable(reference):
            if not (reference_key and self.reference_size):
                raise ValueError("a reference made by a function needs reference_key and reference_size")
            return (LazyImages(reference, self.reference_size, self.spec.channels), reference_key,
                    self.reference_size)
        if torch.is_tensor(reference):
            check_images(reference, "reference images")
            ref = reference.cpu()
            name = reference_key or f"tensor-{_tensor_fingerprint(ref)}"
            res = f"{ref.shape[2]}x{ref.shape[3]}"
            return ImageDataset(ref, self.spec.channels), f"{name}-{res}", ref.shape[0]
        if isinstance(reference, str) and reference in DATASETS_REGISTRY:
            return reference, f"{reference_key or reference}-native", None
        path = Path(reference)
        if path.suffix == ".npz" and path.is_file():
            with np.load(path, allow_pickle=False) as data:
                if "mu" in data and "sigma" in data:
                    self.reference_stats = {"mu": data["mu"].astype(np.float64), "sigma": data["sigma"].astype(np.float64)}
                    return None, "", None
        images = load_images(path)  # BadInput for a missing/empty/malformed path
        fingerprint = file_digest(path) if path.is_file() else _folder_fingerprint(path)
        name = reference_key or f"{path.stem}-{fingerprint}"
        res = f"{images.shape[2]}x{images.shape[3]}"
        return ImageDataset(images, self.spec.channels), f"{name}-{res}", images.shape[0]

    def _kwargs(self, n: int) -> dict[str, Any]:
        """calculate_metrics keyword arguments shared by every route."""
        sizes = [n] + ([self.n_reference] if self.n_reference else [])
        return dict(
            feature_extractor=self.spec.fidelity_name, cuda=self.device.type == "cuda",
            batch_size=self.batch_size, verbose=False, save_cpu_ram=True,  # in-memory: no loader workers
            isc_splits=min(10, n), kid_subset_size=min([self.kid_subset_size or 1000] + sizes),
            datasets_root=self.datasets_root, datasets_download=False, **self.spec.kwargs)

    def _as_uint8(self, images: torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(images) and images.is_floating_point():
            images = to_uint8(images)  # samples in the suite's [-1, 1] range
        check_images(images, "generated images")
        if images.shape[0] < 2:
            raise BadInput(f"generated images: need at least 2 images, got {images.shape[0]}")
        return images.detach().cpu()

    def compute(self, images: torch.Tensor) -> dict[str, float]:
        """The raw metric dictionary ({"fid", "is", "kid", "precision", "recall"} as requested).

        The generated images' features come from the feature space shared by every evaluator of this
        extractor (one extractor pass per evaluation); the reference's from torch-fidelity's cache.
        """
        images = self._as_uint8(images)
        kwargs = self._kwargs(images.shape[0])
        metrics = self.metrics
        if self.reference_stats is not None:  # statistics give FID alone; IS needs no reference
            metrics = tuple(m for m in metrics if m in ("fid", "is"))
            if not metrics:
                raise BadInput("a statistics file (mu, sigma) supports only fid and is; kid and prc need reference images")
        layers = {m: self._layer(m) for m in metrics}
        generated = self.feature_space().by_layer(images, sorted(set(layers.values())))
        raw = {}
        if "is" in layers:
            raw.update(isc_featuresdict_to_metric(generated, layers["is"], **kwargs))
        if "fid" in layers and self.reference_stats is not None:
            raw.update(self._fid_against_stats(generated[layers["fid"]]))
        elif self.reference_input is not None:
            try:
                with self._reference_cache():
                    raw.update(self._against_reference(generated, layers, kwargs))
            except RuntimeError as exc:
                if isinstance(self.reference_input, str) and "not found" in str(exc).lower():
                    root = self.datasets_root or Path(torch.hub.get_dir()).parent / "fidelity_datasets"
                    raise BadInput(f"reference dataset {self.reference_input!r} is not in {root} (never downloaded "
                                   "here): fetch it once with torchvision's dataset class (download=True) into that "
                                   "folder, or give a statistics .npz as the reference") from None
                raise
        return _rename(raw)

    def feature_space(self):
        """The shared feature space of this evaluator's extractor (features.shared)."""
        from .features import shared

        return shared(self.extractor, self.device, self.batch_size, self._extractor_options)

    def _layer(self, metric: str) -> str:
        return FEATURE_EXTRACTORS_REGISTRY[self.spec.fidelity_name].get_default_feature_layer_for_metric(_FLAGS[metric])

    def _against_reference(self, generated: dict, layers: dict, kwargs: dict) -> dict[str, float]:
        """FID, KID and precision/recall as torch-fidelity's ``calculate_metrics`` computes them, the
        reference's features and FID statistics read from (or written to) its cache; KID by ``kid``."""
        kwargs = {**kwargs, "input2": self.reference_input, "input2_cache_name": "reference",
                  "cache_root": str(self.cache_dir), "cache": True}
        extractor = self.feature_space().net(sorted(set(layers.values())))
        raw, binary = {}, set(layers) - {"is"}
        if binary == {"fid"}:  # statistics alone: a cached reference is never read (nor made, when lazy)
            stats_2 = fid_input_id_to_statistics_cached(2, extractor, layers["fid"], **kwargs)
        else:
            reference = extract_featuresdict_from_input_id_cached(2, extractor, **kwargs)
            if "fid" in layers:
                stats_2 = fid_featuresdict_to_statistics_cached(
                    reference, get_cacheable_input_name(2, **kwargs), extractor, layers["fid"], **kwargs)
            if "kid" in layers:
                raw.update(kid_from_features(generated[layers["kid"]], reference[layers["kid"]],
                                             **{k: v for k, v in kwargs.items() if k.startswith("kid_") or k == "rng_seed"}))
            if "prc" in layers:
                raw.update(prc_featuresdict_to_metric(generated, reference, layers["prc"], **kwargs))
        if "fid" in layers:
            raw.update(fid_statistics_to_metric(fid_featuresdict_to_statistics(generated, layers["fid"]), stats_2, False))
        return raw

    @contextlib.contextmanager
    def _reference_cache(self):
        """Guard the first computation of the reference cache.

        torch-fidelity writes its cache files in place and trusts any it finds. Until a ``complete``
        marker exists, one process at a time (a file lock: parallel runs of a sweep) clears leftovers
        of an interrupted attempt, computes, and then writes the marker.
        """
        marker = self.cache_dir / "complete"
        if marker.exists():
            yield
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "w") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                for stale in self.cache_dir.glob("*.pt"):
                    stale.unlink()
            yield
            marker.touch()

    def _fid_against_stats(self, features: torch.Tensor) -> dict[str, float]:
        stats = {k: v.astype(np.float64) for k, v in fid_featuresdict_to_statistics({"f": features}, "f").items()}
        if stats["mu"].shape != self.reference_stats["mu"].shape:
            raise BadInput(f"reference statistics have {self.reference_stats['mu'].shape[0]} features, "
                           f"extractor {self.extractor} gives {stats['mu'].shape[0]}")
        return fid_statistics_to_metric(stats, self.reference_stats, False)

    def evaluate(self, samples: torch.Tensor, cond: Any = None) -> list[Measurement]:
        """Measurements of ``samples`` (uint8 NCHW, or float in [-1, 1]); ``cond`` is not used:
        conditional models are scored on the unconditional distribution, as the papers do."""
        n = samples.shape[0]
        impl = f"{IMPL}/{self.spec.impl}"
        return [Measurement(metric=k, value=v, n_samples=n, impl=impl) for k, v in self.compute(samples).items()]


def _rename(raw: dict[str, float]) -> dict[str, float]:
    names = {"frechet_inception_distance": "fid", "inception_score_mean": "is",
             "kernel_inception_distance_mean": "kid", "precision": "precision", "recall": "recall"}
    out = {names[k]: float(v) for k, v in raw.items() if k in names}
    return {k: out[k] for k in ("fid", "is", "kid", "precision", "recall") if k in out}
