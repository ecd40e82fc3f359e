"""``bench generate RUN_DIR -o OUT``: a run's EMA generator's samples, one seed per image, for other evaluators.

Image ``i`` is drawn from its own seed as EDM's ``generate.py`` does (``z = randn`` of a generator
seeded with the seed, then the class label from the same stream), so any subset of seeds is
reproducible on its own. ``OUT`` ending in ``.npz`` is written in the ADM evaluation suite's layout
(``arr_0``: uint8 NHWC; ``arr_1``: class labels where the suite is conditional); any other ``OUT`` is a
PNG folder laid out as EDM's ``generate.py`` writes it (``000000/000123.png``), which EDM's and SiD's
``fid.py`` read, with EDM's ``dataset.json`` labels where conditional. Both are written atomically.
Latent suites (t2i) are decoded by the suite (``to_images``: the pipeline's VAE); their prompts go into
``prompts.json`` (file -> prompt) of the folder, or a unicode ``prompts`` array of the npz. ``--kimg K``
draws from the EMA generator at that point of training (``bench.train.snapshots``). ``--negative-prompt P``
(t2i) steers the generator away from ``P`` with SNOOPI's NASA at ``--nasa-scale`` (``bench.nets.nasa``).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from .. import validate
from ..errors import BadInput


def check_generate_args(args) -> None:
    """The run, its checkpoint, ``--n``/``--seed-start`` and the output, before torch loads."""
    from . import runconfig

    if Path(args.run_dir).suffix == ".safetensors":
        from .export import read_header

        read_header(args.run_dir)
        if getattr(args, "kimg", None) is not None:
            raise BadInput("--kimg picks a checkpoint of a run directory; an exported file holds one generator")
    else:
        runconfig.check_eval_args(args)  # a finished run with a checkpoint, and a valid --n
    if getattr(args, "kimg", None) is not None:
        validate.non_negative("--kimg", args.kimg)
    if args.n is None or args.batch < 1:
        raise BadInput("--n and --batch must be positive integers")
    if args.seed_start < 0 or args.seed_start + args.n > 2**31:
        raise BadInput(f"--seed-start {args.seed_start}: seeds must lie in [0, 2**31)")
    scale = getattr(args, "nasa_scale", 0.5)
    if not (isinstance(scale, (int, float)) and scale >= 0 and scale < float("inf")):
        raise BadInput(f"--nasa-scale must be a finite non-negative number, got {scale!r}")
    out = Path(args.output)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise BadInput(f"{out} exists; give a new .npz file or folder")
    if not os.access(_existing_parent(out), os.W_OK):
        raise BadInput(f"{out}: its folder is not writable")


def _existing_parent(path: Path) -> Path:
    path = path.absolute().parent
    while not path.exists():
        path = path.parent
    return path


def seeded_latents(suite, seeds):
    """One latent (and conditioning) per seed, each from a generator seeded with that seed."""
    import torch

    from .evaluation import _cat_cond

    zs, cond = [], None
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        zs.append(torch.randn(1, *suite.latent_shape, generator=gen))
        c = suite.sample_cond(1, gen)
        cond = c if cond is None else _cat_cond(cond, c)
    return torch.cat(zs), cond


def cli_generate(args) -> int:
    """``bench generate RUN_DIR -o OUT [--n N] [--seed-start S] [--batch B] [--kimg K]``."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from ..config import pick_device
    from ..metrics.images import to_uint8
    from ..rundir import write_atomic
    from .evaluation import generate
    from .snapshots import load_run

    directory = Path(args.run_dir)
    if directory.suffix == ".safetensors":
        from .export import load_exported

        run, _ = load_exported(directory, pick_device(args.device))
        _check_images(run.suite)
    else:
        from .. import suites
        from ..rundir import read_json

        _check_images(suites.get(read_json(directory / "config.json")["suite"]))  # before networks are built
        run, used, problems = load_run(directory, pick_device(args.device), getattr(args, "kimg", None))
        if problems:
            print(f"bench: note: {'; '.join(problems)}: generating from {used}", file=sys.stderr)
    seeds = list(range(args.seed_start, args.seed_start + args.n))
    images, labels, prompts = [], [], []
    with negative_prompt(run, getattr(args, "negative_prompt", None), getattr(args, "nasa_scale", 0.5)):
        for i in tqdm(range(0, len(seeds), args.batch), unit="batch", disable=args.quiet):
            z, cond = seeded_latents(run.suite, seeds[i:i + args.batch])
            samples = generate(run.ema, z, cond, run.device, args.batch, run.config["seed"])
            images.append(to_uint8(run.suite.to_images(samples)))  # latent suites decode (t2i: the pipeline's VAE)
            if torch.is_tensor(cond):
                labels.append(cond.argmax(1))
            elif isinstance(cond, dict) and "prompts" in cond:
                prompts += cond["prompts"]
    images = torch.cat(images).permute(0, 2, 3, 1).numpy()  # NHWC
    labels = torch.cat(labels).numpy() if labels else None
    out = Path(args.output)
    if out.suffix == ".npz":
        arrays = {"arr_0": images} if labels is None else {"arr_0": images, "arr_1": labels}
        if prompts:  # a unicode array (no pickle needed to read it); arr_1 stays ADM's integer labels
            arrays["prompts"] = np.array(prompts, dtype=str)
        write_atomic(out, lambda tmp: np.savez(tmp, **arrays))
    else:
        _write_png_folder(out, images, seeds, labels, prompts)
    print(out)
    return 0


def negative_prompt(run, prompt: str | None, scale: float):
    """A context in which the run's EMA generator steers away from ``prompt`` with NASA at ``scale``
    (``bench.nets.nasa``); nothing without a prompt. Text suites only: NASA acts on cross-attention."""
    if prompt is None:
        return contextlib.nullcontext()
    if not hasattr(run.suite, "encode_prompt"):
        raise BadInput(f"--negative-prompt: NASA steers text cross-attention; suite {run.suite.name} has no text "
                       "conditioning (class labels have no negative prompt)")
    from ..nets.nasa import nasa

    embeds, mask = run.suite.encode_prompt(prompt)
    return nasa(run.ema.denoiser.net, embeds.to(run.device), None if mask is None else mask.to(run.device), scale)


def _check_images(suite) -> None:
    """BadInput unless the suite (class or instance) makes images, or latents it decodes to images."""
    if not (suite.samples_are_images or suite.decodes_to_images):
        raise BadInput(f"suite {suite.name}: its generator's samples are not images; bench generate writes images")


def _write_png_folder(out: Path, images, seeds, labels, prompts=()) -> None:
    """EDM's layout, written into a temporary sibling folder that is renamed into place when complete;
    ``prompts.json`` maps each file to its prompt where the suite is text-conditioned."""
    from PIL import Image

    from ..rundir import write_folder_atomic

    def fill(tmp: Path):
        names = []
        for image, seed in zip(images, seeds):
            name = f"{seed - seed % 1000:06d}/{seed:06d}.png"
            (tmp / name).parent.mkdir(exist_ok=True)
            Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(tmp / name)
            names.append(name)
        if labels is not None:
            (tmp / "dataset.json").write_text(json.dumps({"labels": [[n, int(c)] for n, c in zip(names, labels)]}))
        if prompts:
            (tmp / "prompts.json").write_text(json.dumps(dict(zip(names, prompts)), indent=0, ensure_ascii=False))

    write_folder_atomic(out, fill)
