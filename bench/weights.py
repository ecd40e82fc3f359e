"""Every weight file a metric or suite needs: where it is looked for, its size and checksum.

A weight is looked for, in order, in ``$BENCH_WEIGHTS_DIR`` (default ``~/.cache/distill-bench``),
then in the cache of the library that normally downloads it (torch hub, Hugging Face hub, the
``clip`` package, ImageReward). Nothing is downloaded unless ``bench weights fetch`` is run.

``bench weights check`` exits 0 when every weight asked about is present and 1 when any is
missing (so scripts can test it); it prints, for each missing one, where it was looked for and
the command that fetches it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInput
from .registry import unknown_name
from .rundir import write_atomic


@dataclass(frozen=True)
class Weight:
    """One weight file (or a Hugging Face model directory when ``hf_repo`` is set without ``filename``)."""

    name: str
    filename: str  # file name, or the directory name under BENCH_WEIGHTS_DIR for a model directory
    used_by: str
    url: str | None = None
    hf_repo: str | None = None  # "org/name" on the Hugging Face hub
    hf_file: str | None = None  # one file of hf_repo; None: the whole repository (a model directory)
    size: int | None = None
    sha256: str | None = None  # full digest, or a prefix (torch hub names carry one)
    extra_dirs: tuple[str, ...] = field(default=())  # other caches, "~"-relative

    @property
    def is_dir(self) -> bool:
        return self.hf_repo is not None and self.hf_file is None


REGISTRY: dict[str, Weight] = {w.name: w for w in [
    Weight("inception", "weights-inception-2015-12-05-6726825d.pth",
           "FID/IS/KID/precision-recall (torch-fidelity inception-v3-compat)",
           url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
               "weights-inception-2015-12-05-6726825d.pth",
           sha256="6726825d"),
    Weight("aesthetic-head", "sac+logos+ava1-l14-linearMSE.pth", "aesthetic score (LAION improved predictor head)",
           url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
               "sac+logos+ava1-l14-linearMSE.pth"),
    Weight("clip-vit-l-14", "ViT-L-14.pt", "aesthetic score (OpenAI CLIP ViT-L/14 image embedding)",
           url="https://openaipublic.azureedge.net/clip/models/"
               "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
           sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
           extra_dirs=("~/.cache/clip",)),
    Weight("image-reward", "ImageReward.pt", "ImageReward score",
           hf_repo="THUDM/ImageReward", hf_file="ImageReward.pt", extra_dirs=("~/.cache/ImageReward",)),
    Weight("image-reward-med-config", "med_config.json", "ImageReward score (BLIP text encoder config)",
           hf_repo="THUDM/ImageReward", hf_file="med_config.json", extra_dirs=("~/.cache/ImageReward",)),
    Weight("bert-base-uncased-vocab", "bert-base-uncased-vocab.txt", "ImageReward score (BERT tokenizer vocabulary)",
           hf_repo="google-bert/bert-base-uncased", hf_file="vocab.txt"),
    Weight("pickscore", "PickScore_v1", "PickScore (CLIP-H model directory)", hf_repo="yuvalkirstain/PickScore_v1"),
    Weight("pickscore-processor", "CLIP-ViT-H-14-laion2B-s32B-b79K", "PickScore (processor directory)",
           hf_repo="laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    Weight("dinov2-vitl14", "dinov2_vitl14_pretrain.pth", "FD-DINOv2 (DINOv2 ViT-L/14, EDM2's recipe, run through timm)",
           url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
           extra_dirs=("~/.cache/dnnlib/torch_hub/checkpoints",)),  # where EDM2's torch.hub.load keeps it
    Weight("edm-cifar10-uncond", "edm-cifar10-32x32-uncond-vp.pkl", "cifar10 suite teacher (unconditional)",
           url="https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl"),
    Weight("edm-cifar10-cond", "edm-cifar10-32x32-cond-vp.pkl", "cifar10 suite teacher (class-conditional)",
           url="https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-cond-vp.pkl"),
    Weight("edm-imagenet64-cond", "edm-imagenet-64x64-cond-adm.pkl", "imagenet64 suite teacher",
           url="https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-imagenet-64x64-cond-adm.pkl"),
    Weight("cifar10-fid-stats", "cifar10-32x32.npz", "cifar10 reference statistics (mu, sigma of 50k train)",
           url="https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz"),
    Weight("imagenet64-fid-stats", "imagenet-64x64.npz", "imagenet64 reference statistics (mu, sigma)",
           url="https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/imagenet-64x64.npz"),
    Weight("pixart-alpha", "PixArt-XL-2-512x512", "t2i suite teacher (diffusers pipeline directory)",
           hf_repo="PixArt-alpha/PixArt-XL-2-512x512"),
]}


def weights_dir() -> Path:
    """``$BENCH_WEIGHTS_DIR``, default ``~/.cache/distill-bench``: where fetch writes."""
    return Path(os.environ.get("BENCH_WEIGHTS_DIR") or Path.home() / ".cache" / "distill-bench").expanduser()


def _torch_hub_dir() -> Path:
    home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
    return Path(home).expanduser() / "hub" / "checkpoints"


def _hf_hub_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def candidates(w: Weight) -> list[Path]:
    """Every path where ``w`` is looked for, in order (snapshots of the HF cache expanded)."""
    paths = [weights_dir() / w.filename]
    if w.url and not w.hf_repo:
        paths.append(_torch_hub_dir() / w.filename)
    paths += [Path(d).expanduser() / w.filename for d in w.extra_dirs]
    if w.hf_repo:
        repo_dir = _hf_hub_dir() / ("models--" + w.hf_repo.replace("/", "--")) / "snapshots"
        snapshots = sorted(repo_dir.glob("*"), key=lambda p: p.stat().st_mtime, reverse=True) if repo_dir.is_dir() else []
        paths += [s / w.hf_file if w.hf_file else s for s in snapshots] or [repo_dir / "*" / (w.hf_file or "")]
    return paths


def locate(name: str) -> Path | None:
    """The first existing path of weight ``name``, or None."""
    w = get(name)
    for p in candidates(w):
        if (p.is_dir() and any(p.iterdir())) if w.is_dir else p.is_file():
            return p
    return None


def get(name: str) -> Weight:
    """Registry entry ``name``; BadInput listing the known names otherwise."""
    if name not in REGISTRY:
        raise unknown_name("weight", name, REGISTRY)
    return REGISTRY[name]


def find_weight(name: str) -> Path:
    """The local path of weight ``name``; BadInput naming the file and the fetch command if missing."""
    path = locate(name)
    if path is None:
        w = get(name)
        raise BadInput(f"weight file {w.filename} ({w.used_by}) not found in {weights_dir()} or the library "
                       f"caches; run `bench weights fetch {name}` or copy it to {weights_dir() / w.filename}")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(w: Weight, path: Path) -> str | None:
    """None when ``path`` matches the known size and checksum of ``w``, else what is wrong."""
    if w.is_dir:
        return None
    if w.size is not None and path.stat().st_size != w.size:
        return f"size {path.stat().st_size} != {w.size}"
    if w.sha256 is not None:
        digest = sha256_file(path)
        if not digest.startswith(w.sha256):
            return f"sha256 {digest[:16]}... does not start with {w.sha256[:16]}"
    return None


def source_of(w: Weight) -> str:
    """Where fetch gets ``w`` from, for humans."""
    if w.hf_repo:
        return f"hf:{w.hf_repo}" + (f"/{w.hf_file}" if w.hf_file else "")
    return w.url or "-"


def fetch(name: str) -> Path:
    """Download weight ``name`` into ``weights_dir()`` (atomically; checksum verified where known)."""
    w = get(name)
    found = locate(name)
    if found is not None:
        return found
    target = weights_dir() / w.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if w.hf_repo:
        try:
            import huggingface_hub
        except ImportError:
            raise BadInput(f"fetching {name} needs huggingface-hub (pip install huggingface-hub)") from None
        if w.is_dir:
            return Path(huggingface_hub.snapshot_download(w.hf_repo, local_dir=target))
        return Path(huggingface_hub.hf_hub_download(w.hf_repo, w.hf_file))  # into the HF cache, where locate looks
    def download(tmp):
        with open(tmp, "wb") as out, urllib.request.urlopen(w.url, timeout=60) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        problem = verify(w, Path(tmp))
        if problem:
            raise BadInput(f"downloaded {w.filename} does not match: {problem}")

    write_atomic(target, download)
    return target


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "?"


def cli_weights(args) -> int:
    """``bench weights list|check|fetch [NAMES]``: see the module docstring for exit statuses."""
    names = args.names or list(REGISTRY)
    for n in names:
        get(n)  # unknown names are bad input before anything happens
    if weights_dir().exists() and not weights_dir().is_dir():
        raise BadInput(f"the weights directory {weights_dir()} is a file; point BENCH_WEIGHTS_DIR at a folder")
    if args.action == "fetch" and any(locate(n) is None for n in names):
        from .rundir import check_writable

        check_writable(weights_dir(), "weights directory (BENCH_WEIGHTS_DIR)")
    if args.action == "list":
        print(f"weights directory: {weights_dir()}  (BENCH_WEIGHTS_DIR)")
        for n in names:
            w, path = REGISTRY[n], locate(n)
            print(f"{n:24s} {'present' if path else 'missing':8s} {w.filename}  [{w.used_by}]")
            print(f"{'':24s} source {source_of(w)}; size {_human(w.size)}; sha256 {w.sha256 or 'unknown'}")
            print(f"{'':24s} " + ("at " + str(path) if path else "looked in " + ", ".join(str(p.parent) for p in candidates(w))))
        return 0
    if args.action == "check":
        missing = 0
        for n in names:
            w, path = REGISTRY[n], locate(n)
            if path is None:
                missing += 1
                print(f"MISSING {n}: {w.filename} ({w.used_by}); get it with `bench weights fetch {n}` "
                      f"(from {source_of(w)}) or copy it to {weights_dir() / w.filename}")
                continue
            problem = verify(w, path)
            if problem:
                missing += 1
                print(f"BAD     {n}: {path}: {problem}; delete it and run `bench weights fetch {n}`")
            else:
                print(f"ok      {n}: {path}")
        print(f"{len(names) - missing} of {len(names)} weights present and valid")
        return 1 if missing else 0
    failed = 0
    for n in names:
        try:
            print(f"{n}: {fetch(n)}")
        except BadInput:
            raise
        except Exception as exc:  # no network, HTTP errors: report each and carry on
            failed += 1
            print(f"{n}: could not fetch from {source_of(REGISTRY[n])}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0
