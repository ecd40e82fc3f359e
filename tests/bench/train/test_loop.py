"""bench.train.loop: progress and schedules in whole images; checkpoints of either schedule format load."""
import torch

from bench.train import runconfig
from bench.train.loop import Run, next_eval, next_multiple, to_nimg
from bench.rundir import start_run

CPU = torch.device("cpu")


def test_schedules_are_whole_images():
    assert [to_nimg(k) for k in (0.004, 0.5, 1.024, 100.0)] == [4, 500, 1024, 100000]
    assert next_multiple(0, 500) == 500 and next_multiple(499, 500) == 500 and next_multiple(500, 500) == 1000
    assert next_multiple(1024, 100) == 1100


def test_log_spaced_evaluations_grow_by_the_factor_at_least_every_apart():
    assert [next_eval(n, 1000, 1.0) for n in (0, 999, 1000)] == [1000, 1000, 2000]  # growth 1: every 1000
    assert [next_eval(n, 1000, 2.0) for n in (0, 1000, 3000, 1024)] == [1000, 2000, 6000, 2048]
    assert next_eval(1024, 1000, 1.5) == 2000  # the next multiple when growth would be closer


def tiny_run(tmp_path):
    config = runconfig.resolve("gaussian", "sid", batch=8, kimg=0.016, eval_every=0.008, checkpoint_every=0.008,
                               sets={"suite.dim": 4, "suite.width": 16, "suite.depth": 1, "suite.n_eval": 64})
    run = Run(config, CPU, quiet=True)
    start_run(tmp_path, config, provenance={})
    run.attach(tmp_path)
    return run


def test_a_checkpoint_with_kimg_schedules_still_loads(tmp_path):
    run = tiny_run(tmp_path)
    assert run.train(lambda: False) == "done" and run.nimg == 16 and run.step == 2
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["progress"]["next_eval_nimg"] == 24 and state["progress"]["next_ckpt_nimg"] == 16
    p = state["progress"]  # as runs written before integer schedules stored it
    state["progress"] = {"step": p["step"], "nimg": p["nimg"], "wall_time": p["wall_time"],
                         "next_eval": 0.024, "next_ckpt": 0.016, "next_tick": 0.016}
    torch.save(state, tmp_path / "state.pt")
    (tmp_path / "state-prev.pt").unlink(missing_ok=True)
    again = tiny_run(tmp_path)
    assert again.load(truncate_logs=False) == ("state.pt", [])
    assert (again.nimg, again.next_eval, again.next_ckpt, again.next_tick) == (16, 24, 16, 16)
