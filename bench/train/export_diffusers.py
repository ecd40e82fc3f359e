"""``bench export RUN_DIR --format diffusers -o FOLDER``: a t2i run's EMA generator as a diffusers model folder.

The generator of the t2i suite is ``G(z) = D(sigma_init z; sigma_init)`` with ``D`` a ``VPDenoiser`` around a
copy of the teacher's transformer (PixArt) or UNet (Stable Diffusion). ``FOLDER`` is that network's
``save_pretrained`` folder (``from_pretrained`` of the same diffusers class reads it, and a pipeline takes it
in place of its own ``transformer``/``unet``), with ``distill_bench.json`` beside the weights: what one
step needs in diffusers' terms (the timestep, how ``z`` becomes the network's input, how its output becomes
the latents the pipeline's VAE decodes) and the run's config. The folder is written under a temporary
name and renamed into place when complete.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import BadInput

FORMAT = "distill-bench-one-step-generator"
INFO = "distill_bench.json"
SUITE = "t2i"  # the one suite whose generator is a diffusers network
FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt", ".npz", ".json")  # -o names a folder

# x0 (the pipeline's scaled latents) from the raw output ``out`` at x_vp = input_scale * z, per prediction type
X0 = {"epsilon": "sigma_init * (z - out)",
      "v_prediction": "sigma_init * z / (1 + sigma_init**2) - sigma_init * out / sqrt(1 + sigma_init**2)",
      "sample": "out"}


def applies(args, config: dict) -> bool:
    """Whether this module answers the export: ``--format diffusers``, or any format of a t2i run."""
    return args.format == "diffusers" or config.get("suite") == SUITE


def check_args(args, config: dict) -> None:
    """``--format diffusers`` of a one-step t2i run into a new (or empty) folder, before torch loads."""
    from .generate import _existing_parent

    if config.get("suite") != SUITE:
        raise BadInput(f"--format diffusers exports t2i runs; this is a {config.get('suite')} run "
                       "(use --format safetensors)")
    if args.format != "diffusers":
        raise BadInput(f"a t2i run's generator is a diffusers network: export it with --format diffusers, "
                       f"not {args.format}")
    if int((config.get("train") or {}).get("steps", 1)) > 1:
        raise BadInput("--format diffusers exports one-step generators; this run's generator takes "
                       f"{config['train']['steps']} steps")
    out = Path(args.output)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise BadInput(f"{out} exists; give a new folder")
    if out.suffix.lower() in FILE_SUFFIXES:
        raise BadInput(f"{out}: --format diffusers writes a folder; give a folder name, not a {out.suffix} file")
    if not os.access(_existing_parent(out), os.W_OK):
        raise BadInput(f"{out}: its folder is not writable")


def one_step_info(run, used: str) -> dict:
    """``distill_bench.json``: how to sample the exported network in one step, and the run it came from."""
    import torch

    generator = run.ema
    denoiser = generator.denoiser
    sigma = generator.sigma_init
    timestep = float(denoiser.sigma_to_t(torch.tensor([sigma]))[0])
    suite = run.suite
    return {
        "format": FORMAT,
        "class": type(denoiser.net).__name__,
        "component": suite.kind,  # the pipeline component it replaces: transformer or unet
        "sigma_init": sigma,
        "timestep": timestep,  # fractional: VPDenoiser.sigma_to_t(sigma_init), interpolated in log sigma
        "input_scale": sigma / math.sqrt(1 + sigma**2),  # network input x_vp = input_scale * z, z ~ N(0, I)
        "prediction_type": denoiser.prediction_type,
        "x0": X0[denoiser.prediction_type],  # the latents (VAE-scaled) the pipeline's VAE decodes
        "learned_sigma_channels": bool(getattr(denoiser.net.config, "out_channels", 0) == 2 * suite.channels),
        "micro_conditions": bool(getattr(denoiser.net, "use_additional_conditions", False)),
        "guidance_scale": None,  # the generator samples without guidance; the teacher's guidance is distilled in
        "teacher_guidance_scale": suite.options["guidance_scale"],
        "negative_prompt": suite.options["negative_prompt"],
        "max_sequence_length": suite.options["max_sequence_length"],
        "resolution": suite.resolution,
        "latent_shape": list(suite.latent_shape),
        "teacher_pipeline": str(suite.directory),
        "kimg": run.kimg,
        "checkpoint": used,
        "run_config": run.config,
    }


def cli_export_diffusers(args) -> int:
    """``bench export RUN_DIR --format diffusers -o FOLDER``."""
    from ..config import pick_device
    from .snapshots import load_run

    run, used, _ = load_run(Path(args.run_dir), pick_device("cpu"))
    write_folder(run, used, Path(args.output))
    print(args.output)
    return 0


def write_folder(run, used: str, out: Path) -> None:
    """The EMA generator's network (``save_pretrained``) and ``distill_bench.json``, renamed into place complete."""
    from ..rundir import write_folder_atomic

    def fill(tmp: Path):
        run.ema.denoiser.net.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / INFO).write_text(json.dumps(one_step_info(run, used), indent=2, sort_keys=True, default=str) + "\n")

    write_folder_atomic(out, fill)


