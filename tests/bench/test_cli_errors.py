"""Every bad input through the ``bench`` command line: exit 2, one line, nothing written, nothing lost.

This table is the place for new cases. A case is an id, the argv (``{name}`` fields are paths of the
shared fixture below), a word the one-line error must contain, and whether answering it may import
torch (cases that can be answered from the arguments and the file system alone must not). Each case
runs in-process through ``bench.cli.main`` (what the console script calls) and must leave the fixture
folder byte-for-byte as it was; ``test_light_cases_answer_before_torch_loads`` runs the light ones
in a fresh interpreter and checks that torch was never imported.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import TINY, cli_caller, save_pngs


REPO = Path(__file__).resolve().parents[2]
RUN = ["run", "--suite", "gaussian", "--method", "sid", "--kimg", "0.25", "--batch", "64", "--eval-every",
       "0.25", "--checkpoint-every", "0.25", "--quiet", *TINY]
GOOD_SWEEP = "suite: gaussian\nsuite_options: {width: 32, depth: 1, dim: 4, n_eval: 128}\n" \
             "grid: {method: [sid], batch: [32]}\nfixed: {kimg: 0.1, eval_every: 0.1}\n"

# (id, argv, word in the error, may import torch)
CASES = [
    # bench run: suite, train and precision options
    ("dim-abc", [*RUN, "--results", "{world}/r", "--set", "suite.dim=abc"], "suite.dim", True),
    ("dim-negative", [*RUN, "--results", "{world}/r", "--set", "suite.dim=-4"], "suite.dim", True),
    ("dim-zero", [*RUN, "--results", "{world}/r", "--set", "suite.dim=0"], "suite.dim", True),
    ("std-order", [*RUN, "--results", "{world}/r", "--set", "suite.std_min=0.5"], "std_min", True),
    ("eval-batch-zero", [*RUN, "--results", "{world}/r", "--set", "train.eval_batch=0"], "train.eval_batch", False),
    ("ema-negative", [*RUN, "--results", "{world}/r", "--set", "train.ema_halflife_kimg=-1"],
     "train.ema_halflife_kimg", False),
    ("grad-clip-negative", [*RUN, "--results", "{world}/r", "--set", "train.grad_clip=-1"], "train.grad_clip", False),
    ("n-eval-zero", [*RUN, "--results", "{world}/r", "--set", "train.n_eval=0"], "train.n_eval", False),
    ("eval-raw-text", [*RUN, "--results", "{world}/r", "--set", "train.eval_raw=maybe"], "train.eval_raw", False),
    ("lr-negative", [*RUN, "--results", "{world}/r", "--lr", "-1"], "--lr", False),
    ("lr-overflows-float32", [*RUN, "--results", "{world}/r", "--lr", "1e39"], "float32", False),
    ("seed-huge", [*RUN, "--results", "{world}/r", "--seed", str(10**30)], "--seed", False),
    ("n-eval-one", [*RUN, "--results", "{world}/r", "--set", "train.n_eval=1"], "at least 2", False),
    ("suite-n-eval-one", [*RUN, "--results", "{world}/r", "--set", "suite.n_eval=1"], "at least 2", True),
    ("train-option-typo", [*RUN, "--results", "{world}/r", "--set", "train.n_evals=8"], "did you mean", False),
    ("resume-planted-checkpoint", [*RUN, "--results", "{world}/planted"], "refused", True),
    ("suite-typo", [*RUN, "--results", "{world}/r", "--suite", "gausian"], "gaussian", False),
    ("bf16-on-cpu", [*RUN, "--results", "{world}/r", "--device", "cpu", "--precision", "bf16"], "CUDA", False),
    ("tf32-on-cpu", [*RUN, "--results", "{world}/r", "--device", "cpu", "--precision", "tf32"], "CUDA", False),
    ("logger-typo", [*RUN, "--results", "{world}/r", "--logger", "tensorbord"], "did you mean tensorboard", False),
    ("batch-beyond-memory", [*RUN, "--results", "{world}/r", "--batch", "10000000"], "memory", True),
    ("guidance-method-on-unconditional-suite", [*RUN, "--results", "{world}/r", "--method", "ddmd"],
     "classifier-free guidance", True),
    ("snoopi-on-unconditional-suite", [*RUN, "--results", "{world}/r", "--method", "snoopi"],
     "classifier-free guidance", True),
    ("resume-without-usable-checkpoint", [*RUN, "--results", "{world}/broken"], "no usable checkpoint", True),
    # bench run: where the results go (and what is already there)
    ("results-dangling-symlink", [*RUN, "--results", "{world}/links/dangling"], "does not exist", False),
    ("results-symlink-loop", [*RUN, "--results", "{world}/links/loop1"], "symbolic link loop", False),
    ("results-under-dangling-symlink", [*RUN, "--results", "{world}/links/dangling/r"], "does not exist", False),
    ("lock-is-a-folder", [*RUN, "--results", "{world}/lock_folder"], "is a folder, not the run's lock file", True),
    ("results-is-a-file", [*RUN, "--results", "{world}/file.txt"], "is a file", False),
    ("results-under-a-file", [*RUN, "--results", "{world}/file.txt/r"], "which is a file", False),
    ("results-read-only", [*RUN, "--results", "{readonly}/r"], "cannot write", False),
    # bench sweep
    ("sweep-binary", ["sweep", "{world}/binary.yaml", "--results", "{world}/r"], "UTF-8", False),
    ("sweep-latin1", ["sweep", "{world}/latin1.yaml", "--results", "{world}/r"], "UTF-8", False),
    ("sweep-folder", ["sweep", "{world}", "--results", "{world}/r"], "is a folder", False),
    ("sweep-empty-grid", ["sweep", "{world}/empty.yaml", "--results", "{world}/r"], "no runs", False),
    ("sweep-empty-hparams", ["sweep", "{world}/empty_hparams.yaml", "--results", "{world}/r"], "no runs", False),
    ("sweep-slurm-without-slurm", ["sweep", "{world}/good.yaml", "--launcher", "slurm", "--results", "{world}/r"],
     "--local-test", False),
    ("sweep-local-test-alone", ["sweep", "{world}/good.yaml", "--local-test", "--results", "{world}/r"],
     "--launcher slurm", False),
    ("sweep-duplicate-key", ["sweep", "{world}/duplicate.yaml", "--results", "{world}/r"], "duplicate key 'fixed'",
     False),
    ("sweep-quick-typo", ["sweep", "{world}/quick_typo.yaml", "--quick", "--results", "{world}/r"],
     "did you mean 'fixed'", False),
    ("sweep-fixed-typo", ["sweep", "{world}/fixed_typo.yaml", "--results", "{world}/r"], "did you mean 'eval_every'",
     False),
    ("sweep-teacher-string", ["sweep", "{world}/teacher_string.yaml", "--results", "{world}/r"], "teacher must be",
     False),
    ("sweep-precision-fp16", ["sweep", "{world}/fp16.yaml", "--results", "{world}/r"], "fixed.precision", False),
    ("sweep-logger-typo", ["sweep", "{world}/logger_typo.yaml", "--results", "{world}/r"], "tensorboard, wandb", False),
    ("sweep-batch-text", ["sweep", "{world}/batch_text.yaml", "--results", "{world}/r"], "grid.batch", False),
    ("sweep-lr-overflow", ["sweep", "{world}/lr_overflow.yaml", "--results", "{world}/r"], "float32", False),
    ("sweep-seed-huge", ["sweep", "{world}/seed_huge.yaml", "--results", "{world}/r"], "grid.seed", False),
    ("sweep-hparams-unknown-method", ["sweep", "{world}/hparams_method.yaml", "--results", "{world}/r"],
     "did you mean sid", True),
    ("sweep-hparams-string-bool", ["sweep", "{world}/hparams_bool.yaml", "--results", "{world}/r"],
     "true or false", True),
    ("sweep-one-sample-eval", ["sweep", "{world}/one_sample.yaml", "--results", "{world}/r"], "at least 2", True),
    ("sweep-bf16-on-cpu", ["sweep", "{world}/bf16.yaml", "--device", "cpu", "--results", "{world}/r"], "CUDA", True),
    ("sweep-results-file", ["sweep", "{world}/good.yaml", "--results", "{world}/file.txt"], "is a file", True),
    ("sweep-results-read-only", ["sweep", "{world}/good.yaml", "--results", "{readonly}/r"], "cannot write", True),
    # bench fid
    ("fid-corrupt-png", ["fid", "{world}/png_bad", "{world}/png_rgb", "--extractor", "random-features"],
     "not a readable image", True),
    ("fid-rgb-vs-grey", ["fid", "{world}/png_rgb", "{world}/png_grey", "--extractor", "random-features"],
     "greyscale", True),
    # bench eval
    ("eval-corrupt-checkpoint", ["eval", "{world}/corrupt/gaussian/{run_id}", "--n", "64"], "no usable checkpoint",
     True),
    ("eval-planted-checkpoint", ["eval", "{world}/planted_done/gaussian/{run_id}", "--n", "64"], "refused", True),
    ("eval-one-sample", ["eval", "{world}/results/gaussian/{run_id}", "--n", "1"], "at least 2", False),
    ("eval-unfinished", ["eval", "{world}/broken/gaussian/{run_id}"], "has not finished", False),
    ("eval-not-a-run", ["eval", "{world}/results"], "not a run directory", False),
    ("eval-nothing", ["eval"], "--generator FILE", False),
    # bench eval --generator
    ("eval-generator-missing", ["eval", "--generator", "{world}/none.pkl", "--suite", "cifar10"], "does not exist", False),
    ("eval-generator-folder", ["eval", "--generator", "{world}/results", "--suite", "cifar10"], "is not a file", False),
    ("eval-generator-suffix", ["eval", "--generator", "{world}/file.txt", "--suite", "cifar10"], "expected a .pkl", False),
    ("eval-generator-no-suite", ["eval", "--generator", "{world}/generator.pkl"], "needs --suite", False),
    ("eval-generator-not-edm-suite", ["eval", "--generator", "{world}/generator.pkl", "--suite", "gaussian"],
     "EDM suite", False),
    ("eval-generator-and-run", ["eval", "{world}/results/gaussian/{run_id}", "--generator", "{world}/generator.pkl",
                                "--suite", "cifar10"], "not both", False),
    ("eval-generator-sigma-negative", ["eval", "--generator", "{world}/generator.pkl", "--suite", "cifar10",
                                       "--sigma-init", "-1"], "--sigma-init", False),
    ("eval-generator-results-file", ["eval", "--generator", "{world}/generator.pkl", "--suite", "cifar10",
                                     "--results", "{world}/file.txt/r"], "which is a file", False),
    ("eval-generator-not-a-generator", ["eval", "--generator", "{world}/generator.pkl", "--suite", "cifar10",
                                        "--sigma-init", "2.5", "--results", "{world}/ext"], "not a generator pickle",
     True),
    # bench export --format edm-pickle
    ("export-edm-pickle-not-edm-suite", ["export", "{world}/results/gaussian/{run_id}", "--format", "edm-pickle",
                                         "-o", "{world}/g.pkl"], "EDM suites", False),
    ("export-edm-pickle-suffix", ["export", "{world}/results/gaussian/{run_id}", "--format", "edm-pickle",
                                  "-o", "{world}/g.safetensors"], "writes a .pkl file", False),
    # bench generate --kimg, bench export --format diffusers
    ("generate-kimg-negative", ["generate", "{world}/results/gaussian/{run_id}", "-o", "{world}/s.npz", "--kimg", "-1"],
     "--kimg", False),
    ("generate-vectors", ["generate", "{world}/results/gaussian/{run_id}", "-o", "{world}/s.npz", "--kimg", "0.3"],
     "samples are not images", True),
    ("export-diffusers-not-t2i", ["export", "{world}/results/gaussian/{run_id}", "--format", "diffusers", "-o",
                                  "{world}/g"], "exports t2i runs", False),
    ("snapshots-text", [*RUN, "--results", "{world}/r", "--set", "train.snapshots=maybe"], "train.snapshots", False),
    # results, leaderboard, plot, report
    ("results-of-a-file", ["results", "{world}/file.txt"], "is a file", False),
    ("leaderboard-of-a-file", ["leaderboard", "{world}/file.txt"], "is a file", False),
    ("results-o-read-only", ["results", "{world}/results", "-o", "{readonly}/t.csv"], "cannot write", False),
    ("plot-o-under-a-file", ["plot", "robustness", "{world}/results", "-o", "{world}/file.txt/f.png"],
     "which is a file", False),
    ("plot-o-read-only", ["plot", "robustness", "{world}/results", "-o", "{readonly}/f.png"], "cannot write", False),
    ("report-o-under-a-file", ["report", "{world}/results", "-o", "{world}/file.txt/r/index.html"],
     "which is a file", False),
    ("report-o-read-only", ["report", "{world}/results", "-o", "{readonly}/r/index.html"], "cannot write", False),
    ("report-o-folder", ["report", "{world}/results", "-o", "{world}/results"], "is a folder", False),
    ("plot-compute-o-read-only", ["plot", "compute", "{world}/results", "-o", "{readonly}/f.png"], "cannot write",
     False),
    ("robustness-boot-0", ["robustness", "{world}/results", "--boot", "0"], "--boot", False),
    ("robustness-factor-1", ["robustness", "{world}/results", "--factor", "1"], "--factor", False),
    ("robustness-upto-negative", ["robustness", "{world}/results", "--upto-gflop", "-5"], "--upto-gflop", False),
]


SWEEPS = {
    "duplicate": GOOD_SWEEP + "fixed: {kimg: 1}\n",
    "quick_typo": GOOD_SWEEP + "quick: {fixd: {kimg: 0.05}}\n",
    "fixed_typo": GOOD_SWEEP.replace("eval_every", "eval_evry"),
    "teacher_string": GOOD_SWEEP + "teacher: 'no'\n",
    "fp16": GOOD_SWEEP.replace("fixed: {", "fixed: {precision: fp16, "),
    "logger_typo": GOOD_SWEEP + "logger: [wandb, tensorbord]\n",
    "batch_text": GOOD_SWEEP.replace("batch: [32]", "batch: [big]"),
    "lr_overflow": GOOD_SWEEP.replace("batch: [32]", "batch: [32], lr: [1.0e+39]"),
    "seed_huge": GOOD_SWEEP.replace("batch: [32]", "batch: [32], seed: [100000000000000000000]"),
    "hparams_method": GOOD_SWEEP + "method_hparams: {sidd: {alpha: [1.0]}}\n",
    "hparams_bool": GOOD_SWEEP.replace("method: [sid]", "method: [sim]") + "method_hparams: {sim: {d_term: ['false']}}\n",
    "one_sample": GOOD_SWEEP.replace("n_eval: 128", "n_eval: 1"),
}


class Planted:
    """What a malicious checkpoint holds: unpickling it would create ``marker`` (if it ever ran)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# (id, environment, argv, word in the error): the machine around the command
ENV_CASES = [
    ("weights-dir-is-a-file", {"BENCH_WEIGHTS_DIR": "{world}/file.txt"}, ["weights", "check"], "is a file"),
    ("weights-fetch-read-only", {"BENCH_WEIGHTS_DIR": "{readonly}/w"}, ["weights", "fetch", "inception"],
     "cannot write"),
    ("digits-cache-is-a-file", {"BENCH_CACHE": "{world}/file.txt"}, ["teacher", "train", "--suite", "digits"],
     "cannot write the digits cache"),
    ("digits-cache-read-only", {"BENCH_CACHE": "{readonly}/c"}, ["teacher", "train", "--suite", "digits"],
     "cannot write the digits cache"),
]


def _make_read_only(path: Path) -> bool:
    """A folder nobody can create files in (root ignores modes, so also the immutable attribute)."""
    path.mkdir()
    path.chmod(0o555)
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    try:
        (path / "probe").touch()
    except OSError:
        return True
    (path / "probe").unlink()
    return False


def _release_read_only(path: Path) -> None:
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One folder with everything the cases point at: a finished run, sweeps, images, a file."""
    root = tmp_path_factory.mktemp("world")
    (root / "file.txt").write_text("not a folder\n")
    (root / "generator.pkl").write_bytes(b"\x80\x04K\x07.")  # a pickle of the number 7, not a generator
    (root / "good.yaml").write_text(GOOD_SWEEP)
    (root / "bf16.yaml").write_text(GOOD_SWEEP.replace("fixed: {", "fixed: {precision: bf16, "))
    (root / "empty.yaml").write_text(GOOD_SWEEP.replace("method: [sid]", "method: []"))
    (root / "empty_hparams.yaml").write_text(GOOD_SWEEP + "method_hparams: {sid: {alpha: []}}\n")
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "latin1.yaml").write_bytes("suite: gaussian  # Fréchet\ngrid: {method: [sid]}\n".encode("latin-1"))
    for name, text in SWEEPS.items():
        (root / f"{name}.yaml").write_text(text)
    rng = np.random.default_rng(0)
    import torch

    save_pngs(torch.from_numpy(rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)), root / "png_rgb")
    save_pngs(torch.from_numpy(rng.integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)), root / "png_grey")
    save_pngs(torch.from_numpy(rng.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)), root / "png_bad")
    png = (root / "png_bad" / "000001.png").read_bytes()
    (root / "png_bad" / "000001.png").write_bytes(png[: len(png) // 2])
    from bench.cli import main

    assert main([*RUN, "--results", str(root / "results")]) == 0
    run_dir = next((root / "results" / "gaussian").iterdir())
    for name, status in (("corrupt", "done"), ("broken", "running")):  # no readable checkpoint left
        copy = root / name / "gaussian" / run_dir.name
        shutil.copytree(run_dir, copy)
        for state in copy.glob("state*.pt"):
            state.write_bytes(state.read_bytes()[:1000])
        manifest = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**manifest, "status": status}))
    for name, status in (("planted", "running"), ("planted_done", "done")):  # checkpoints that would run code
        copy = root / name / "gaussian" / run_dir.name
        shutil.copytree(run_dir, copy)
        for state in copy.glob("state*.pt"):
            torch.save({"progress": {}, "generator": Planted(root / "ran")}, state)
        manifest = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**manifest, "status": status}))
    copy = root / "lock_folder" / "gaussian" / run_dir.name  # a folder where the lock file belongs
    shutil.copytree(run_dir, copy)
    (copy / "lock").unlink(missing_ok=True)
    (copy / "lock").mkdir()
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    (root / "links").mkdir()
    (root / "links" / "dangling").symlink_to(root / "nowhere")
    (root / "links" / "loop1").symlink_to(root / "links" / "loop2")
    (root / "links" / "loop2").symlink_to(root / "links" / "loop1")
    readonly = root / "readonly"
    writable = not _make_read_only(readonly)
    yield {"world": root, "readonly": readonly, "readonly_works": not writable, "run_id": run_dir.name}
    _release_read_only(readonly)


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with a digest of its bytes (folders as None)."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else None
    return out


def _argv(argv, world):
    return [a.format(**{k: v for k, v in world.items() if isinstance(v, (Path, str))}) for a in argv]


@pytest.fixture
def cli(capsys):
    return cli_caller(capsys)


@pytest.mark.parametrize("case, argv, word, torch_ok", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(world, cli, monkeypatch, case, argv, word, torch_ok):
    if "{readonly}" in " ".join(argv) and not world["readonly_works"]:
        pytest.skip("cannot make a read-only folder here")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no sbatch, whatever this machine has
    monkeypatch.delenv("BENCH_SUBMITIT_CLUSTER", raising=False)
    before = snapshot(world["world"])
    code, out, err = cli(*_argv(argv, world))
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error:") and word in lines[0], err
    assert "Traceback" not in err
    assert snapshot(world["world"]) == before


@pytest.mark.parametrize("case, env, argv, word", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_environment_problems_exit_2_with_one_line(world, cli, monkeypatch, case, env, argv, word):
    if "{readonly}" in " ".join(env.values()) and not world["readonly_works"]:
        pytest.skip("cannot make a read-only folder here")
    for key, value in env.items():
        monkeypatch.setenv(key, _argv([value], world)[0])
    before = snapshot(world["world"])
    code, out, err = cli(*_argv(argv, world))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and word in lines[0] and "Traceback" not in err, err
    assert snapshot(world["world"]) == before


def test_an_unusable_home_is_one_line(world, cli, monkeypatch):
    """HOME a file (or missing): the default digits cache under it cannot be made, and says so; the
    weights check still answers (every file missing, exit 1), and the error names BENCH_CACHE."""
    monkeypatch.delenv("BENCH_CACHE", raising=False)
    monkeypatch.delenv("BENCH_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(world["world"] / "file.txt"))
    before = snapshot(world["world"])
    code, _, err = cli("teacher", "train", "--suite", "digits")
    assert code == 2 and err.count("\n") == 1 and "cannot write the digits cache" in err and "BENCH_CACHE" in err, err
    code, out, err = cli("weights", "check")
    assert code == 1 and "Traceback" not in err and "0 of" in out  # 1: weights are missing, as without HOME
    assert snapshot(world["world"]) == before


def test_a_full_disk_is_one_line_and_leaves_nothing(world, cli, monkeypatch):
    import errno

    import pandas as pd

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    before = snapshot(world["world"])
    code, _, err = cli("results", str(world["world"] / "results"), "-o", str(world["world"] / "table.csv"))
    assert code == 2 and err.startswith("bench: error: No space left on device: ") and len(err.splitlines()) == 1
    assert snapshot(world["world"]) == before  # the half-written temporary file is gone


def test_output_piped_into_head_stops_quietly(world):
    """``bench leaderboard DIR | head -1``: exit 141 (SIGPIPE's convention), no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", "leaderboard", str(world["world"] / "results"),
                             "--format", "csv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141 and proc.stderr.read() == b""


def test_a_planted_checkpoint_never_runs(world, cli):
    """Resuming or evaluating a run whose checkpoints hold a pickled call refuses them; the call never runs."""
    for argv in ([*RUN, "--results", "{world}/planted"], ["eval", "{world}/planted_done/gaussian/{run_id}"]):
        code, _, err = cli(*_argv(argv, world))
        assert code == 2 and "refused" in err and "posix.system" in err, err
    assert not (world["world"] / "ran").exists()


def test_light_cases_answer_before_torch_loads(world):
    """The cases marked light, in one fresh interpreter: exit 2 and ``torch`` never imported."""
    light = [_argv(argv, world) for case, argv, _, torch_ok in CASES if not torch_ok
             and ("{readonly}" not in " ".join(argv) or world["readonly_works"])]
    script = (
        "import contextlib, io, json, sys\n"
        "from bench.cli import main\n"
        "bad = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    with contextlib.redirect_stderr(io.StringIO()):\n"
        "        code = main(argv)\n"
        "    if code != 2 or 'torch' in sys.modules:\n"
        "        bad.append([argv, code, 'torch' in sys.modules])\n"
        "print(json.dumps(bad))\n")
    env = {**os.environ, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    env.pop("BENCH_SUBMITIT_CLUSTER", None)
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(light)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
