"""The TensorBoard and offline W&B mirrors hold the values of stats.jsonl and metrics.jsonl, read back with
TensorBoard's own reader and W&B's record format (wandb.proto), through resumes and sweeps."""
import json
import struct
from pathlib import Path

import pytest
from bench_helpers import read_jsonl, tiny_run_args

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline and silent, its settings and cache inside tmp: nothing reaches the network or $HOME."""
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": tmp_path / "wandb-dir",
                       "WANDB_CONFIG_DIR": tmp_path / "wandb-config", "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
                       "WANDB_DATA_DIR": tmp_path / "wandb-data", "WANDB_DISABLE_CODE": "true"}.items():
        monkeypatch.setenv(key, str(value))


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``folder`` as TensorBoard shows it (purged points hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_records(path):
    """The records of a ``.wandb`` file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose chunks
    (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) carry serialised ``wandb.proto`` Records."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_history(run_dir) -> dict[str, list[tuple[int, object]]]:
    """Each logged key's (step, value) over every offline session of the run, in order."""
    out = {}
    for path in sorted(Path(run_dir, "wandb").glob("offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") != "history":
                continue
            items = {}
            for item in record.history.item:  # a media value comes as one item per field: (key, field) paths
                *parents, leaf = [item.key] if item.key else list(item.nested_key)
                target = items
                for key in parents:
                    target = target.setdefault(key, {})
                target[leaf] = json.loads(item.value_json)
            for key, value in items.items():
                if not key.startswith("_"):
                    out.setdefault(key, []).append((items["_step"], value))
    return out


def expected(run_dir) -> dict[str, list[tuple[int, float]]]:
    """What a mirror should hold: each number of every JSONL row under its tag, at the row's nimg."""
    from bench.train.mirrors import scalars, step_of

    out = {}
    for kind in ("stats", "metrics"):
        for row in read_jsonl(Path(run_dir) / f"{kind}.jsonl"):
            for tag, value in scalars(kind, row).items():
                out.setdefault(tag, []).append((step_of(row), value))
    return out


def assert_same(mirrored, truth, rel=0.0):
    assert set(mirrored) == set(truth)
    for tag, points in truth.items():
        assert [s for s, _ in mirrored[tag]] == [s for s, _ in points], tag
        for (_, got), (_, want) in zip(mirrored[tag], points):
            assert got == pytest.approx(want, rel=rel, abs=1e-30), tag


def run(cli, tmp_path, *extra):
    code, out, err = cli(*tiny_run_args(tmp_path / "r", method="sid", extra=extra))
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


def test_tensorboard_mirror_holds_the_jsonl_values(tmp_path, cli):
    run_dir = run(cli, tmp_path, "--logger", "tensorboard")
    truth = expected(run_dir)
    assert {"stats/loss_g", "stats/loss_fake", "metrics/frechet/n256"} <= set(truth)
    assert len(truth["metrics/frechet/n256"]) == 3  # kimg 0, 0.512, 1.024
    # TensorBoard keeps scalars as float32
    assert_same(tensorboard_scalars(run_dir / "tensorboard"), truth, rel=1e-6)
    assert not (run_dir / "wandb").exists()


def test_wandb_offline_run_holds_the_jsonl_values(tmp_path, cli):
    run_dir = run(cli, tmp_path, "--logger", "wandb")
    assert_same(wandb_history(run_dir), expected(run_dir))  # JSON both ways: exact
    state = json.loads((run_dir / "wandb" / "bench-mirror.json").read_text())
    assert [p.name for p in (run_dir / "wandb").glob("offline-run-*/run-*.wandb")] == [f"run-{state['id']}.wandb"]
    assert not (run_dir / "tensorboard").exists()


def test_an_interrupted_run_resumes_its_mirrors_without_duplicates(tmp_path):
    """Stopped after a checkpoint (as by SIGTERM), then resumed: both mirrors equal the JSONL files, and
    W&B's two offline sessions share one run id."""
    import torch

    from bench.config import parse_sets
    from bench.train import runconfig
    from bench.train.runner import execute

    args = tiny_run_args(tmp_path, method="sid")
    sets = parse_sets([args[i + 1] for i, a in enumerate(args) if a == "--set"])
    config = {**runconfig.resolve("gaussian", "sid", kimg=1, batch=64, eval_every=0.5, checkpoint_every=0.5,
                                  sets=sets), "device": "cpu"}
    calls = []
    stop_after = lambda: 15 if len(calls.append(1) or calls) > 5 else 0  # noqa: E731
    loggers = ["tensorboard", "wandb"]
    run_dir, status = execute(config, tmp_path / "r", torch.device("cpu"), quiet=True, stop=stop_after,
                              loggers=loggers)
    assert status == "interrupted by signal 15"
    before = expected(run_dir)
    _, status = execute(config, tmp_path / "r", torch.device("cpu"), quiet=True, loggers=loggers)
    assert status == "done"
    truth = expected(run_dir)
    assert sum(map(len, truth.values())) > sum(map(len, before.values()))
    assert_same(tensorboard_scalars(run_dir / "tensorboard"), truth, rel=1e-6)
    assert_same(wandb_history(run_dir), truth)
    state = json.loads((run_dir / "wandb" / "bench-mirror.json").read_text())
    sessions = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [p.name for p in sessions] == [f"run-{state['id']}.wandb"] * 2


def _rows(steps, offset):
    return [{"kimg": s / 1000, "step": s // 64, "loss_g": s + offset} for s in steps]


def test_after_a_crash_tensorboard_shows_the_resumed_rows_and_wandb_each_step_once(tmp_path):
    """A session killed after its checkpoint at nimg 100 had mirrored steps 200 and 300; the resumed one logs
    them again. TensorBoard hides the killed session's points after the checkpoint; W&B cannot take points
    back, so it keeps them and takes the resumed session's from the first step the killed one had not reached."""
    from bench.rundir import JsonlLog
    from bench.train.mirrors import Mirrors

    def session(resumed_nimg, steps, offset, close=True):
        mirrors = Mirrors(["tensorboard", "wandb"], tmp_path, {"run_id": "x", "suite": "gaussian"}, resumed_nimg)
        log = JsonlLog(tmp_path / f"stats-{offset}.jsonl")
        mirrors.watch(log, "stats")
        for row in _rows(steps, offset):
            log.append(row)
        mirrors.close("failed")

    session(None, [0, 100, 200, 300], 0)
    session(100, [200, 300, 400], 0.5)
    assert tensorboard_scalars(tmp_path / "tensorboard")["stats/loss_g"] == [
        (0, 0), (100, 100), (200, 200.5), (300, 300.5), (400, 400.5)]
    assert wandb_history(tmp_path)["stats/loss_g"] == [(0, 0), (100, 100), (200, 200), (300, 300), (400, 400.5)]
    session(None, [0], 1)  # started over (no checkpoint): the mirrors start over too
    assert tensorboard_scalars(tmp_path / "tensorboard")["stats/loss_g"] == [(0, 1)]
    assert wandb_history(tmp_path)["stats/loss_g"] == [(0, 1)]


def test_sample_grids_are_mirrored_as_images(tmp_path):
    """The grid ``save_samples`` writes at an evaluation goes to both mirrors as the image ``samples``."""
    import numpy as np
    import torch
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from bench.train.evaluation import save_samples
    from bench.train.mirrors import Mirrors

    mirrors = Mirrors(["tensorboard", "wandb"], tmp_path, {"run_id": "x"}, None)
    path = tmp_path / "samples" / "kimg0000000.512.png"
    save_samples(torch.rand(6, 3, 8, 8) * 2 - 1, path, mirror=mirrors, kimg=0.512)
    mirrors.close("done")
    width, height = Image.open(path).size
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    [image] = acc.Images("samples")
    assert (image.step, image.width, image.height) == (512, width, height)
    from io import BytesIO

    assert np.array_equal(np.asarray(Image.open(BytesIO(image.encoded_image_string)).convert("RGB")),
                          np.asarray(Image.open(path).convert("RGB")))
    [(step, value)] = wandb_history(tmp_path)["samples"]
    assert step == 512 and value["_type"] == "image-file" and (value["width"], value["height"]) == (width, height)
    [media] = (tmp_path / "wandb").glob("offline-run-*/files/" + value["path"])
    assert media.read_bytes() == path.read_bytes()


def test_unknown_logger_exits_2_naming_the_choices(tmp_path, cli):
    code, _, err = cli(*tiny_run_args(tmp_path / "r", extra=["--logger", "tensorbord"]))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown logger 'tensorbord'" in err and "tensorboard, wandb" in err
    assert not (tmp_path / "r").exists()


def test_a_missing_library_is_named_with_its_extra_before_training(tmp_path, cli, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    code, _, err = cli(*tiny_run_args(tmp_path / "r", extra=["--logger", "wandb"]))
    assert code == 2 and "pip install 'distill-bench[wandb]'" in err
    assert not (tmp_path / "r").exists()


SWEEP = """
suite: gaussian
suite_options: {width: 32, depth: 1, dim: 4, n_eval: 128}
grid: {method: [di], lr: [1.0e-3], batch: [32], seed: [0]}
fixed: {kimg: 0.2, eval_every: 0.1, checkpoint_every: 0.1}
teacher: false
logger: LOGGER
"""


def test_a_sweep_asks_every_run_to_mirror(tmp_path, cli):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.replace("LOGGER", "[tensorboard, wandb]"))
    code, _, err = cli("sweep", str(path), "--results", str(tmp_path / "r"))
    assert code == 0, err
    [run_dir] = [p.parent for p in (tmp_path / "r").rglob("config.json")]
    assert_same(tensorboard_scalars(run_dir / "tensorboard"), expected(run_dir), rel=1e-6)
    assert_same(wandb_history(run_dir), expected(run_dir))


@pytest.mark.parametrize("logger, says", [("wandbb", "unknown logger 'wandbb'"), ("[tensorboard, 3]", "logger must be")])
def test_a_sweep_with_a_bad_logger_exits_2(tmp_path, cli, logger, says):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.replace("LOGGER", logger))
    code, _, err = cli("sweep", str(path), "--results", str(tmp_path / "r"))
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_only_rank_0_mirrors_a_two_process_run(tmp_path):
    import os
    import subprocess

    from bench_helpers import PYTHON

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = tiny_run_args(tmp_path / "r", method="sid", extra=["--logger", "tensorboard", "--logger", "wandb"])
    proc = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                           "-m", "bench", *args], cwd=Path(__file__).resolve().parents[3], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert_same(tensorboard_scalars(run_dir / "tensorboard"), expected(run_dir), rel=1e-6)
    assert_same(wandb_history(run_dir), expected(run_dir))
