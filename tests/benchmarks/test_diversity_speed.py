"""The cost the coverage and diversity metrics add to one digits evaluation, beside FID's.

The digits suite's own evaluators (its cached classifier, all 1,797 digits as the reference, warm
reference caches: what every evaluation after the first sees) at the in-training count (2k) and the
final one (10k). Each round is a whole evaluation: the samples' features extracted afresh once and
shared by every metric (bench.metrics.features), so a part's added cost is its row minus the first.
Samples are training digits drawn with replacement plus a little noise: the cost
does not depend on what the samples look like. Run with
``python -m pytest tests/benchmarks/test_diversity_speed.py --benchmark-only -p no:cacheprovider -s``;
the table prints at the end. Wall-clock numbers on a shared machine are noisy.
"""
import pytest
import torch

from bench.metrics.diversity import DiversityEvaluator
from bench.metrics.fidelity import FidelityEvaluator
from bench.metrics.images import to_uint8

COUNTS = (2000, 10000)
PARTS = {"fid+is+kid+prc (existing)": None, "+ prdc": ("prdc",), "+ vendi": ("vendi",), "+ classes": ("classes",),
         "+ prdc+vendi+classes": ("prdc", "vendi", "classes")}
TIMES = {}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from bench.suites.digits import DigitsSuite

    suite = DigitsSuite()
    real = torch.cat([suite.data["x_train"], suite.data["x_held"]])
    g = torch.Generator().manual_seed(0)
    samples = {n: (real[torch.randint(0, len(real), (n,), generator=g)] + 0.1 * torch.randn(n, 1, 8, 8, generator=g))
               .clamp(-1, 1) for n in COUNTS}
    return suite.train_classifier(), to_uint8(real), samples, tmp_path_factory.mktemp("cache")


def make(part, path, reference, cache):
    from bench.metrics.base import Combined

    options = {"path": path}
    fidelity = FidelityEvaluator(reference, extractor="digits", extractor_options=options, reference_key="digits-all",
                                 metrics=("fid", "is", "kid", "prc"), kid_subset_size=300, cache_root=cache)
    if PARTS[part] is None:
        return fidelity, fidelity.feature_space()
    diversity = DiversityEvaluator(reference, extractor="digits", metrics=PARTS[part], extractor_options=options)
    return Combined(fidelity, diversity), fidelity.feature_space()


@pytest.mark.parametrize("n", COUNTS)
@pytest.mark.parametrize("part", list(PARTS))
def test_evaluation_time(benchmark, digits, part, n):
    path, reference, samples, cache = digits
    evaluator, space = make(part, path, reference, cache)
    evaluator.evaluate(samples[n])  # warm: reference statistics or features, the extractor
    benchmark.group = f"n={n}"
    benchmark.pedantic(lambda: (space.forget(), evaluator.evaluate(samples[n])), rounds=3, iterations=1)
    TIMES[(part, n)] = benchmark.stats.stats.mean


@pytest.fixture(scope="module", autouse=True)
def table():
    """Prints the table after the module's benchmarks (a plain test would be skipped by --benchmark-only)."""
    yield
    if TIMES:
        print_table()


def print_table():
    print(f"\nthreads {torch.get_num_threads()}; mean of 3, seconds")
    print("| metrics | " + " | ".join(f"n={n}" for n in COUNTS) + " |\n|---|" + "---|" * len(COUNTS))
    for part in PARTS:
        print(f"| {part} | " + " | ".join(f"{TIMES.get((part, n), float('nan')):.3f}" for n in COUNTS) + " |")
