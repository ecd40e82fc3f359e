"""The diversity evaluator: PRDC, Vendi and class balance through a registered feature space."""
import pytest
import torch

from bench.errors import BadInput
from bench.metrics import coverage, registry
from bench.metrics.diversity import DiversityEvaluator
from bench.metrics.features import FeatureSpace


def images(n, c=3, size=16, seed=0, high=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, c, size, size), generator=g, dtype=torch.uint8)


def evaluator(reference, **kw):
    return DiversityEvaluator(reference, extractor="random-features", batch_size=32, **kw)


def test_names_are_registered_with_direction_and_space():
    ref = images(80, seed=1)
    out = evaluator(ref).evaluate(images(60, seed=2))
    names = [m.metric for m in out]
    assert names == ["prdc_precision", "prdc_recall", "density", "coverage", "vendi", "class_balance"]
    for m in out:
        entry = registry.get(m.metric)
        assert entry.impl == "bench.metrics.diversity:DiversityEvaluator" and entry.space == "suite"
        assert entry.direction == "higher" and m.n_samples == 60 and "random-features" in m.impl
    assert all(0 <= m.value <= 1 for m in out if m.metric not in ("density", "vendi"))


def test_the_reference_against_itself():
    ref = images(100, seed=1)
    ev = evaluator(ref)
    values = {m.metric: m.value for m in ev.evaluate(ref.clone())}
    assert values["prdc_precision"] == values["prdc_recall"] == values["coverage"] == 1
    classes = next(m for m in ev.evaluate(ref) if m.metric == "class_balance")
    assert classes.detail["class_fractions"] == classes.detail["reference_fractions"]
    assert classes.detail["max_deviation"] == 0 and len(classes.detail["class_fractions"]) == 10


def test_a_collapsed_generator_scores_low_coverage_and_vendi_one():
    ref = images(100, seed=1)
    collapsed = ref[:1].repeat(50, 1, 1, 1)
    values = {m.metric: m.value for m in evaluator(ref).evaluate(collapsed)}
    assert values["coverage"] < 0.2 and values["vendi"] == pytest.approx(1.0, abs=1e-6)
    assert values["class_balance"] == 0.0  # one image: one class


def test_values_equal_the_functions_on_the_extracted_features():
    ref, fake = images(70, seed=3), images(50, seed=4, high=128)
    space = FeatureSpace("random-features")
    expected = coverage.prdc(space.features(ref)["prc"], space.features(fake)["prc"], k=3)
    values = {m.metric: m.value for m in evaluator(ref, metrics=("prdc",), k=3).evaluate(fake)}
    assert values == {"prdc_" + k if k in ("precision", "recall") else k: v for k, v in expected.items()}


def test_float_samples_in_minus_one_one_are_quantised_like_fid():
    x = torch.rand(40, 3, 16, 16) * 2 - 1
    from bench.metrics.images import to_uint8

    ev = evaluator(None, metrics=("vendi",))
    assert ev.evaluate(x)[0].value == ev.evaluate(to_uint8(x))[0].value


def test_reference_function_is_called_once():
    calls = []

    def make():
        calls.append(1)
        return images(40, seed=5)

    ev = evaluator(make, metrics=("prdc",))
    ev.evaluate(images(20, seed=6))
    ev.evaluate(images(20, seed=7))
    assert calls == [1]


def test_bad_requests_are_bad_input():
    with pytest.raises(BadInput, match="unknown diversity metric fid"):
        evaluator(images(10), metrics=("fid",))
    with pytest.raises(BadInput, match="prdc needs reference"):
        evaluator(None, metrics=("prdc",))
    with pytest.raises(BadInput, match="more than 5"):
        evaluator(images(10)).evaluate(images(5))
