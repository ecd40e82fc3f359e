"""Train one (suite, method, hyperparameters, seed) to a budget in kimg; evaluate; checkpoint.

One training step serves every method: the method's recipe says how many fake-score updates go
with each generator update, whether they reuse the generator's samples, and what else the losses
need (teacher ODE pairs, real data, a discriminator). Time is counted in kimg: thousands of
images the generator is updated on.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import methods

from . import distributed as dist_utils
from . import runconfig, suites
from .config import parse_sets, pick_device
from .errors import BadInput
from .rundir import JsonlLog, read_json, read_jsonl, save_torch_atomic, write_json_atomic

EVAL_SEED_OFFSET = 1_000_003  # the latent bank of seed s is drawn from s + this, apart from training noise


class Diverged(Exception):
    """A non-finite loss, gradient, parameter or sample; the run stops with status ``diverged``."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance(device: torch.device, world_size: int) -> dict:
    """Git hash, package versions and hardware for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("distill-bench", "torch-fidelity", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        git = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device.type == "cuda" else []
    hardware = {"device": device.type, "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpus": gpus,
                "world_size": world_size}
    return {"git_hash": git, "versions": versions, "hardware": hardware}


class Run:
    """Everything one training run holds: networks, optimisers, EMA, progress and its files."""

    def __init__(self, config: dict, device: torch.device, quiet: bool = False):
        self.config, self.device, self.quiet = config, device, quiet
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.suite = suites.create(config["suite"], **config["suite_options"])
        self.method = methods.create(config["method"], **config["hparams"])
        self.recipe = self.method.training_recipe
        self.train_opts = config["train"]
        torch.manual_seed(config["seed"])  # identical initial networks on every process
        self.parts = self.suite.build(self.train_opts["sigma_init"], device)
        self.parts.teacher.eval().requires_grad_(False)
        self.generator, self.fake = self.parts.generator, self.parts.fake
        if self.recipe.needs_real_data and self.parts.discriminator is None:
            self.parts.discriminator = bottleneck_discriminator(self.fake, self.suite).to(device)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.opt_g = self._optimizer(self.generator.parameters(), config["lr_g"])
        fake_params = list(self.fake.parameters())
        if self.parts.discriminator is not None:
            fake_params += [p for p in self.parts.discriminator.parameters() if all(p is not q for q in fake_params)]
        self.fake_params = fake_params
        self.opt_f = self._optimizer(fake_params, config["lr_fake"])
        self.step, self.nimg, self.next_eval, self.next_ckpt, self.next_tick = 0, 0, 0.0, config["checkpoint_every"], 0.0
        self.wall_time_before = 0.0  # seconds spent in earlier sessions of this run (resumes)
        self.session_start = time.time()
        self.pairs = None
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if device.type == "cuda" and config["precision"] == "bf16" else contextlib.nullcontext())
        if device.type == "cuda":
            tf32 = config["precision"] == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            if self.train_opts.get("channels_last"):  # faster convolutions with tensor cores
                for net in (self.parts.teacher, self.generator, self.fake, self.ema):
                    net.to(memory_format=torch.channels_last)
        _seed_everything(config["seed"] * 7919 + self.rank)  # training noise differs across processes
        self.dir = self.stats = self.metrics = None

    def attach(self, directory: Path) -> None:
        """Write into ``directory`` from now on (rank 0 keeps the logs)."""
        self.dir = Path(directory)
        if self.rank == 0:
            self.stats, self.metrics = JsonlLog(self.dir / "stats.jsonl"), JsonlLog(self.dir / "metrics.jsonl")

    @property
    def kimg(self) -> float:
        return self.nimg / 1000

    @property
    def wall_time(self) -> float:
        """Seconds of training, evaluation and checkpointing so far, over every session."""
        return self.wall_time_before + time.time() - self.session_start

    def _optimizer(self, params, lr):
        opt = self.config["optimizer"]
        cls = torch.optim.AdamW if opt["name"] == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, betas=tuple(opt["betas"]), eps=opt["eps"], weight_decay=opt["weight_decay"])

    # --- sampling ----------------------------------------------------------------------------
    def _latents(self, n, generator=None):
        z = torch.randn(n, *self.suite.latent_shape, generator=generator, device="cpu")
        return z.to(self.device), to_device(self.suite.sample_cond(n, generator), self.device)

    # --- one training step ---------------------------------------------------------------------
    def _update(self, opt, params, loss_fn, micro_batches, grad_clip):
        """Accumulate ``loss_fn(i)`` over micro-batches, average across processes, clip, step."""
        opt.zero_grad(set_to_none=True)
        total, logs = 0.0, {}
        for i in range(micro_batches):
            with self.autocast:
                loss, logs = loss_fn(i)
            if not torch.isfinite(loss):
                raise Diverged(f"non-finite loss {loss.item()}")
            (loss / micro_batches).backward()
            total += loss.item() / micro_batches
        params = [p for p in params if p.grad is not None]
        dist_utils.average_gradients(params)
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else math.inf)
        if not torch.isfinite(norm):
            raise Diverged(f"non-finite gradient norm {norm.item()}")
        opt.step()
        return total, norm.item(), logs

    def _warmup_lr(self):
        warm = self.train_opts["warmup_kimg"] or 0.0
        factor = min(1.0, (self.kimg + 1e-12) / warm) if warm > 0 else 1.0
        for opt, lr in ((self.opt_g, self.config["lr_g"]), (self.opt_f, self.config["lr_fake"])):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    def train_step(self) -> dict:
        """One generator update and its fake-score updates, in the method's ratio and order."""
        rounds = self.config["batch"] // (self.config["batch_gpu"] * self.world)
        b = self.config["batch_gpu"]
        grad_clip = self.train_opts["grad_clip"]
        disc = self.parts.discriminator
        reused = []  # DMD2: the generator's samples feed the first fake update of the step
        self._warmup_lr()

        def generator_loss(i):
            z, cond = self._latents(b)
            x_g = self.generator(z, cond)
            if not self.recipe.fresh_latents_per_phase:
                reused.append((x_g.detach(), cond))
            extra = {}
            if self.recipe.needs_teacher_pairs:
                idx = torch.randint(0, self.pairs[0].shape[0], (b,))
                z_ref, x_ref = self.pairs[0][idx].to(self.device), self.pairs[1][idx].to(self.device)
                extra["pairs"] = (self.generator(z_ref, None), x_ref)
            if disc is not None:
                extra["discriminator"] = disc
            return self.method.generator_loss(x_g, self.parts.teacher, self.fake, cond=cond, **extra)

        def fake_loss(i):
            if reused:
                x_g, cond = reused.pop(0)
            else:
                z, cond = self._latents(b)
                with torch.no_grad():
                    x_g = self.generator(z, cond)
            extra = {}
            if self.recipe.needs_real_data:
                real, real_cond = self.suite.real_data(b, None)
                extra.update(real=real.to(self.device), real_cond=to_device(real_cond, self.device),
                             discriminator=disc)
            return self.method.fake_score_loss(x_g, self.fake, cond=cond, **extra)

        def generator_phase():
            self.fake.requires_grad_(False)
            if disc is not None:
                disc.requires_grad_(False)
            try:
                return self._update(self.opt_g, self.generator.parameters(), generator_loss, rounds, grad_clip)
            finally:
                self.fake.requires_grad_(True)
                if disc is not None:
                    disc.requires_grad_(True)

        def fake_phase():
            out = None
            for _ in range(self.recipe.fake_updates_per_generator_update):
                out = self._update(self.opt_f, self.fake_params, fake_loss, rounds, grad_clip)
            return out

        if self.recipe.fresh_latents_per_phase:  # SiD's order: fake score first, then generator
            loss_f, norm_f, logs_f = fake_phase()
            loss_g, norm_g, logs_g = generator_phase()
        else:  # DMD2's order: generator on fresh samples, then fake updates starting on the same ones
            loss_g, norm_g, logs_g = generator_phase()
            loss_f, norm_f, logs_f = fake_phase()
        self._update_ema()
        self.step += 1
        self.nimg += self.config["batch"]
        row = {"loss_g": loss_g, "loss_fake": loss_f, "grad_norm_g": norm_g, "grad_norm_fake": norm_f}
        for k, v in {**logs_f, **logs_g}.items():
            row.setdefault(k, float(v))
        return row

    def _update_ema(self):
        halflife = self.train_opts["ema_halflife_kimg"]
        if halflife is None:
            self.ema.load_state_dict(self.generator.state_dict())
            return
        nimg = self.nimg + self.config["batch"]
        halflife_img = halflife * 1000
        if self.train_opts["ema_rampup"]:
            halflife_img = min(halflife_img, nimg * self.train_opts["ema_rampup"])
        beta = 0.5 ** (self.config["batch"] / max(halflife_img, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.generator.parameters()):
                p_ema.lerp_(p.detach(), 1 - beta)
            for b_ema, b in zip(self.ema.buffers(), self.generator.buffers()):
                b_ema.copy_(b)

    def check_finite(self):
        for name, net in (("generator", self.generator), ("fake score", self.fake)):
            for p in net.parameters():
                if not torch.isfinite(p).all():
                    raise Diverged(f"non-finite {name} parameter")

    # --- evaluation ----------------------------------------------------------------------------
    def latent_bank(self, n):
        return latent_bank(self.suite, self.config["seed"], n)

    @torch.no_grad()
    def generate(self, net, z, cond):
        out, batch = [], self.train_opts.get("eval_batch", 256)
        for i in range(0, z.shape[0], batch):
            c = to_device(_slice(cond, i, i + batch), self.device)
            out.append(net(z[i:i + batch].to(self.device), c).float().cpu())
        return torch.cat(out)

    def evaluate(self):
        """Evaluate the EMA generator (and the raw one if asked) on the latent bank; log and grid."""
        evaluator = self._evaluator()
        z, cond = self.latent_bank(self.train_opts["n_eval"] or evaluator.n_samples)
        nets = [(True, self.ema)] + ([(False, self.generator)] if self.train_opts["eval_raw"] else [])
        for ema, net in nets:
            t0 = time.time()
            samples = self.generate(net, z, cond)
            if not torch.isfinite(samples).all():
                raise Diverged("non-finite generator sample")
            for m in evaluator.evaluate(samples, cond):
                self.metrics.append({"kimg": round(self.kimg, 6), "metric": m.metric, "value": m.value,
                                     "n_samples": m.n_samples, "ema": ema, "impl": m.impl,
                                     "time_s": time.time() - t0})
            if ema:
                save_samples(self.suite.to_images(samples[:64]), self.dir / "samples" / f"kimg{self.kimg:010.3f}.png")
        record_metric_impls(self.dir)

    def _evaluator(self):
        if not hasattr(self, "_eval"):
            self._eval = self.suite.evaluator(self.device)
        return self._eval

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(), "fake": self.fake.state_dict(), "ema": self.ema.state_dict(),
            "discriminator": self.parts.discriminator.state_dict() if self.parts.discriminator is not None else None,
            "opt_g": self.opt_g.state_dict(), "opt_f": self.opt_f.state_dict(),
            "progress": {"step": self.step, "nimg": self.nimg, "next_eval": self.next_eval,
                         "next_ckpt": self.next_ckpt, "next_tick": self.next_tick, "wall_time": self.wall_time},
            "rng": dist_utils.gather_objects(_rng_state()),
            "pairs": self.pairs,
            "log_sizes": {"stats": self.stats.size(), "metrics": self.metrics.size()} if self.rank == 0 else None,
        }

    def save(self):
        state = self.state_dict()  # every rank joins the RNG gather
        if self.rank == 0:
            save_torch_atomic(self.dir / "state.pt", state)

    def load(self, path: Path):
        state = torch.load(path, map_location=self.device, weights_only=False)  # our own file
        self.generator.load_state_dict(state["generator"])
        self.fake.load_state_dict(state["fake"])
        self.ema.load_state_dict(state["ema"])
        if state["discriminator"] is not None:
            self.parts.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_f.load_state_dict(state["opt_f"])
        p = state["progress"]
        self.step, self.nimg, self.next_eval = p["step"], p["nimg"], p["next_eval"]
        self.next_ckpt, self.next_tick, self.wall_time_before = p["next_ckpt"], p["next_tick"], p["wall_time"]
        self.pairs = state["pairs"]
        _set_rng_state(state["rng"][self.rank])
        if self.rank == 0:  # drop rows logged after this checkpoint: they will be logged again
            self.stats.truncate(state["log_sizes"]["stats"])
            self.metrics.truncate(state["log_sizes"]["metrics"])

    # --- the loop ------------------------------------------------------------------------------
    def prepare_pairs(self):
        """DMD's regression targets: the teacher's ODE output for a fixed bank of latents."""
        n = self.train_opts["n_regression_pairs"]
        gen = torch.Generator().manual_seed(self.config["seed"] + 2 * EVAL_SEED_OFFSET)
        z = torch.randn(n, *self.suite.latent_shape, generator=gen)
        with torch.no_grad():
            x = torch.cat([self.suite.teacher_sample(self.parts.teacher, z[i:i + 256].to(self.device), None).cpu()
                           for i in range(0, n, 256)])
        self.pairs = (z, x)

    def train(self, stop_flag) -> str:
        cfg = self.config
        self.session_start = time.time()
        tick_kimg = self.train_opts["tick_kimg"] or max(cfg["batch"] / 1000, cfg["kimg"] / 50)
        if self.recipe.needs_teacher_pairs and self.pairs is None:
            self.prepare_pairs()
        bar = None
        if self.rank == 0 and not self.quiet:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg["kimg"], initial=round(self.kimg, 3), unit="kimg", dynamic_ncols=True,
                       desc=f"{cfg['method']} lr={cfg['lr_g']:g}", file=sys.stderr)
        tick_start, tick_kimg0 = time.time(), self.kimg
        reset_peak_memory(self.device)
        while True:
            done = self.kimg >= cfg["kimg"] - 1e-9
            if self.rank == 0 and (self.kimg >= self.next_eval - 1e-9 or done):
                self.evaluate()
                self.next_eval = (math.floor(self.kimg / cfg["eval_every"] + 1e-9) + 1) * cfg["eval_every"]
            dist_utils.barrier()
            if done:
                break
            if self.kimg >= self.next_ckpt - 1e-9:
                self.save()
                self.next_ckpt = (math.floor(self.kimg / cfg["checkpoint_every"] + 1e-9) + 1) * cfg["checkpoint_every"]
            if stop_flag():
                self.save()
                return "interrupted"
            row = self.train_step()
            self.check_finite()
            if bar is not None:
                bar.n = min(self.kimg, cfg["kimg"])  # exact kimg, not a sum of float increments
                bar.set_postfix(loss_g=f"{row['loss_g']:.3g}", loss_fake=f"{row['loss_fake']:.3g}")
            if self.rank == 0 and self.kimg >= self.next_tick - 1e-9:
                elapsed = time.time() - tick_start
                self.stats.append({"kimg": round(self.kimg, 6), "step": self.step, "time_s": self.wall_time,
                                   **row, "images_per_s": (self.kimg - tick_kimg0) * 1000 / max(elapsed, 1e-9),
                                   "peak_mem_mb": peak_memory_mb(self.device)})
                tick_start, tick_kimg0 = time.time(), self.kimg
                reset_peak_memory(self.device)
                self.next_tick = (math.floor(self.kimg / tick_kimg + 1e-9) + 1) * tick_kimg
        if bar is not None:
            bar.close()
        self.save()
        return "done"


def bottleneck_discriminator(fake, suite):
    """DMD2's GAN head on the fake network's bottleneck; BadInput when the network has none."""
    from .nets.precond import BottleneckDiscriminator

    if not hasattr(getattr(fake, "model", None), "features"):
        raise BadInput(f"suite {suite.name}: the fake network exposes no bottleneck features for a GAN head")
    return BottleneckDiscriminator(fake, suite.latent_shape)


def latent_bank(suite, seed: int, n: int):
    """The fixed evaluation latents (and conditioning) of a seed: the same for every method."""
    gen = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    z = torch.randn(n, *suite.latent_shape, generator=gen)
    return z, suite.sample_cond(n, gen)


def to_device(cond, device):
    """Conditioning (a tensor, a dict of tensors, or None) on ``device``."""
    if isinstance(cond, torch.Tensor):
        return cond.to(device)
    if isinstance(cond, dict):
        return {k: to_device(v, device) for k, v in cond.items()}
    return cond


def _slice(cond, i, j):
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return cond[i:j]
    if isinstance(cond, dict):
        return {k: _slice(v, i, j) for k, v in cond.items()}
    return cond[i:j]


def reset_peak_memory(device) -> None:
    """Start a new peak-memory window (CUDA allocator; on Linux CPUs the process's peak RSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM


def peak_memory_mb(device) -> float:
    """Peak memory since the last reset: CUDA allocated bytes, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def record_metric_impls(directory: Path) -> None:
    """Copy each metric's implementation string from metrics.jsonl into the manifest."""
    manifest = read_json(directory / "manifest.json")
    impls = {row["metric"]: row.get("impl", "") for row in read_jsonl(directory / "metrics.jsonl")}
    if impls != manifest.get("metrics"):
        manifest["metrics"] = impls
        write_json_atomic(directory / "manifest.json", manifest)


def save_samples(samples: torch.Tensor, path: Path, n: int = 64) -> None:
    """A PNG grid of the first ``n`` samples (image suites only)."""
    if samples.ndim != 4:
        return
    from .metrics.images import save_grid, to_uint8

    path.parent.mkdir(exist_ok=True)
    save_grid(to_uint8(samples[:n]), path)


# --- the teacher's baseline row -------------------------------------------------------------------
class TeacherRun:
    """The teacher's own multi-step sampler on the seed's latent bank, logged at kimg 0."""

    kimg, step = 0.0, 0

    def __init__(self, config: dict, device: torch.device):
        self.config, self.device = config, device
        self.suite = suites.create(config["suite"], **config["suite_options"])
        self.teacher = self.suite.load_teacher(device).eval().requires_grad_(False)
        self.evaluator = self.suite.evaluator(device)
        self.started = time.time()

    @property
    def wall_time(self) -> float:
        return time.time() - self.started

    def attach(self, directory: Path) -> None:
        self.dir = Path(directory)

    def train(self, stop_flag) -> str:
        if dist_utils.rank() != 0:
            return "done"
        z, cond = latent_bank(self.suite, self.config["seed"], self.evaluator.n_samples)
        t0 = time.time()
        with torch.no_grad():
            samples = torch.cat([
                self.suite.teacher_sample(self.teacher, z[i:i + 256].to(self.device),
                                          to_device(_slice(cond, i, i + 256), self.device)).cpu()
                for i in range(0, z.shape[0], 256)])
        log = JsonlLog(self.dir / "metrics.jsonl")
        log.truncate(0)  # a teacher row is evaluated in one go: an interrupted attempt starts over
        for m in self.evaluator.evaluate(samples, cond):
            log.append({"kimg": 0.0, "metric": m.metric, "value": m.value, "n_samples": m.n_samples,
                        "ema": False, "impl": m.impl, "time_s": time.time() - t0})
        save_samples(self.suite.to_images(samples[:64]), self.dir / "samples" / f"kimg{0:010.3f}.png")
        record_metric_impls(self.dir)
        return "done"


# --- entry points -------------------------------------------------------------------------------
def execute(config: dict, results: str | Path, device: torch.device, quiet: bool = False) -> tuple[Path, str]:
    """Run (or resume, or skip) one resolved config; returns its directory and final status."""
    directory = runconfig.run_dir(results, config)
    rank = dist_utils.rank()
    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        status = read_json(manifest_path)["status"]
        if status in ("done", "diverged"):
            return directory, status
    # Build everything before touching the disk: bad input leaves nothing behind.
    job = TeacherRun(config, device) if config["method"] == runconfig.TEACHER else Run(config, device, quiet)
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / "config.json", config)
        manifest = read_json(manifest_path) if manifest_path.exists() else {}
        manifest.update(run_id=config["run_id"], status="running", started=manifest.get("started", _now()),
                        ended=None, diverged=None, **provenance(device, dist_utils.world_size()))
        manifest.setdefault("metrics", {})
        write_json_atomic(manifest_path, manifest)
    dist_utils.barrier()
    job.attach(directory)

    stop = {"signal": None}
    handlers = {}

    def request_stop(signum, frame):
        stop["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not in the main thread
            handlers[sig] = signal.signal(sig, request_stop)
    status, diverged = "failed", None
    try:
        if (directory / "state.pt").exists():
            job.load(directory / "state.pt")
        status = job.train(lambda: stop["signal"] is not None)
    except Diverged as exc:
        status = "diverged"
        diverged = {"kimg": round(job.kimg, 6), "step": job.step + 1, "reason": str(exc)}
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if rank == 0:
            manifest = read_json(manifest_path)
            interrupted = status == "interrupted"
            manifest.update(status="running" if interrupted else status, ended=None if interrupted else _now(),
                            diverged=diverged, kimg_done=round(job.kimg, 6), wall_time_s=job.wall_time)
            write_json_atomic(manifest_path, manifest)
    if status == "interrupted":
        status = f"interrupted by signal {stop['signal']}"
    return directory, status


def cli_run(args) -> int:
    """``bench run``: resolve, validate, train or resume; print the run directory last."""
    dist_utils.init_from_env()
    device = dist_utils.local_device(pick_device(args.device))
    config = runconfig.resolve(args.suite, args.method, lr=args.lr, lr_fake=args.lr_fake, batch=args.batch,
                               batch_gpu=args.batch_gpu, seed=args.seed, kimg=args.kimg,
                               eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                               sets=parse_sets(args.set), precision=args.precision,
                               world_size=dist_utils.world_size())
    config["device"] = device.type
    directory, status = execute(config, args.results, device, quiet=args.quiet)
    if dist_utils.rank() == 0:
        print(directory)
    dist_utils.shutdown()
    if status.startswith("interrupted"):
        return 128 + int(status.rsplit(" ", 1)[1])  # the shell's convention for a signalled exit
    return 0


def cli_eval(args) -> int:
    """``bench eval RUN_DIR``: evaluate a run's latest EMA generator with ``--n`` samples."""
    directory = Path(args.run_dir)
    if not (directory / "config.json").exists():
        raise BadInput(f"{directory} is not a run directory (no config.json)")
    if not (directory / "state.pt").exists():
        raise BadInput(f"{directory} has no state.pt to evaluate")
    if args.n is not None and args.n < 1:
        raise BadInput(f"--n must be positive, got {args.n}")
    config = read_json(directory / "config.json")
    device = pick_device(args.device)
    if config["method"] == runconfig.TEACHER:
        raise BadInput("a teacher run is evaluated when it runs; nothing to re-evaluate")
    run = Run(config, device, quiet=True)
    run.attach(directory)
    run.load(directory / "state.pt")
    if args.n is not None:
        run.train_opts = {**run.train_opts, "n_eval": args.n}
    before = len(read_jsonl(run.metrics.path))
    run.evaluate()
    for row in read_jsonl(run.metrics.path)[before:]:
        print(f"{row['metric']}\t{row['value']:.6g}\tn={row['n_samples']}\tkimg={row['kimg']:g}")
    print(directory)
    return 0
