"""The ``bench`` command line. Each subcommand parses here and runs in the module that owns it.

Exit status: 0 success (a diverged run counts: its status is in manifest.json), 1 an unexpected
failure, 2 bad input (one line on stderr naming the problem).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import warnings

from .errors import BadInput, BenchWarning
from .suites import SUITES



class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message):
        raise BadInput(message)


def _handler(path: str):
    """Import ``module:function`` lazily so light commands never import torch's heavy users."""
    module, func = path.split(":")
    return lambda args: getattr(importlib.import_module(module), func)(args)


_output_check = _handler("bench.rundir:check_output_arg")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="Benchmark one-step diffusion distillation methods.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="train one (suite, method, hyperparameters, seed) to a budget")
    r.add_argument("--suite", required=True, help=f"one of: {', '.join(SUITES.names())} (bench suites)")
    r.add_argument("--method", required=True, help="a registered method (bench methods lists them)")
    r.add_argument("--lr", type=float, default=None, help="learning rate of generator and fake score")
    r.add_argument("--lr-fake", type=float, default=None, help="fake-score learning rate (default: --lr times the method's published ratio, 1 but for TDM)")
    r.add_argument("--batch", type=int, default=None, help="global batch size")
    r.add_argument("--batch-gpu", type=int, default=None, help="per-device micro-batch (gradient accumulation)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--kimg", type=float, default=None, help="training budget in thousands of generator images")
    r.add_argument("--gflop", type=float, default=None,
                   help="training budget in GFLOP instead of --kimg (measured network FLOPs, one-off costs included)")
    r.add_argument("--steps", type=int, default=None,
                   help="generator sampling steps (default 1: one-step); for --method teacher, its sampler's steps")
    r.add_argument("--eval-every", type=float, default=None, help="evaluate every this many kimg")
    r.add_argument("--checkpoint-every", type=float, default=None, help="checkpoint every this many kimg")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method hyperparameter, or suite.KEY / optim.KEY / train.KEY")
    r.add_argument("--results", default="results")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--precision", default=None, choices=["fp32", "bf16", "tf32"])
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--wait", action="store_true", help="wait while another process holds the run directory")
    r.add_argument("--logger", action="append", default=[], metavar="NAME",
                   help="also mirror stats, metrics and sample grids to tensorboard or wandb (offline); repeatable")
    r.set_defaults(func=_handler("bench.train.runner:cli_run"), check=_handler("bench.train.runconfig:check_run_args"))

    s = sub.add_parser("sweep", help="run a grid of configurations from a YAML file")
    s.add_argument("config")
    s.add_argument("--launcher", default="local", choices=["local", "slurm"])
    s.add_argument("--local-test", action="store_true",
                   help="with --launcher slurm: run the submitit jobs as local processes (no Slurm needed)")
    s.add_argument("--jobs", type=int, default=1)
    s.add_argument("--quick", action="store_true", help="the config's quick variant")
    s.add_argument("--results", default=None)
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    s.set_defaults(func=_handler("bench.train.launch:cli_sweep"))

    t = sub.add_parser("teacher", help="teacher networks")
    tsub = t.add_subparsers(dest="teacher_command", required=True, parser_class=_Parser)
    tt = tsub.add_parser("train", help="train (or load from cache) a suite's teacher")
    tt.add_argument("--suite", required=True)
    tt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tt.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    tt.set_defaults(func=_handler("bench.suites.cli:cli_teacher_train"))

    e = sub.add_parser("eval", help="evaluate a run's latest generator, or a generator file (--generator)")
    e.add_argument("run_dir", nargs="?", default=None, help="a finished run directory")
    e.add_argument("--generator", default=None, metavar="FILE",
                   help="instead: a one-step generator file (SiD/EDM .pkl, DMD2 .bin, bench export .safetensors)")
    e.add_argument("--suite", default=None, help="with --generator: the suite that scores it")
    e.add_argument("--sigma-init", type=float, default=None,
                   help="with --generator: its noise level (default: the file's; DMD2 80)")
    e.add_argument("--seed", type=int, default=0, help="with --generator: the latent bank's seed")
    e.add_argument("--set", action="append", default=[], metavar="suite.KEY=VALUE",
                   help="with --generator: a suite option (suite.teacher, suite.reference, ...)")
    e.add_argument("--results", default="results", help="with --generator: where its run directory goes")
    e.add_argument("--n", type=int, default=None, help="number of samples")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--wait", action="store_true", help="wait while another process holds the run directory")
    e.set_defaults(func=_handler("bench.train.runner:cli_eval"), check=_handler("bench.train.runconfig:check_eval_args"))

    g = sub.add_parser("generate", help="write a run's EMA generator samples (one seed per image) as PNGs or an .npz")
    g.add_argument("run_dir", help="a finished run directory, or a file written by bench export")
    g.add_argument("-o", "--output", required=True, help="OUT.npz (ADM layout: arr_0 uint8 NHWC) or a new folder of PNGs")
    g.add_argument("--n", type=int, default=1000, help="number of images (seeds seed-start .. seed-start+n-1)")
    g.add_argument("--seed-start", type=int, default=0)
    g.add_argument("--batch", type=int, default=256)
    g.add_argument("--kimg", type=float, default=None,
                   help="the EMA generator at this kimg: a checkpoint, or a snapshot of train.snapshots (default: latest)")
    g.add_argument("--negative-prompt", default=None,
                   help="t2i: steer away from this prompt with NASA (SNOOPI's negative-away steer attention)")
    g.add_argument("--nasa-scale", type=float, default=0.5,
                   help="NASA's alpha: Z+ - alpha Z- in every cross-attention layer (default 0.5, PixArt's)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_handler("bench.train.generate:cli_generate"), check=_handler("bench.train.generate:check_generate_args"))

    x = sub.add_parser("export", help="write a run's EMA generator as weights plus the config that rebuilds it")
    x.add_argument("run_dir")
    x.add_argument("--format", default="safetensors", choices=["safetensors", "edm-pickle", "diffusers"],
                   help="safetensors (bench generate reads it), edm-pickle (SiD's snapshot layout, EDM suites) "
                        "or diffusers (a model folder, t2i)")
    x.add_argument("-o", "--output", required=True, help="OUT.safetensors, OUT.pkl, or a new FOLDER for diffusers")
    x.set_defaults(func=_handler("bench.train.export:cli_export"), check=_handler("bench.train.export:check_export_args"))

    f = sub.add_parser("fid", help="FID, IS, KID and precision/recall between two image sets")
    f.add_argument("images_a")
    f.add_argument("images_b")
    f.add_argument("--extractor", default="inception")
    f.add_argument("--json", action="store_true")
    f.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    f.set_defaults(func=_handler("bench.metrics.cli:cli_fid"))

    res = sub.add_parser("results", help="collect run directories into one table")
    res.add_argument("results_dir")
    res.add_argument("-o", "--output", default=None, help="table.parquet or table.csv (default: print)")
    res.set_defaults(func=_handler("bench.analysis.table:cli_results"), check=_output_check)

    lb = sub.add_parser("leaderboard", help="per-method leaderboard with the teacher's row")
    lb.add_argument("results_dir")
    lb.add_argument("--metric", default=None, help="default: each suite's headline metric (fid, frechet, ...)")
    lb.add_argument("--at", default=None, choices=["kimg", "gflop", "wall"],
                    help="compare at the largest budget on this axis that every method reached (default: final)")
    lb.add_argument("--format", default="md", choices=["md", "csv"])
    lb.add_argument("--per-nfe", action="store_true",
                    help="one row per method and number of network evaluations per sample (few-step generators)")
    lb.set_defaults(func=_handler("bench.analysis.leaderboard:cli_leaderboard"))

    rob = sub.add_parser("robustness", help="robustness measures with bootstrap intervals, and the verdict")
    rob.add_argument("results_dir")
    rob.add_argument("--metric", default=None, help="default: each suite's headline metric (fid, frechet, ...)")
    rob.add_argument("--factor", type=float, default=2.0, help="tolerance: within this factor of the best")
    rob.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of the seeds")
    rob.add_argument("--pairwise", action="store_true", help="also print every pairwise difference")
    rob.add_argument("--upto-gflop", type=float, default=None,
                     help="read every run only up to this training compute (its evaluations at or before it)")
    rob.add_argument("--flatness", action="store_true", help="only the flatness table: was the budget long enough?")
    rob.set_defaults(func=_handler("bench.analysis.verdict:cli_robustness"))

    pl = sub.add_parser("plot", help="figures")
    plsub = pl.add_subparsers(dest="plot_command", required=True, parser_class=_Parser)
    rb = plsub.add_parser("robustness", help="metric against kimg, one panel per learning rate")
    rb.add_argument("results_dir")
    rb.add_argument("-o", "--output", required=True, help="figure.png or figure.svg")
    rb.add_argument("--metric", default=None, help="default: each suite's headline metric (fid, frechet, ...)")
    rb.add_argument("--x", default="kimg", choices=["kimg", "gflop", "wall"], help="the curves' x axis")
    rb.add_argument("--by-batch", action="store_true",
                    help="a row of panels per batch size (default: each method's best batch size)")
    rb.set_defaults(func=_handler("bench.analysis.plots:cli_plot_robustness"), check=_output_check)

    cp = plsub.add_parser("compute", help="final metric against total training GFLOP, one point per run")
    cp.add_argument("results_dir")
    cp.add_argument("-o", "--output", required=True, help="figure.png or figure.svg")
    cp.add_argument("--metric", default=None, help="default: each suite's headline metric (fid, frechet, ...)")
    cp.set_defaults(func=_handler("bench.analysis.plots:cli_plot_compute"), check=_output_check)

    nf = plsub.add_parser("nfe", help="final metric against network evaluations per sample (few-step generators)")
    nf.add_argument("results_dir")
    nf.add_argument("-o", "--output", required=True, help="figure.png or figure.svg")
    nf.add_argument("--metric", default=None, help="default: each suite's headline metric (fid, frechet, ...)")
    nf.set_defaults(func=_handler("bench.analysis.plots:cli_plot_nfe"), check=_output_check)

    rep = sub.add_parser("report", help="a self-contained HTML report")
    rep.add_argument("results_dir")
    rep.add_argument("-o", "--output", required=True)
    rep.set_defaults(func=_handler("bench.analysis.report:cli_report"), check=_output_check)

    ms = sub.add_parser("methods", help="the registered methods: paper, divergence, defaults, recipe")
    ms.add_argument("--json", action="store_true")
    ms.add_argument("--results", default=None, help="add each method's measured GFLOP per kimg from the runs here")
    ms.set_defaults(func=_handler("bench.catalog:cli_methods"), check=_handler("bench.catalog:check_results_arg"))

    su = sub.add_parser("suites", help="the registered suites: teacher, data, shape, conditioning, metrics")
    su.add_argument("--json", action="store_true")
    su.set_defaults(func=_handler("bench.catalog:cli_suites"))

    w = sub.add_parser("weights", help="model weights: list, check, fetch")
    w.add_argument("action", choices=["list", "check", "fetch"])
    w.add_argument("names", nargs="*", help="restrict to these weight names")
    w.set_defaults(func=_handler("bench.weights:cli_weights"))
    return p


# The machine's answers that no check can foresee (a disk filling up during a run, a file system that
# turns read-only): one line naming the file, exit 2; atomic writes leave nothing half-written.
ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                      errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG}


def _one_line_warnings(show):
    """``showwarning`` printing the harness's warnings on one line (``bench: warning: ...``), others via ``show``."""
    def show_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, BenchWarning):
            print(f"bench: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return show_warning


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bench`` console script; returns the exit status."""
    show = warnings.showwarning
    warnings.showwarning = _one_line_warnings(show)
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "check", None):  # light checks first: bad input is answered before torch loads
            args.check(args)
        return int(args.func(args) or 0)
    except BadInput as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRORS:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"bench: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = show


if __name__ == "__main__":
    raise SystemExit(main())
