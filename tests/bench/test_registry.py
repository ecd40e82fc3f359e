"""bench.registry: lazy tables with close-match errors; bench.metrics.registry: what a metric is."""
import importlib

import pytest

from bench import suites
from bench.errors import BadInput
from bench.metrics import registry as metric_registry
from bench.registry import Registry


def test_entries_import_on_first_use_and_unknown_names_suggest():
    reg = Registry("widget", {"json-dumps": "json:dumps", "given": len})
    assert reg.get("json-dumps") is importlib.import_module("json").dumps and reg.get("given") is len
    assert "given" in reg and reg.names() == ["json-dumps", "given"]
    with pytest.raises(BadInput, match=r"unknown widget 'json-dump'; did you mean json-dumps\?"):
        reg.get("json-dump")
    reg.register("late", "json:loads")
    assert reg.get("late") is importlib.import_module("json").loads


def test_suites_use_it():
    with pytest.raises(BadInput, match="did you mean gaussian"):
        suites.get("gausian")
    assert suites.get("gaussian").name == "gaussian"


def test_every_registered_metric_names_its_code_and_ranks_once():
    ranks = [m.headline for m in metric_registry.METRICS.values() if m.headline is not None]
    assert len(ranks) == len(set(ranks))
    for m in metric_registry.METRICS.values():
        assert m.direction in ("lower", "higher") and m.registered
        module, attr = m.impl.split(":")
        assert hasattr(importlib.import_module(module), attr), m.impl
    assert metric_registry.implemented_in("bench.metrics.t2i") == ("aesthetic", "image_reward", "pickscore_raw", "clip_score")


def test_unknown_and_unregistered_metrics():
    with pytest.raises(BadInput, match="did you mean fid"):
        metric_registry.get("fdi")
    info = metric_registry.info("mystery")
    assert not info.registered and info.label == "mystery" and info.direction == "unregistered"
