"""Text-to-image suite: a diffusers latent-diffusion teacher (PixArt-alpha first) in EDM form.

The teacher is a local diffusers pipeline directory; its class decides the parts: a denoiser
(``transformer`` for PixArt-alpha/Sigma, ``unet`` for Stable Diffusion), a VAE, a text encoder
with its tokenizer, and a scheduler that fixes the noise schedule and the prediction type.
Generator and fake score are copies of the teacher's denoiser; all three run in the VAE's
scaled latent space and are wrapped as EDM denoisers ``D(x, sigma, cond)``.

Sigma to the pipeline's conventions: ``bench.nets.vp.VPDenoiser``.

``cond`` is a dict: ``prompt_embeds`` ``[B, L, D]``, ``prompt_attention_mask`` ``[B, L]`` (or None
for CLIP/UNet pipelines, which attend to the padded sequence), and ``prompts`` (the strings the
evaluation metrics need). The null-prompt embedding used for guidance is the same for every
sample, so the denoisers hold it once instead of ``cond`` carrying a copy per sample; ``cond=None``
means the null prompt (unconditional).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from .. import validate
from ..errors import BadInput
from ..metrics import registry as metric_registry
from ..metrics.base import Evaluator, Measurement
from ..nets.precond import OneStepGenerator
from ..nets.vp import VPDenoiser, pad_sequence
from ..rundir import read_json_or_none
from .base import Parts, Suite, heun_sampler, slice_cond, to_device


PIPELINE_WEIGHT = "pixart-alpha"  # bench.weights entry of the default teacher


DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "prompts.txt"


# per-image scores, then CMMD (a distance between image sets, to the teacher's samples)
METRICS = metric_registry.implemented_in("bench.metrics.t2i") + metric_registry.implemented_in("bench.metrics.cmmd")


TEACHER_REFERENCE_SEED = 7_777_777  # CMMD's reference: apart from every run's latent bank and training noise


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


SAMPLERS = ("scheduler", "heun")


INSTALL_HINT = "pip install 'distill-bench[t2i]' (see docs/t2i.md)"


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a COCO captions JSON (``annotations[].caption``) or a text file, one a line.

    Blank lines and exact duplicates are dropped (COCO repeats captions); order is kept.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInput(f"prompt file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
            captions = [a["caption"] for a in data["annotations"]]
        except (ValueError, KeyError, TypeError):
            raise BadInput(f"{path}: expected COCO captions JSON with annotations[].caption") from None
        if not all(isinstance(c, str) for c in captions):
            raise BadInput(f"{path}: every annotations[].caption must be a string")
    else:
        captions = text.splitlines()
    prompts = list(dict.fromkeys(c.strip() for c in captions if c.strip()))
    if not prompts:
        raise BadInput(f"prompt file {path} holds no prompts")
    return prompts


def _read_config(directory: Path, component: str) -> dict:
    path = directory / component / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise BadInput(f"pipeline {directory}: cannot read {path}") from None


class TextToImageSuite(Suite):
    """Distil a diffusers text-to-image pipeline (PixArt-alpha first) in its latent space."""

    name = "t2i"
    samples_are_images = False  # VAE latents,
    decodes_to_images = True  # which to_images decodes through the pipeline's VAE (bench generate)
    summary = {
        "teacher": "diffusers pipeline folder (PixArt-alpha/Sigma transformer or Stable Diffusion UNet)",
        "data": "prompts (bench/data/prompts.txt or a file)",
        "shape": "VAE latents of the pipeline",
        "conditioning": "text prompts (cross-attention)",
        "metrics": ", ".join(METRICS),
    }
    defaults = {
        "pipeline": None,  # a diffusers pipeline directory; None: bench weights' "pixart-alpha" (PixArt-XL-2-512x512)
        "prompts": None,  # a COCO captions JSON or one prompt a line; None: bench/data/prompts.txt
        "guidance_scale": 4.5,  # classifier-free guidance of the teacher (1: none)
        "teacher_steps": 30,
        "teacher_sampler": "scheduler",  # the pipeline's own scheduler, or "heun" (EDM, in latent space)
        "resolution": None,  # pixels; None: the denoiser's native sample size
        "max_sequence_length": 120,  # tokens (PixArt-alpha 120, PixArt-Sigma 300)
        "negative_prompt": "",  # the null prompt of guidance
        "clean_caption": False,  # PixArt's caption cleaning (needs beautifulsoup4 and ftfy); False: lower-case
        "dtype": "fp32",  # weights of the frozen parts (teacher, text encoder, VAE); copies train in fp32
        "gradient_checkpointing": False,
        "metrics": list(METRICS),
        "n_eval": 1000,
        "eval_batch": 16,  # micro-batch of teacher sampling, VAE decoding and scoring
    }

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if o["pipeline"] is None:
            from ..weights import find_weight

            self.directory = find_weight(PIPELINE_WEIGHT)
        else:
            self.directory = Path(str(o["pipeline"])).expanduser()
        if not (self.directory / "model_index.json").is_file():
            raise BadInput(f"t2i: no diffusers pipeline at {self.directory} (model_index.json missing); "
                           "put the pipeline's weights there (docs/t2i.md) or --set suite.pipeline=DIR")
        index = json.loads((self.directory / "model_index.json").read_text())
        self.kind = "transformer" if "transformer" in index else "unet" if "unet" in index else None
        if self.kind is None or not {"vae", "text_encoder", "tokenizer", "scheduler"} <= set(index):
            raise BadInput(f"t2i: {self.directory} ({index.get('_class_name')}) is not a text-to-image pipeline "
                           "with a transformer or unet, a VAE, a text encoder, a tokenizer and a scheduler")
        self.prompts = read_prompts(o["prompts"] if o["prompts"] else DEFAULT_PROMPTS)
        validate.number(self.option_name("guidance_scale"), o["guidance_scale"], low=1, strict=False)
        for key in ("teacher_steps", "max_sequence_length", "n_eval", "eval_batch"):
            validate.positive(self.option_name(key), o[key], integer=True)
        validate.choice(self.option_name("teacher_sampler"), o["teacher_sampler"], SAMPLERS)
        validate.choice(self.option_name("dtype"), o["dtype"], tuple(DTYPES))
        metrics = o["metrics"].split(",") if isinstance(o["metrics"], str) else list(o["metrics"])
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise BadInput(f"{self.option_name('metrics')}: unknown metric {unknown[0]!r} (known: {', '.join(METRICS)})")
        self.metrics = metrics
        net_cfg = _read_config(self.directory, self.kind)
        vae_cfg = _read_config(self.directory, "vae")
        self.vae_factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
        multiple = self.vae_factor * int(net_cfg.get("patch_size") or 1)
        resolution = o["resolution"] if o["resolution"] is not None else net_cfg["sample_size"] * self.vae_factor
        if not (isinstance(resolution, int) and resolution > 0 and resolution % multiple == 0):
            raise BadInput(f"t2i: resolution must be a positive multiple of {multiple}, got {resolution!r}")
        self.resolution = resolution
        self.channels = int(net_cfg["in_channels"])
        self._pipe, self._device = None, None
        self._embeddings = None  # prompt -> (embeds [L, D], mask [L] or None), trimmed to valid tokens

    # --- loading -------------------------------------------------------------------------------
    @property
    def latent_shape(self):
        side = self.resolution // self.vae_factor
        return (self.channels, side, side)

    def _pipeline(self, device: torch.device | None = None):
        """The diffusers pipeline, loaded once from local files (fp32, frozen parts in ``dtype``);
        the VAE and text encoder follow ``device`` when one is given."""
        if self._pipe is None:
            try:
                from diffusers import DiffusionPipeline
            except ImportError:
                raise BadInput(f"the t2i suite needs diffusers and transformers: {INSTALL_HINT}") from None
            self._pipe = DiffusionPipeline.from_pretrained(str(self.directory), local_files_only=True,
                                                           torch_dtype=torch.float32)
        device = torch.device(device) if device is not None else (self._device or torch.device("cpu"))
        if device != self._device:
            frozen = DTYPES[self.options["dtype"]]
            for part in (self._pipe.vae, self._pipe.text_encoder):
                if part is not None:
                    part.to(device, frozen).eval().requires_grad_(False)
            self._device = device
        return self._pipe

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings and attention masks of ``prompts`` as the pipeline computes them."""
        pipe = self._pipe
        if hasattr(pipe, "_text_preprocessing"):  # PixArt lower-cases (or cleans) captions first
            prompts = pipe._text_preprocessing(prompts, clean_caption=bool(self.options["clean_caption"]))
        length = self.options["max_sequence_length"] if self.kind == "transformer" else pipe.tokenizer.model_max_length
        tokens = pipe.tokenizer(prompts, padding="max_length", max_length=length, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        mask = tokens.attention_mask.to(self._device)
        with torch.no_grad():
            if self.kind == "transformer":  # T5: masked encoder, masked cross-attention
                embeds = pipe.text_encoder(tokens.input_ids.to(self._device), attention_mask=mask)[0]
                return embeds, mask
            embeds = pipe.text_encoder(tokens.input_ids.to(self._device))[0]  # CLIP: full padded sequence
            return embeds, None

    def _prompt_table(self) -> dict:
        """Every prompt's embedding, computed once (the text encoder is freed afterwards)."""
        if self._embeddings is None:
            self._pipeline()
            table, batch = {}, self.options["eval_batch"]
            for prompt in [self.options["negative_prompt"], *self.prompts]:
                table.setdefault(prompt, None)
            todo = list(table)
            for i in range(0, len(todo), batch):
                embeds, mask = self._encode(todo[i:i + batch])
                for j, prompt in enumerate(todo[i:i + batch]):
                    n = int(mask[j].sum()) if mask is not None else embeds.shape[1]
                    table[prompt] = (embeds[j, :n].cpu(), None if mask is None else mask[j, :n].cpu())
            self._embeddings = table
            self._pipe.text_encoder = None  # T5-XXL is large; every prompt is encoded now
        return self._embeddings

    def encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One prompt's text-encoder output ``[1, L, D]`` and mask ``[1, L]`` (None for CLIP), trimmed to its
        tokens, for prompts outside the prompt set (a NASA negative prompt); the text encoder is reloaded
        from the pipeline folder if it was freed, and freed again."""
        table = self._prompt_table()
        if prompt not in table:
            import transformers

            pipe, reloaded = self._pipe, self._pipe.text_encoder is None
            if reloaded:
                library, cls = json.loads((self.directory / "model_index.json").read_text())["text_encoder"]
                encoder = getattr(transformers, cls).from_pretrained(str(self.directory / "text_encoder"),
                                                                    local_files_only=True)
                pipe.text_encoder = encoder.to(self._device, DTYPES[self.options["dtype"]]).eval().requires_grad_(False)
            try:
                embeds, mask = self._encode([prompt])
            finally:
                if reloaded:
                    pipe.text_encoder = None
            n = int(mask[0].sum()) if mask is not None else embeds.shape[1]
            table[prompt] = (embeds[0, :n].cpu(), None if mask is None else mask[0, :n].cpu())
        embeds, mask = table[prompt]
        return embeds[None], None if mask is None else mask[None]

    def encode_cond(self, prompts: list[str]) -> dict:
        """``cond`` for a list of prompts from the embedding cache (padded to the longest)."""
        table = self._prompt_table()
        missing = [p for p in prompts if p not in table]
        if missing:
            raise BadInput(f"t2i: prompt {missing[0]!r} is not in the suite's prompt set")
        rows = [table[p] for p in prompts]
        length = max(e.shape[0] for e, _ in rows)
        embeds = torch.stack([pad_sequence(e[None], length)[0] for e, _ in rows])
        mask = None if rows[0][1] is None else torch.stack([pad_sequence(m[None], length)[0] for _, m in rows])
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask, "prompts": list(prompts)}

    def sample_cond(self, n, generator):
        """``n`` prompts drawn uniformly from the prompt set, with their cached embeddings."""
        idx = torch.randint(len(self.prompts), (n,), generator=generator)
        return self.encode_cond([self.prompts[i] for i in idx.tolist()])

    def _denoiser(self, net: nn.Module, guidance_scale: float | None) -> VPDenoiser:
        from diffusers import DDPMScheduler

        pipe = self._pipe
        schedule = DDPMScheduler.from_config(pipe.scheduler.config)  # alphas_cumprod of any VP scheduler
        null_e, null_m = self._prompt_table()[self.options["negative_prompt"]]
        d = VPDenoiser(net, self.kind, schedule.alphas_cumprod, pipe.scheduler.config.prediction_type,
                       null_e[None].clone(), None if null_m is None else null_m[None].clone(), guidance_scale,
                       self.vae_factor)
        return d.to(self._device)

    def load_teacher(self, device):
        """The frozen teacher denoiser with classifier-free guidance."""
        pipe = self._pipeline(device)
        net = getattr(pipe, self.kind)
        self._prompt_table()
        net.to(self._device, DTYPES[self.options["dtype"]]).eval().requires_grad_(False)
        w = float(self.options["guidance_scale"])
        return self._denoiser(net, w if w != 1 else None)

    def build(self, sigma_init, device):
        """Teacher (guided, frozen); generator and fake score as fp32 copies of its denoiser."""
        pipe = self._pipeline(device)
        net = getattr(pipe, self.kind)
        copies = []
        for _ in range(2):
            c = copy.deepcopy(net).to(self._device, torch.float32).train().requires_grad_(True)
            if self.options["gradient_checkpointing"]:
                c.enable_gradient_checkpointing()
            copies.append(self._denoiser(c, None))
        teacher = self.load_teacher(device)
        return Parts(teacher=teacher, generator=OneStepGenerator(copies[0], sigma_init), fake=copies[1])

    def discriminator(self, fake):
        """A linear GAN / density-ratio head on the fake denoiser's pooled middle-block features."""
        from ..nets.precond import BottleneckDiscriminator

        return BottleneckDiscriminator(fake, self.latent_shape)

    # --- the teacher's sampler -------------------------------------------------------------------
    def teacher_sample(self, teacher, z, cond=None, steps=None):
        """The guided teacher from ``z ~ N(0, I)``: the pipeline's scheduler or EDM Heun, in latents."""
        steps, out, b = steps or self.options["teacher_steps"], [], self.options["eval_batch"]
        for i in range(0, z.shape[0], b):
            c = slice_cond(cond, i, i + b)
            with torch.no_grad():
                if self.options["teacher_sampler"] == "heun":
                    out.append(heun_sampler(teacher, z[i:i + b], c, steps=steps,
                                            sigma_min=max(0.002, teacher.sigma_min),
                                            sigma_max=min(80.0, teacher.sigma_max)))
                else:
                    out.append(self._scheduler_sample(teacher, z[i:i + b], c, steps))
        return torch.cat(out)

    def _scheduler_sample(self, teacher: VPDenoiser, z, cond, steps):
        scheduler = type(self._pipe.scheduler).from_config(self._pipe.scheduler.config)  # fresh solver state
        scheduler.set_timesteps(steps, device=z.device)
        x = z * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(x, t)
            pred = teacher.vp_output(model_in, t.float().expand(x.shape[0]).to(z.device), cond)
            x = scheduler.step(pred, t, x, return_dict=False)[0]
        return x

    def teacher_info(self, steps=None):
        sampler = self.options["teacher_sampler"]
        if sampler == "scheduler":
            sampler = (read_json_or_none(self.directory / "scheduler" / "scheduler_config.json") or {}).get("_class_name", sampler)
        return {"sampler": sampler, "steps": steps or self.options["teacher_steps"],
                "guidance_scale": self.options["guidance_scale"]}

    # --- evaluation ------------------------------------------------------------------------------
    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (the denoisers' scaled space) to images in [-1, 1] through the VAE (evaluation, sample grids)."""
        vae = self._pipeline().vae
        dtype = next(vae.parameters()).dtype
        out = []
        for i in range(0, latents.shape[0], self.options["eval_batch"]):
            x = latents[i:i + self.options["eval_batch"]].to(self._device, dtype) / vae.config.scaling_factor
            with torch.no_grad():
                out.append(vae.decode(x, return_dict=False)[0].float().clamp(-1, 1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def teacher_reference(self, device, n: int) -> torch.Tensor:
        """``n`` uint8 images of the guided teacher's own sampler, prompts and latents of their own seed."""
        from ..metrics.images import to_uint8

        teacher = self.load_teacher(device)
        gen = torch.Generator().manual_seed(TEACHER_REFERENCE_SEED)
        cond = self.sample_cond(n, gen)
        z = torch.randn(n, *self.latent_shape, generator=gen)
        latents = self.teacher_sample(teacher, z.to(self._device), to_device(cond, self._device))
        return to_uint8(self.to_images(latents.float()))

    def evaluator(self, device):
        self._pipeline(device)
        return TextToImageEvaluator(self, device)


class TextToImageEvaluator(Evaluator):
    """Decodes latents through the VAE and scores the images against their prompts.

    Per-image metrics (aesthetic, ImageReward, raw PickScore, CLIP score) come from
    ``bench.metrics.t2i``: any object with ``score(images_uint8, prompts) -> one value per image``
    and an ``impl`` string; each measurement is the mean over the evaluated samples.

    CMMD needs a reference image set and the suite has none, so (like FD-to-teacher elsewhere) it is
    measured against ``n_eval`` samples of the guided teacher's own sampler (``teacher_reference``,
    drawn and embedded once per evaluator) in the CLIP scorer's embedding (``embed_images``).
    """

    def __init__(self, suite: TextToImageSuite, device: torch.device, scorers: dict | None = None,
                 embedder=None, reference=None):
        """``scorers``/``embedder`` given (tests): only those are used; None loads what ``suite.metrics``
        names. ``reference``: CMMD's uint8 reference images (or a callable); None: the teacher's."""
        self.suite, self.device = suite, device
        self.n_samples = suite.options["n_eval"]
        if scorers is None:
            scorers = load_scorers([m for m in suite.metrics if m != "cmmd"], device)
            if "cmmd" in suite.metrics:
                embedder = scorers.get("clip_score") or load_scorers(["clip_score"], device)["clip_score"]
        self.scorers, self.embedder = scorers, embedder
        self._reference, self._reference_emb = reference, None

    def reference_embeddings(self) -> torch.Tensor:
        """CMMD's reference embeddings, computed on first use."""
        if self._reference_emb is None:
            ref = self._reference
            if ref is None:
                ref = self.suite.teacher_reference(self.device, self.n_samples)
            elif callable(ref):
                ref = ref()
            self._reference_emb = self.embedder.embed_images(ref)
        return self._reference_emb

    def evaluate(self, samples, cond=None):
        from ..metrics.images import to_uint8

        if cond is None:
            raise BadInput("t2i evaluation needs the prompts of the samples (cond)")
        images = to_uint8(self.suite.to_images(samples))
        prompts = cond["prompts"]
        out = []
        for name, scorer in self.scorers.items():
            scores = torch.as_tensor(scorer.score(images, prompts), dtype=torch.float64)
            out.append(Measurement(name, float(scores.mean()), len(images), getattr(scorer, "impl", name)))
        if self.embedder is not None:
            from ..metrics.cmmd import cmmd

            value = cmmd(self.embedder.embed_images(images), self.reference_embeddings())
            out.append(Measurement("cmmd", value, len(images), f"{self.embedder.impl}+cmmd-rbf-sigma10"))
        return out


def load_scorers(names: list[str], device: torch.device) -> dict:
    """The text-to-image metrics of ``bench.metrics.t2i``, each loaded from its local weight files
    (found through ``bench weights``; a missing file stops with a message naming it)."""
    from ..metrics import t2i as t2i_metrics

    return {name: t2i_metrics.load(name, device=device) for name in names}
