"""``train.snapshots``: an EMA snapshot per checkpoint, run ids unchanged without it, and picking by kimg."""
import pytest
import torch
from bench_helpers import tiny_run_args

from bench.errors import BadInput
from bench.train import checkpoint, runconfig, snapshots


def test_run_ids_are_unchanged_unless_snapshots_are_on():
    base = runconfig.resolve("gaussian", "sid", kimg=1.0)
    off = runconfig.resolve("gaussian", "sid", kimg=1.0, sets={"train.snapshots": False})
    on = runconfig.resolve("gaussian", "sid", kimg=1.0, sets={"train.snapshots": True})
    assert "snapshots" not in base["train"] and off == base
    assert on["train"]["snapshots"] is True and on["run_id"] != base["run_id"]
    with pytest.raises(BadInput, match="train.snapshots must be true or false"):
        runconfig.resolve("gaussian", "sid", sets={"train.snapshots": "yes"})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny gaussian run checkpointed at 0.5 and 1 kimg, with snapshots."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("snap")
    assert main(tiny_run_args(root / "results", extra=["--set", "train.snapshots=true"])) == 0
    return next((root / "results" / "gaussian").iterdir())


def test_a_snapshot_per_checkpoint_loads_weights_only(run_dir):
    names = sorted(p.name for p in (run_dir / "snapshots").iterdir())
    assert names == ["ema-000000512.pt", "ema-000001024.pt"]  # batch 64: checkpoints at 512 and 1024 images
    last = torch.load(run_dir / "snapshots" / names[-1], weights_only=True)
    state = checkpoint.read(run_dir / "state.pt", "cpu")
    assert last["progress"]["nimg"] == state["progress"]["nimg"] == 1024
    assert all(torch.equal(v, state["ema"][k]) for k, v in last["ema"].items())
    assert not [p for p in (run_dir / "snapshots").iterdir() if p.name.startswith(".")]


def test_kimg_picks_a_snapshot_or_a_checkpoint(run_dir):
    assert snapshots.find(run_dir, 0.512) == run_dir / "snapshots" / "ema-000000512.pt"
    assert snapshots.find(run_dir, 1.024) == run_dir / "snapshots" / "ema-000001024.pt"  # EMA only: smaller
    with pytest.raises(BadInput, match=r"no EMA generator at kimg 0.7; available kimg: 0.512, 1.024$"):
        snapshots.find(run_dir, 0.7)
    run, used, problems = snapshots.load_run(run_dir, torch.device("cpu"), 0.512)
    assert used == "snapshots/ema-000000512.pt" and run.nimg == 512 and problems == []
    early = torch.load(run_dir / "snapshots" / "ema-000000512.pt", weights_only=True)["ema"]
    assert all(torch.equal(v, early[k]) for k, v in run.ema.state_dict().items())


def test_without_snapshots_the_two_checkpoints_are_offered(tmp_path):
    from bench.cli import main

    assert main(tiny_run_args(tmp_path / "results")) == 0
    directory = next((tmp_path / "results" / "gaussian").iterdir())
    assert not (directory / "snapshots").exists()
    assert snapshots.find(directory, 0.512) == directory / "state-prev.pt"
    with pytest.raises(BadInput, match=r"available kimg: 0.512, 1.024 \(--set train.snapshots=true"):
        snapshots.find(directory, 0.1)


def test_generate_kimg_bad_input_is_one_line_exit_2(cli, run_dir, tmp_path):
    code, _, err = cli("generate", str(run_dir), "-o", str(tmp_path / "s.npz"), "--kimg", "-1")
    assert code == 2 and "--kimg" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("generate", str(run_dir), "-o", str(tmp_path / "s.npz"), "--kimg", "0.512")
    assert code == 2 and "samples are not images" in err and len(err.strip().splitlines()) == 1  # gaussian vectors
    assert not (tmp_path / "s.npz").exists()
