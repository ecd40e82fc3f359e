"""The MSD comparison's sweep files: 4 routed students, DMD2's one student, and one student of ~4x the
parameters, all at one training compute budget, into one results folder."""
from pathlib import Path

import pytest

from bench.suites.digits import make_denoiser
from bench.suites.digits_cond import ConditionalDigitsSuite
from bench.train.launch import expand
from bench.train.sweepfile import load_sweep

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def runs(name):
    return [c for c in expand(load_sweep(CONFIGS / name)) if c["method"] != "teacher"]


def test_the_comparison_runs_at_equal_compute_into_one_folder():
    main, wide = runs("digits-msd.yaml"), runs("digits-msd-wide.yaml")
    assert {c["method"] for c in main} == {"msd", "dmd2"} and {c["method"] for c in wide} == {"dmd2"}
    assert {c["gflop"] for c in main + wide} == {1200} and {c["kimg"] for c in main + wide} == {None}
    assert {(c["lr_g"], c["batch"]) for c in main + wide} == {(3.16e-4, 64)}
    assert {c["hparams_in_use"]["router"] for c in main if c["method"] == "msd"} == {"0-2/3-4/5-7/8-9"}
    assert {c["suite_options"].get("student_channels") for c in wide} == {32}
    assert {c["hparams_in_use"]["student_channels"] for c in wide} == {32}  # in the config label
    assert all(c["suite_options"].get("student_channels") is None for c in main)
    assert load_sweep(CONFIGS / "digits-msd.yaml")["results"] == load_sweep(CONFIGS / "digits-msd-wide.yaml")["results"]


def test_the_wide_student_has_about_four_times_the_parameters():
    net = ConditionalDigitsSuite().teacher_config()["net"]
    count = lambda channels: sum(p.numel() for p in make_denoiser({**net, "channels": channels}).parameters())  # noqa: E731
    assert count(32) / count(16) == pytest.approx(4, rel=0.02)


def test_an_unset_student_width_keeps_run_ids():
    """The option is kept only when set: the suite options of every earlier digits_cond run are unchanged."""
    assert "student_channels" not in ConditionalDigitsSuite().options
    assert ConditionalDigitsSuite(student_channels=32).student_info() == {"student_channels": 32}
    assert ConditionalDigitsSuite().student_info() == {}
