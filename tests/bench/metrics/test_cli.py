import json

import numpy as np
import pytest
import torch

from bench.cli import main
from bench_helpers import save_pngs


@pytest.fixture
def sets(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (30, 3, 16, 16), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (40, 3, 16, 16), generator=g, dtype=torch.uint8)
    save_pngs(a, tmp_path / "a")
    np.savez(tmp_path / "b.npz", images=b.permute(0, 2, 3, 1).numpy())
    return tmp_path


def test_fid_text_and_json(sets, capsys):
    assert main(["fid", str(sets / "a"), str(sets / "b.npz"), "--extractor", "random-features", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for label in ("FID", "IS", "KID", "Precision", "Recall", "30 images"):
        assert label in out
    assert main(["fid", str(sets / "a"), str(sets / "b.npz"), "--extractor", "random-features", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["n_a"] == 30 and row["n_b"] == 40 and row["impl"].startswith("torch-fidelity")
    assert {"fid", "is", "kid", "precision", "recall"} <= set(row)


@pytest.mark.parametrize("case", ["empty", "missing", "extractor", "weights", "float"])
def test_fid_bad_input_exits_2_with_one_line(sets, capsys, case):
    (sets / "empty").mkdir()
    np.savez(sets / "float.npz", images=np.zeros((4, 8, 8, 3), np.float32))
    a, b, extractor = str(sets / "a"), str(sets / "b.npz"), "random-features"
    if case == "empty":
        a = str(sets / "empty")
    elif case == "missing":
        b = str(sets / "nothing")
    elif case == "extractor":
        extractor = "nope"
    elif case == "weights":
        extractor = "inception"
    else:
        a = str(sets / "float.npz")
    assert main(["fid", a, b, "--extractor", extractor]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and err.count("\n") == 1


def test_suite_extractor_imported_only_when_asked(sets, capsys, monkeypatch):
    import sys

    from bench.metrics import fidelity

    monkeypatch.delitem(sys.modules, "bench.suites.digits_features", raising=False)
    assert main(["fid", str(sets / "a"), str(sets / "b.npz"), "--extractor", "random-features"]) == 0
    assert "bench.suites.digits_features" not in sys.modules
    # the digits suite's module stands in as this test's random-features module
    monkeypatch.setitem(fidelity.EXTRACTORS.entries, "digits", "bench.metrics.random_features:spec")
    assert main(["fid", str(sets / "a"), str(sets / "b.npz"), "--extractor", "digits", "--json"]) == 0
    monkeypatch.setitem(fidelity.EXTRACTORS.entries, "digits", "bench.suites.no_such_module:extractor_spec")
    capsys.readouterr()
    assert main(["fid", str(sets / "a"), str(sets / "b.npz"), "--extractor", "digits"]) == 2
    assert "no_such_module" in capsys.readouterr().err
