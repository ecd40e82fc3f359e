"""The study's sweep files ask for what issue 16 requires (and the demo stays the study's shape)."""
from pathlib import Path

import numpy as np

import methods
from bench.train.launch import expand, load_sweep

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def runs(name, quick=False):
    return [c for c in expand(load_sweep(CONFIGS / name, quick=quick)) if c["method"] != "teacher"]


def test_study_grid_covers_every_method_lr_decades_batches_and_seeds():
    study = runs("digits-study.yaml")
    assert {c["method"] for c in study} == set(methods.available())
    lrs = sorted({c["lr_g"] for c in study})
    assert len(lrs) >= 5 and lrs[0] == 1e-5 and lrs[-1] == 1e-3
    assert np.allclose(np.diff(np.log10(lrs)), 0.5, atol=0.01)  # log-spaced
    assert {c["batch"] for c in study} == {64, 256} and len({c["seed"] for c in study}) >= 3
    assert len({c["kimg"] for c in study}) == 1
    cells = {(c["method"], c["lr_g"], c["batch"]) for c in study}
    assert all(sum(1 for c in study if (c["method"], c["lr_g"], c["batch"]) == cell) >= 3 for cell in cells)


def test_sim_variants_sit_at_the_sim_figure_settings_with_the_study_budget():
    variants = runs("digits-study-sim.yaml")
    study = runs("digits-study.yaml")
    assert {(c["lr_g"], c["batch"]) for c in variants} == {(1e-4, 256), (1e-5, 256)}
    assert {(c["hparams"]["d_term"], c["hparams"]["normaliser"]) for c in variants} == {
        (True, "sid"), (False, "sid"), (True, "none"), (False, "none")}
    assert {c["kimg"] for c in variants} == {c["kimg"] for c in study}
    exact = {c["run_id"] for c in variants if c["hparams"]["d_term"] and c["hparams"]["normaliser"] == "sid"}
    assert exact <= {c["run_id"] for c in study}  # the exact form's runs are shared, not repeated


def test_demo_keeps_the_study_shape():
    demo = runs("digits-robustness.yaml")
    assert {c["method"] for c in demo} == set(methods.available()) and len({c["lr_g"] for c in demo}) >= 3
    assert [c["method"] for c in expand(load_sweep(CONFIGS / "digits-robustness.yaml"))][0] == "teacher"
