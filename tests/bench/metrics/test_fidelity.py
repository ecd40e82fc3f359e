import os

import numpy as np
import pytest
import torch
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from bench.errors import BadInput
from bench.metrics import fidelity
from bench.metrics.fidelity import FidelityEvaluator, ImageDataset, register_extractor
from bench.metrics.random_features import RandomFeatures
from bench.metrics.base import Measurement


def images(n, c=3, size=16, seed=0, low=0, high=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, c, size, size), generator=g, dtype=torch.uint8)


@pytest.fixture
def seen(monkeypatch):
    """Counts the images the random-features extractor processes."""
    counter = {"n": 0}
    forward = RandomFeatures.forward

    def counting(self, x):
        counter["n"] += x.shape[0]
        return forward(self, x)

    monkeypatch.setattr(RandomFeatures, "forward", counting)
    return counter


def evaluator(reference, tmp_path, **kw):
    kw.setdefault("extractor", "random-features")
    return FidelityEvaluator(reference, cache_root=tmp_path / "cache", batch_size=32, **kw)


def test_all_metrics_end_to_end(tmp_path):
    ref = images(120, seed=1)
    out = evaluator(ref, tmp_path, reference_key="noise").evaluate(images(60, seed=2))
    assert [m.metric for m in out] == ["fid", "is", "kid", "precision", "recall"]
    assert all(isinstance(m, Measurement) and m.n_samples == 60 for m in out)
    assert all(m.impl == f"torch-fidelity {torch_fidelity.__version__}/random-features" for m in out)
    values = {m.metric: m.value for m in out}
    assert values["fid"] > 0 and values["is"] >= 1 and 0 <= values["precision"] <= 1 and 0 <= values["recall"] <= 1


@pytest.mark.slow
def test_distances_order_distributions(tmp_path):
    ref = images(100, seed=1)
    ev = evaluator(ref, tmp_path, reference_key="noise", metrics=("fid", "kid", "prc"))
    same = ev.compute(ref)
    close = ev.compute(images(100, seed=3))
    dark = ev.compute(images(100, seed=3, high=64))
    assert same["fid"] == pytest.approx(0, abs=1e-6) and same["precision"] == 1 and same["recall"] == 1
    assert 0 < close["fid"] < dark["fid"] and close["kid"] < dark["kid"]
    assert dark["precision"] < close["precision"]


def test_float_samples_are_quantised_with_to_uint8(tmp_path):
    ref = images(50, seed=1)
    ev = evaluator(ref, tmp_path, metrics=("fid",))
    x = torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    from bench.metrics.images import to_uint8
    assert ev.compute(x) == ev.compute(to_uint8(x))


def test_reference_features_cached_and_reused(tmp_path, seen):
    ref, gen = images(100, seed=1), images(30, seed=2)
    first = evaluator(ref, tmp_path, reference_key="noise-train").compute(gen)
    assert seen["n"] == 130
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*.pt"))
    assert files, "reference features were not cached"
    second = evaluator(ref, tmp_path, reference_key="noise-train").compute(gen)  # a new evaluator, same key
    assert seen["n"] == 130, "features were recomputed (the reference's are cached, the samples' shared)"
    assert second == first
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*.pt")) == files


def test_reference_made_by_a_function_is_made_once_per_key(tmp_path, seen):
    """A lazy reference (the FD-to-teacher one) is drawn only when the cache misses, and gives the same FID."""
    ref, gen = images(100, seed=1), images(30, seed=2)
    made = []

    def make():
        made.append(1)
        return ref

    lazy = dict(reference_key="teacher-abc", reference_size=100, metrics=("fid",))
    first = evaluator(make, tmp_path, **lazy).compute(gen)
    second = evaluator(make, tmp_path, **lazy).compute(gen)  # a new evaluator: the cached reference
    assert len(made) == 1 and first == second
    direct = evaluator(ref, tmp_path / "direct", reference_key="noise", metrics=("fid",)).compute(gen)
    assert first["fid"] == pytest.approx(direct["fid"], rel=1e-9)
    with pytest.raises(ValueError, match="reference_size"):
        evaluator(make, tmp_path, reference_key="teacher-abc")


def test_fd_to_teacher_is_torch_fidelity_fid_on_the_same_two_sets(tmp_path):
    """Renamed(FidelityEvaluator(teacher samples)) reports torch-fidelity's own FID between the two sets."""
    from bench.metrics.base import Combined, Renamed
    from bench.metrics.fidelity import ImageDataset

    teacher, gen = images(80, seed=4), images(40, seed=5)
    to_teacher = Renamed(evaluator(lambda: teacher, tmp_path, reference_key="t", reference_size=80, metrics=("fid",)),
                         {"fid": "fd_teacher"})
    both = Combined(evaluator(images(60, seed=6), tmp_path, reference_key="real", metrics=("fid",)), to_teacher,
                    n_final=70)
    out = {m.metric: m.value for m in both.evaluate(gen)}
    expected = torch_fidelity.calculate_metrics(
        input1=ImageDataset(gen), input2=ImageDataset(teacher), fid=True, feature_extractor="random-features",
        batch_size=32, verbose=False, cuda=False, save_cpu_ram=True)["frechet_inception_distance"]
    assert set(out) == {"fid", "fd_teacher"} and out["fd_teacher"] == pytest.approx(expected, rel=1e-9)
    assert (both.n_samples, both.n_final) == (10000, 70)  # FidelityEvaluator's default count, the final given


def test_cache_key_names_dataset_resolution_extractor_weights(tmp_path):
    register_extractor("tiny-test", TinyExtractor)
    a = evaluator(images(20, size=16), tmp_path, reference_key="digits-heldout")
    keys = {
        a.cache_key,
        evaluator(images(20, size=8), tmp_path, reference_key="digits-heldout").cache_key,
        evaluator(images(20, size=16), tmp_path, reference_key="digits-train").cache_key,
        evaluator(images(20, size=16), tmp_path, reference_key="digits-heldout", extractor="tiny-test").cache_key,
    }
    assert len(keys) == 4
    for part in ("digits-heldout", "16x16", "random-features", "seed0"):
        assert part in a.cache_key
    # without a key, the content decides: different images never share an entry
    assert evaluator(images(20, seed=5), tmp_path).cache_key != evaluator(images(20, seed=6), tmp_path).cache_key


def test_statistics_file_reference(tmp_path):
    ref, gen = images(100, seed=1), images(50, seed=2)
    expected = evaluator(ref, tmp_path, metrics=("fid", "is")).compute(gen)
    extractor = RandomFeatures("random-features", ["pool"]).eval()
    with torch.no_grad():
        feats = extractor(ref)[0].double().numpy()
    np.savez(tmp_path / "stats.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    got = evaluator(str(tmp_path / "stats.npz"), tmp_path).compute(gen)
    assert set(got) == {"fid", "is"}  # kid and prc need reference features
    assert got["fid"] == pytest.approx(expected["fid"], rel=1e-5)
    assert got["is"] == pytest.approx(expected["is"], rel=1e-9)
    np.savez(tmp_path / "wrong.npz", mu=np.zeros(5), sigma=np.eye(5))
    with pytest.raises(BadInput, match="features"):
        evaluator(str(tmp_path / "wrong.npz"), tmp_path).compute(gen)


def test_folder_and_npz_references_match_tensor(tmp_path):
    from bench_helpers import save_pngs

    ref, gen = images(40, seed=1), images(30, seed=2)
    save_pngs(ref, tmp_path / "ref")
    np.savez(tmp_path / "ref.npz", images=ref.permute(0, 2, 3, 1).numpy())
    expected = evaluator(ref, tmp_path).compute(gen)
    assert evaluator(str(tmp_path / "ref"), tmp_path).compute(gen) == expected
    assert evaluator(tmp_path / "ref.npz", tmp_path).compute(gen) == expected


def test_small_sets_scale_kid_subset(tmp_path):
    out = evaluator(images(12, seed=1), tmp_path, metrics=("kid",)).compute(images(10, seed=2))
    assert np.isfinite(out["kid"])


def test_inception_score_without_reference(tmp_path):
    out = evaluator(None, tmp_path, metrics=("is",)).compute(images(20))
    assert set(out) == {"is"}
    with pytest.raises(BadInput, match="reference"):
        evaluator(None, tmp_path)


class TinyExtractor(FeatureExtractorBase):
    """A registered random extractor that needs RGB input (grayscale must arrive repeated)."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        self.proj = torch.nn.Linear(3, 8)

    @staticmethod
    def get_provided_features_list():
        return ("f", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logits" if metric == "isc" else "f"

    def forward(self, x):
        assert x.shape[1] == 3
        f = self.proj(x.float().mean((2, 3)) / 255)
        out = {"f": f, "logits": f[:, :4]}
        return tuple(out[k] for k in self.features_list)


def test_registered_extractor_and_gray_images(tmp_path, monkeypatch):
    register_extractor("tiny-test", TinyExtractor)
    register_extractor("tiny-test", TinyExtractor)  # twice: harmless
    with pytest.raises(ValueError, match="taken"):
        register_extractor("tiny-test", RandomFeatures)
    monkeypatch.setitem(fidelity.EXTRACTORS.entries, "tiny-rgb", lambda: fidelity.ExtractorSpec(
        "tiny-test", weights_id="random", impl="tiny", channels=3))
    gray = images(30, c=1, seed=1)
    out = evaluator(gray, tmp_path, extractor="tiny-rgb").evaluate(images(20, c=1, seed=2))
    assert {m.metric for m in out} == {"fid", "is", "kid", "precision", "recall"}
    assert out[0].impl.endswith("/tiny")
    item = ImageDataset(gray, channels=3)[0]
    assert item.shape == (3, 16, 16) and item.dtype == torch.uint8 and torch.equal(item[2], gray[0, 0])
    assert ImageDataset(gray, channels=None)[0].shape == (1, 16, 16)


def test_bad_input(tmp_path, monkeypatch):
    ref = images(20)
    with pytest.raises(BadInput, match="unknown feature extractor"):
        evaluator(ref, tmp_path, extractor="nope")
    with pytest.raises(BadInput, match="unknown metric"):
        evaluator(ref, tmp_path, metrics=("fid", "lpips"))
    with pytest.raises(BadInput, match="no PNG"):
        (tmp_path / "empty").mkdir()
        evaluator(str(tmp_path / "empty"), tmp_path)
    ev = evaluator(ref, tmp_path)
    for bad, words in [(torch.zeros(4, 3, 16, 16, dtype=torch.int64), "uint8"),
                       (torch.zeros(4, 2, 16, 16, dtype=torch.uint8), "channels"),
                       (torch.zeros(16, 16, dtype=torch.uint8), "N x C x H x W"),
                       (images(1), "at least 2")]:
        with pytest.raises(BadInput, match=words):
            ev.evaluate(bad)
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(BadInput, match="weights-inception-2015-12-05-6726825d.pth.*bench weights fetch inception"):
        FidelityEvaluator(ref)


# Real weights: torch-fidelity's own checks against the TensorFlow reference implementation.

def _inception_or_skip():
    from bench.weights import locate

    if locate("inception") is None:
        pytest.skip("needs weights-inception-2015-12-05-6726825d.pth (bench weights fetch inception)")


def _cifar10_or_skip(train: bool, n: int) -> torch.Tensor:
    import torchvision

    root = os.path.join(torch.hub.get_dir().rsplit("/hub", 1)[0], "fidelity_datasets")
    try:
        ds = torchvision.datasets.CIFAR10(root=root, train=train, download=False)
    except RuntimeError:
        pytest.skip(f"needs CIFAR-10 (cifar-10-python.tar.gz extracted) under {root}")
    return torch.from_numpy(ds.data[:n]).permute(0, 3, 1, 2).contiguous()


def test_real_inception_score_first_100_cifar10_train(tmp_path):
    _inception_or_skip()
    x = _cifar10_or_skip(train=True, n=100)
    out = FidelityEvaluator(None, metrics=("is",), cache_root=tmp_path).compute(x)
    assert out["is"] == pytest.approx(4.51089784587268, abs=1e-4)


def test_real_fid_5k_train_vs_5k_test(tmp_path):
    _inception_or_skip()
    train, test = _cifar10_or_skip(True, 5000), _cifar10_or_skip(False, 5000)
    out = FidelityEvaluator(test, metrics=("fid",), cache_root=tmp_path, reference_key="cifar10-test5k").compute(train)
    assert out["fid"] == pytest.approx(10.3233274, rel=1e-5)


def test_registered_dataset_reference_is_never_downloaded(tmp_path, seen):
    from torch_fidelity.registry import DATASETS_REGISTRY

    calls = []

    def create(root, download):
        calls.append(download)
        return ImageDataset(images(40, seed=1))

    if "bench-test-noise" not in DATASETS_REGISTRY:
        torch_fidelity.register_dataset("bench-test-noise", create)
    else:
        DATASETS_REGISTRY["bench-test-noise"] = create
    ev = evaluator("bench-test-noise", tmp_path, datasets_root=str(tmp_path / "data"))
    first = ev.compute(images(20, seed=2))
    second = ev.compute(images(20, seed=2))
    assert calls and not any(calls)  # asked with download=False
    assert first == second and seen["n"] == 40 + 20  # the dataset's features cached, the samples' shared


def test_missing_registered_dataset_is_bad_input(tmp_path):
    ev = evaluator("cifar10-train", tmp_path, datasets_root=str(tmp_path / "nothing-here"))
    with pytest.raises(BadInput, match="cifar10-train.*never downloaded"):
        ev.compute(images(10))
    assert not (tmp_path / "nothing-here" / "cifar-10-python.tar.gz").exists()


@pytest.fixture
def random_inception_weights(tmp_path, monkeypatch):
    """A weight file with torch-fidelity's Inception keys but random values, where find_weight looks."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    with monkeypatch.context() as m:
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        m.setattr(torch, "load", lambda *a, **k: None)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused")
    path = tmp_path / "weights" / "weights-inception-2015-12-05-6726825d.pth"
    path.parent.mkdir()
    torch.manual_seed(0)
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow
def test_inception_route_with_local_weight_file(tmp_path, random_inception_weights):
    # IS alone on four images: Inception at 299x299 on a CPU is slow; FID's path is the same glue
    ev = FidelityEvaluator(None, metrics=("is",), cache_root=tmp_path / "cache")
    out = ev.evaluate(images(4, c=1, size=8, seed=2))  # grayscale repeated to RGB for Inception
    assert [m.metric for m in out] == ["is"] and np.isfinite(out[0].value) and out[0].value >= 1
    assert out[0].impl == f"torch-fidelity {torch_fidelity.__version__}/inception-v3-compat"
    from bench.weights import sha256_file
    assert sha256_file(random_inception_weights)[:16] in ev.cache_key  # other weights, other cache entry


def test_interrupted_cache_is_rebuilt(tmp_path):
    ref, gen = images(40, seed=1), images(20, seed=2)
    ev = evaluator(ref, tmp_path, reference_key="noise")
    expected = ev.compute(gen)
    assert (ev.cache_dir / "complete").exists()
    for f in ev.cache_dir.glob("*.pt"):  # a run killed while torch-fidelity wrote its files
        f.write_bytes(b"torn")
    (ev.cache_dir / "complete").unlink()
    assert evaluator(ref, tmp_path, reference_key="noise").compute(gen) == expected
