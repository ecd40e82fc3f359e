import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from bench_helpers import PYTHON, read_jsonl, tiny_run_args

REPO = Path(__file__).resolve().parents[3]


def test_run_writes_the_run_directory(tmp_path, cli):
    code, out, _ = cli(*tiny_run_args(tmp_path))
    assert code == 0
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "gaussian"
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "manifest.json", "stats.jsonl", "metrics.jsonl",
                                                   "state.pt"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "sid" and config["hparams"]["alpha"] == 1.2
    assert (config["lr_g"], config["lr_fake"], config["lr_source"]) == (1e-5, 1e-5, "published")  # SiD's, no --lr
    assert config["optimizer"]["betas"] == [0.0, 0.999]
    assert config["hparams_in_use"] == config["hparams"]  # SiD has no data-dependent default
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["hardware"]["world_size"] == 1
    assert manifest["metrics"]["frechet"].startswith("exact")
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert sorted({r["kimg"] for r in rows}) == [0.0, 0.512, 1.024]
    assert {r["metric"] for r in rows} == {"frechet", "sliced_wasserstein"}
    assert all(r["n_samples"] == 256 and r["ema"] is True for r in rows)
    stats = read_jsonl(run_dir / "stats.jsonl")
    assert stats and {"loss_g", "loss_fake", "grad_norm_g", "grad_norm_fake", "images_per_s",
                      "peak_mem_mb"} <= set(stats[-1])


def test_rerunning_a_finished_run_does_nothing(tmp_path, cli):
    _, out, _ = cli(*tiny_run_args(tmp_path, method="di"))
    run_dir = Path(out.strip().splitlines()[-1])
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    code, out2, _ = cli(*tiny_run_args(tmp_path, method="di"))
    assert code == 0 and out2.strip().splitlines()[-1] == str(run_dir)
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


@pytest.mark.slow
def test_every_method_trains_and_improves_on_gaussians(tmp_path, cli):
    for method in ("sim", "sid", "di", "dmd", "dmd2"):
        args = ["run", "--suite", "gaussian", "--method", method, "--kimg", "3", "--batch", "128", "--lr", "1e-3",
                "--eval-every", "3", "--results", str(tmp_path), "--quiet"]
        code, out, _ = cli(*args, *(["--set", "regression_weight=0"] if method == "dmd" else []))
        assert code == 0
        rows = [r for r in read_jsonl(Path(out.strip().splitlines()[-1]) / "metrics.jsonl") if r["metric"] == "frechet"]
        assert rows[-1]["value"] < rows[0]["value"], method


def test_divergence_stops_cleanly(tmp_path, cli):
    code, out, _ = cli(*tiny_run_args(tmp_path, extra=["--lr", "1e8"]))
    assert code == 0
    manifest = json.loads((Path(out.strip().splitlines()[-1]) / "manifest.json").read_text())
    assert manifest["status"] == "diverged"
    assert manifest["diverged"]["step"] >= 1 and "non-finite" in manifest["diverged"]["reason"]


@pytest.mark.parametrize("argv, word", [
    (["--suite", "gaussan"], "gaussian"),
    (["--method", "simm"], "sim"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--batch", "0"], "--batch"),
    (["--kimg", "0"], "--kimg"),
    (["--set", "alpha"], "KEY=VALUE"),
    (["--set", "bogus=1"], "bogus"),
    (["--set", "alpha=-2"], "alpha"),
    (["--set", "suite.bogus=1"], "bogus"),
    (["--set", "train.bogus=1"], "train.bogus"),
    (["--batch-gpu", "48"], "multiple"),
    (["--set", "optim.betas=5"], "optim.betas"),
    (["--set", "optim.eps=-1"], "optim.eps"),
    (["--set", "optim.name=sgd"], "sgd"),
    (["--set", "suite.dim=abc"], "suite.dim"),
    (["--set", "suite.std_max=0.01"], "suite.std_max"),
    (["--set", "train.n_eval=abc"], "train.n_eval"),
    (["--set", "train.eval_raw=maybe"], "train.eval_raw"),
    (["--steps", "0"], "--steps"),
    (["--steps", "65"], "--steps"),
])
def test_bad_input_exits_2_and_leaves_nothing(tmp_path, cli, argv, word):
    args = tiny_run_args(tmp_path)
    for i in range(0, len(argv), 2):
        flag, value = argv[i], argv[i + 1]
        if flag in args and flag != "--set":
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    code, out, err = cli(*args)
    assert code == 2
    assert err.startswith("bench: error:") and word in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.rglob("*.json"))


def _run_cli(args, **kw):
    return subprocess.Popen([PYTHON, "-m", "bench", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _metric_values(run_dir):
    return [(r["kimg"], r["metric"], r["value"]) for r in read_jsonl(run_dir / "metrics.jsonl")]


def _stat_values(run_dir):
    keep = ("kimg", "step", "loss_g", "loss_fake", "grad_norm_g", "grad_norm_fake")
    return [tuple(r[k] for k in keep) for r in read_jsonl(run_dir / "stats.jsonl")]


def _cost_values(path):
    return [(r["kimg"], r["gflop"], r["passes"]) for r in read_jsonl(path)]


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    big = ["--set", "suite.width=256", "--set", "suite.depth=3", "--checkpoint-every", "1", "--eval-every", "1",
           "--set", "train.tick_kimg=0.064"]
    args_a = tiny_run_args(tmp_path / "a", method="sim", kimg="6", extra=big)
    args_b = tiny_run_args(tmp_path / "b", method="sim", kimg="6", extra=big)
    reference = _run_cli(args_a)
    out_a, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    dir_a = Path(out_a.strip().splitlines()[-1])

    victim = _run_cli(args_b)
    dir_b = tmp_path / "b" / "gaussian" / dir_a.name
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a checkpoint exists and training has gone past it
        stats = dir_b / "stats.jsonl"
        # only whole lines: the writer may be half-way through the last one
        whole = stats.read_text().rpartition("\n")[0].splitlines() if stats.exists() else []
        if (dir_b / "state.pt").exists() and any(json.loads(line)["kimg"] > 1.5 for line in whole if line.strip()):
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert json.loads((dir_b / "manifest.json").read_text())["status"] == "running"

    resumed = _run_cli(args_b)
    out_b, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"was left by pid {victim.pid} on" in err and "died without finishing" in err
    assert _metric_values(dir_b) == _metric_values(dir_a)
    assert _stat_values(dir_b) == _stat_values(dir_a)
    kimgs = [r["kimg"] for r in read_jsonl(dir_b / "stats.jsonl")]
    assert len(kimgs) == len(set(kimgs))
    # the cumulative cost survives the kill exactly: no pass counted twice, none lost
    for log in ("stats.jsonl", "metrics.jsonl"):
        assert _cost_values(dir_b / log) == _cost_values(dir_a / log)
    cost_a, cost_b = (json.loads((d / "manifest.json").read_text())["cost"] for d in (dir_a, dir_b))
    assert (cost_b["gflop"], cost_b["passes"]) == (cost_a["gflop"], cost_a["passes"]) and cost_a["gflop"] > 0


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_finishes(tmp_path):
    args = tiny_run_args(tmp_path, method="di", kimg="20", extra=["--set", "suite.width=256", "--set", "suite.depth=3"])
    proc = _run_cli(args)
    run_dirs = tmp_path / "gaussian"
    deadline = time.time() + 120
    while time.time() < deadline and not list(run_dirs.glob("*/stats.jsonl")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    run_dir = next(run_dirs.iterdir())
    assert (run_dir / "state.pt").exists()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"
    resumed = _run_cli(args[:args.index("--kimg") + 1] + ["20"] + args[args.index("--kimg") + 2:])
    out, err = resumed.communicate(timeout=900)  # generous: only a hang should fail here
    assert resumed.returncode == 0, err
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = tiny_run_args(tmp_path, method="sid")
    proc = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
                           "-m", "bench", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["hardware"]["world_size"] == 2
    config = json.loads((run_dir / "config.json").read_text())
    assert config["batch"] == 64 and config["batch_gpu"] == 32


@pytest.mark.slow
def test_eval_scores_every_metric_on_n_and_replaces_earlier_rows(tmp_path, cli):
    _, out, _ = cli(*tiny_run_args(tmp_path, method="di"))
    run_dir = Path(out.strip().splitlines()[-1])
    trained = read_jsonl(run_dir / "metrics.jsonl")
    final = max(r["kimg"] for r in trained)
    for _ in range(2):  # the second time replaces the first time's rows
        code, out, _ = cli("eval", str(run_dir), "--n", "512")
        assert code == 0 and "frechet" in out and "sliced_wasserstein" in out
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert rows[:len(trained)] == trained
    added = rows[len(trained):]
    assert {(r["kimg"], r["metric"], r["n_samples"]) for r in added} == {
        (final, "frechet", 512), (final, "sliced_wasserstein", 512)}  # every metric on N, once
    code, _, _ = cli("eval", str(run_dir), "--n", "256")  # the count training used: its rows are replaced
    assert code == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    keys = [(r["kimg"], r["metric"], r["n_samples"], r["ema"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(trained) + 2
    scheduled = {r["metric"]: r["value"] for r in trained if r["kimg"] == final}
    rescored = {r["metric"]: r["value"] for r in rows[-2:]}
    assert rescored == pytest.approx(scheduled, rel=1e-9)  # same generator, same latents


@pytest.mark.slow
def test_dmd_regression_pairs_and_dmd2_gan_head(tmp_path, cli):
    code, out, _ = cli(*tiny_run_args(tmp_path, method="dmd"))
    assert code == 0
    stats = read_jsonl(Path(out.strip().splitlines()[-1]) / "stats.jsonl")
    assert all(r["loss_regression"] > 0 for r in stats)
    code, out, _ = cli(*tiny_run_args(tmp_path, method="dmd2", extra=["--set", "gan_weight=0.003"]))
    assert code == 0
    run_dir = Path(out.strip().splitlines()[-1])
    stats = read_jsonl(run_dir / "stats.jsonl")
    assert all("loss_gan_g" in r and "loss_gan_d" in r for r in stats)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"


def test_a_k_step_generator_trains_evaluates_and_is_costed_per_step(tmp_path, cli):
    from bench.train import runconfig

    one = runconfig.resolve("gaussian", "dmd2", kimg=1.0)
    assert runconfig.resolve("gaussian", "dmd2", kimg=1.0, steps=1)["run_id"] == one["run_id"]  # one step: unchanged
    assert "steps" not in one["train"]
    code, out, _ = cli(*tiny_run_args(tmp_path, method="dmd2", extra=["--steps", "3"]))
    assert code == 0
    run_dir = Path(out.strip().splitlines()[-1])
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 3
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["cost"]["sample"]["nfe"] == 3.0
    passes = manifest["cost"]["passes"]
    # per image: 3 passes for the generator's loss (2 without gradients), 3 for each of DMD2's 4 fresh fake updates
    assert passes["generator_forward"] == 15 * passes["generator_backward"]
    assert all(math.isfinite(r["value"]) for r in read_jsonl(run_dir / "metrics.jsonl"))
    code, out, _ = cli("run", "--suite", "gaussian", "--method", "teacher", "--steps", "2", "--results", str(tmp_path),
                       "--quiet")
    teacher = Path(out.strip().splitlines()[-1])
    assert json.loads((teacher / "config.json").read_text())["hparams"] == {"sampler": "heun", "steps": 2}
    assert json.loads((teacher / "manifest.json").read_text())["cost"]["sample"]["nfe"] == 3.0  # Heun: 2K - 1
