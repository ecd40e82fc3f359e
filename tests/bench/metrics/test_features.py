"""bench.metrics.features: one extractor pass per evaluation, shared by every metric of a feature space."""
import torch

from bench.metrics.base import Combined
from bench.metrics.diversity import DiversityEvaluator
from bench.metrics.features import FeatureSpace, shared
from bench.metrics.fidelity import FidelityEvaluator
from bench.metrics.random_features import RandomFeatures


def images(n, seed=0):
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_every_metric_of_a_space_reads_one_pass_over_the_samples(tmp_path, monkeypatch):
    counted = []
    forward = RandomFeatures.forward
    monkeypatch.setattr(RandomFeatures, "forward", lambda self, x: counted.append(x.shape[0]) or forward(self, x))
    ref, gen = images(60, seed=1), images(40, seed=2)
    fidelity = FidelityEvaluator(ref, extractor="random-features", cache_root=tmp_path, batch_size=32)
    to_other = FidelityEvaluator(images(50, seed=3), extractor="random-features", cache_root=tmp_path,
                                 batch_size=32, metrics=("fid",))
    diversity = DiversityEvaluator(ref, extractor="random-features", metrics=("prdc", "vendi"), batch_size=32)
    rows = Combined(fidelity, diversity, to_other).evaluate(gen)
    assert {r.metric for r in rows} >= {"fid", "is", "kid", "precision", "coverage", "vendi"}
    assert sum(counted) == 60 + 50 + 60 + 40  # each reference once (fidelity's cached, diversity's kept), samples once
    counted.clear()
    assert Combined(fidelity, diversity, to_other).evaluate(gen) == rows and not counted
    Combined(fidelity, diversity, to_other).evaluate(images(40, seed=4))
    assert sum(counted) == 40  # new samples: one pass again


def test_shared_spaces_are_per_arguments_and_layers_add_up():
    space = shared("random-features", batch_size=16)
    assert shared("random-features", batch_size=16) is space and shared("random-features", batch_size=8) is not space
    x = images(20)
    both = space.by_layer(x, ["pool", "logits_unbiased"])
    alone = FeatureSpace("random-features", batch_size=16).by_layer(x, ["logits_unbiased"])
    assert torch.equal(both["logits_unbiased"], alone["logits_unbiased"])
    assert torch.equal(space.by_layer(x.clone(), ["pool"])["pool"], both["pool"])  # by content, not identity
