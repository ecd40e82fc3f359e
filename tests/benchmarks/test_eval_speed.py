"""In-memory evaluation vs the usual route (write PNGs, run torch-fidelity on the folder).

Same extractor (random-features), same images, same cached reference, same torch-fidelity
settings. The in-memory route extracts the samples' features once in memory for every metric and
computes KID with bench.metrics.kid (torch-fidelity's subsets and estimator, from full kernels in
float64); the PNG route is torch-fidelity's ``calculate_metrics`` on a folder. Run with
``pytest tests/benchmarks/test_eval_speed.py --benchmark-only -p no:cacheprovider``; the last test
prints the ratio of mean times. Wall-clock numbers on a shared machine are noisy.
"""
import shutil

import pytest
import torch
import torch_fidelity

from bench.metrics.fidelity import FidelityEvaluator, _rename
from bench_helpers import save_pngs

N = 2000
TIMES = {}


SETS = {"fid+is": ("fid", "is"), "all": ("fid", "is", "kid", "prc")}


@pytest.fixture(scope="module", params=list(SETS))
def setup(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-speed")
    g = torch.Generator().manual_seed(0)
    reference = torch.randint(0, 256, (N, 3, 32, 32), generator=g, dtype=torch.uint8)
    generated = torch.randint(0, 200, (N, 3, 32, 32), generator=g, dtype=torch.uint8)
    evaluator = FidelityEvaluator(reference, extractor="random-features", cache_root=root / "cache",
                                  reference_key="bench-noise", batch_size=250, metrics=SETS[request.param])
    expected = evaluator.compute(generated)  # also warms the reference cache for both routes
    return request.param, root, evaluator, generated, expected


def png_route(root, evaluator, generated):
    """What the usual scripts do: PNGs on disk, then torch-fidelity on the folder."""
    folder = root / "samples"
    shutil.rmtree(folder, ignore_errors=True)
    save_pngs(generated, folder)
    flags = {{"is": "isc"}.get(m, m): True for m in evaluator.metrics}
    raw = torch_fidelity.calculate_metrics(input1=str(folder), input2=evaluator.reference_input,
                                           input2_cache_name="reference", cache_root=str(evaluator.cache_dir),
                                           **flags, **evaluator._kwargs(generated.shape[0]))
    return _rename(raw)


def assert_same_values(png, memory):
    """FID, IS and precision/recall identical (same pixels, same features); KID to torch-fidelity's float32
    rounding (the in-memory route sums its kernels in float64: bench.metrics.kid)."""
    assert {k: v for k, v in png.items() if k != "kid"} == {k: v for k, v in memory.items() if k != "kid"}
    if "kid" in png:
        assert memory["kid"] == pytest.approx(png["kid"], rel=1e-4, abs=1e-7)


def test_in_memory(benchmark, setup):
    name, root, evaluator, generated, expected = setup
    benchmark.group = f"{name}, {N} samples"
    space = evaluator.feature_space()
    # each round extracts the samples' features afresh (within one evaluation they are shared)
    result = benchmark.pedantic(lambda: (space.forget(), evaluator.compute(generated))[1], rounds=3, iterations=1,
                                warmup_rounds=1)
    TIMES[name, "memory"] = benchmark.stats.stats.mean
    assert result == expected


def test_png_folder(benchmark, setup):
    name, root, evaluator, generated, expected = setup
    benchmark.group = f"{name}, {N} samples"
    result = benchmark.pedantic(png_route, args=(root, evaluator, generated), rounds=3, iterations=1, warmup_rounds=1)
    TIMES[name, "png"] = benchmark.stats.stats.mean
    assert_same_values(result, expected)


def test_ratio(benchmark):
    benchmark.group = "ratio"
    benchmark.pedantic(lambda: None, rounds=1)
    for name in SETS:
        if (name, "png") in TIMES and (name, "memory") in TIMES:
            png, mem = TIMES[name, "png"], TIMES[name, "memory"]
            print(f"\n{name}: PNG route / in-memory route, mean of 3 for {N} samples: "
                  f"{png:.3f} s / {mem:.3f} s = {png / mem:.2f}x")
