"""Class-conditional digits on a miniature configuration: the label-dropout teacher, guidance, the metrics."""
import json
from pathlib import Path

import pytest
import torch

from bench.errors import BadInput
from bench.nets.guidance import GuidedDenoiser, one_hot
from bench.suites.digits import DigitsSuite, config_hash
from bench.suites.digits_cond import ConditionalDigitsSuite

TINY = dict(channels=8, channel_mult=[1, 2], teacher_kimg=1.0, teacher_batch=32, classifier_epochs=6,
            teacher_steps=4, n_eval=64, n_eval_final=64, n_teacher_reference=128, kid_subset_size=32)


@pytest.fixture
def trained(tmp_path):
    suite = ConditionalDigitsSuite(cache_dir=str(tmp_path / "cache"), guidance=3.0, **TINY)
    suite.train_teacher(torch.device("cpu"))
    return suite


def test_the_unconditional_teachers_key_is_unchanged_and_the_conditional_one_differs():
    assert config_hash(DigitsSuite().teacher_config()) == "91f5c7ea347f"  # the published study's teacher
    cond = ConditionalDigitsSuite().teacher_config()
    assert cond["net"]["label_dim"] == 10 and cond["train"]["label_dropout"] == 0.1
    assert config_hash(cond) != config_hash(ConditionalDigitsSuite(label_dropout=0.2).teacher_config())
    # the guidance scale changes how the teacher is sampled, not its weights
    assert config_hash(cond) == config_hash(ConditionalDigitsSuite(guidance=4.0).teacher_config())


def test_the_teacher_is_guided_and_the_students_copy_its_conditional_network(trained):
    parts = trained.build(80.0, torch.device("cpu"))
    assert isinstance(parts.teacher, GuidedDenoiser) and parts.teacher.scale == 3.0
    x = torch.randn(10, 1, 8, 8)
    sigma = torch.full((10,), 1.5)
    c = one_hot(torch.arange(10), 10)
    with torch.no_grad():
        null, conditional = parts.teacher.base(x, sigma), parts.teacher.base(x, sigma, c)
        assert torch.allclose(parts.teacher(x, sigma, c), null + 3.0 * (conditional - null), atol=1e-5)
        assert torch.allclose(parts.fake(x, sigma, c), conditional)  # the students start as the unguided network
        assert torch.allclose(parts.teacher.base(x, sigma, torch.zeros(10, 10)), null)  # all-zero row: null class
    assert not torch.allclose(conditional, null)  # the labels are used


def test_the_evaluator_adds_class_accuracy(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    evaluator = trained.evaluator(torch.device("cpu"))
    data = trained.data
    real, labels = data["x_train"][:64], data["y_train"][:64]
    right = {m.metric: m.value for m in evaluator.evaluate(real, one_hot(labels, 10))}
    wrong = {m.metric: m.value for m in evaluator.evaluate(real, one_hot((labels + 1) % 10, 10))}
    assert right["class_accuracy"] > wrong["class_accuracy"] + 0.5  # a 6-epoch classifier
    assert {"fid", "fd_teacher"} <= set(right)


def test_per_class_distances_see_mislabelled_classes_that_fid_cannot(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    evaluator = trained.evaluator(torch.device("cpu"))
    from bench.metrics.images import from_uint8

    real, real_y = trained.data["x_train"][:640], trained.data["y_train"][:640]
    teacher = from_uint8(trained.teacher_reference(torch.device("cpu"), 128))  # its own samples, labelled
    teacher_y = trained.reference_cond(128).argmax(1)
    for metric, x, y in (("fid_class", real, real_y), ("fd_teacher_class", teacher, teacher_y)):
        right = {m.metric: m for m in evaluator.evaluate(x, one_hot(y, 10))}
        wrong = {m.metric: m for m in evaluator.evaluate(x, one_hot((y + 1) % 10, 10))}
        assert right["fid"].value == pytest.approx(wrong["fid"].value)  # the same images, whatever their labels
        assert wrong[metric].value > 2 * right[metric].value
        per_class = right[metric].detail
        assert sorted(per_class) == [str(k) for k in range(10)]
        assert right[metric].value == pytest.approx(sum(per_class.values()) / 10, rel=1e-5)
    assert right["fd_teacher_class"].value < 1e-3 * wrong["fd_teacher_class"].value  # the reference itself
    # the teacher's per-class statistics are cached beside torch-fidelity's, and read back identically
    cached = list((tmp_path / "weights" / "fidelity-cache").glob("*-classes.npz"))
    assert len(cached) == 1
    again = trained.evaluator(torch.device("cpu"))
    monkeypatch.setattr(trained, "teacher_reference", lambda *a, **k: pytest.fail("the cache was not used"))
    value = {m.metric: m.value for m in again.evaluate(teacher, one_hot(teacher_y, 10))}["fd_teacher_class"]
    assert value == pytest.approx(right["fd_teacher_class"].value, abs=1e-6 * wrong["fd_teacher_class"].value)


def test_the_teacher_reference_depends_on_the_guidance(trained):
    assert trained.reference_tag() != ConditionalDigitsSuite(guidance=1.0).reference_tag()
    assert trained.reference_cond(20).argmax(1).tolist() == [i % 10 for i in range(20)]


@pytest.mark.parametrize("option, value", [("guidance", 0.0), ("label_dropout", 1.0), ("label_dropout", -0.1)])
def test_bad_options_are_refused(option, value):
    with pytest.raises(BadInput, match=f"suite.{option}"):
        ConditionalDigitsSuite(**{option: value})


@pytest.mark.slow
def test_a_guided_distillation_run_reports_class_accuracy(trained, tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    sets = [f"suite.{k}={json.dumps(v)}" for k, v in {**TINY, "cache_dir": trained.options["cache_dir"],
                                                       "guidance": 3.0}.items()]
    argv = ["run", "--suite", "digits_cond", "--method", "ddmd", "--kimg", "0.064", "--batch", "32",
            "--eval-every", "0.064", "--results", str(tmp_path / "results"), "--quiet"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["metric"] for r in rows} >= {"fid", "fd_teacher", "class_accuracy"}


@pytest.mark.slow
def test_a_multi_student_run_generates_each_class_from_its_student(trained, tmp_path, monkeypatch, capsys):
    """msd on digits_cond: 2 routed students, then ``bench generate`` draws from the EMA students."""
    from bench.cli import main

    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    sets = [f"suite.{k}={json.dumps(v)}" for k, v in {**TINY, "cache_dir": trained.options["cache_dir"],
                                                       "guidance": 3.0}.items()] + ["students=2"]
    argv = ["run", "--suite", "digits_cond", "--method", "msd", "--kimg", "0.064", "--batch", "32",
            "--eval-every", "0.064", "--results", str(tmp_path / "results"), "--quiet"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["metric"] for r in rows} >= {"fid", "class_accuracy"}
    out = tmp_path / "samples.npz"
    assert main(["generate", str(run_dir), "-o", str(out), "--n", "20", "--quiet"]) == 0
    import numpy as np

    images = np.load(out)
    labels = images["arr_1"].tolist()
    assert images["arr_0"].shape[0] == 20 and {c * 2 // 10 for c in labels} == {0, 1}  # both students drew


@pytest.mark.slow
def test_a_wider_student_starts_from_its_own_width_trained_by_the_teachers_recipe(trained, tmp_path):
    suite = ConditionalDigitsSuite(cache_dir=trained.options["cache_dir"], guidance=3.0, student_channels=16, **TINY)
    parts = suite.build(2.5, torch.device("cpu"))
    size = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert size(parts.generator) > 3 * size(parts.fake)  # 16 channels against the teacher's 8
    assert size(parts.fake) == size(parts.teacher.base)  # the fake score is still the teacher's copy
    x = torch.randn(4, 1, 8, 8)
    sigma, cond = torch.full((4,), 0.5), one_hot(torch.arange(4), 10)
    again = ConditionalDigitsSuite(cache_dir=trained.options["cache_dir"], guidance=3.0, student_channels=16, **TINY)
    assert torch.equal(again.build(2.5, torch.device("cpu")).generator.denoiser(x, sigma, cond),
                       parts.generator.denoiser(x, sigma, cond))  # cached: the same starting point
