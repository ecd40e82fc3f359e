"""The digits suite on a miniature configuration: data split, cache, teacher, classifier, parts."""
import json
from pathlib import Path

import pytest
import torch

from bench.errors import BadInput
from bench.metrics.images import to_uint8
from bench.suites import digits
from bench.suites.digits import DigitsSuite, cached, load_split

TINY = dict(channels=8, channel_mult=[1, 2], teacher_kimg=1.0, teacher_batch=32, classifier_epochs=1,
            teacher_steps=4, n_eval=64, n_eval_final=64, n_teacher_reference=128, kid_subset_size=32)
DIVERSITY = ("prdc_precision", "prdc_recall", "density", "coverage", "vendi", "class_balance")


@pytest.fixture
def suite(tmp_path):
    """A tiny digits suite whose cache lives in the test's temporary directory."""
    return DigitsSuite(cache_dir=str(tmp_path / "cache"), **TINY)


@pytest.fixture
def trained(suite):
    suite.train_teacher(torch.device("cpu"))
    return suite


def test_split_is_fixed_stratified_and_in_range():
    a, b = load_split(), load_split()
    assert a["x_train"].shape == (1437, 1, 8, 8) and a["x_held"].shape == (360, 1, 8, 8)
    assert torch.equal(a["x_held"], b["x_held"]) and torch.equal(a["y_train"], b["y_train"])
    assert a["x_train"].min() == -1 and a["x_train"].max() == 1
    counts = torch.bincount(a["y_held"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 10 classes, about 36 each


def test_cache_trains_once_per_configuration(tmp_path):
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.ones(2) * len(calls)}, {"note": "x"}

    p1 = cached(tmp_path, "thing", {"a": 1}, train)
    p2 = cached(tmp_path, "thing", {"a": 1}, train)
    p3 = cached(tmp_path, "thing", {"a": 2}, train)
    assert p1 == p2 != p3 and len(calls) == 2
    state, info = digits.load_cached(p1)
    assert torch.equal(state["w"], torch.ones(2)) and info["config"] == {"a": 1} and info["note"] == "x"
    assert json.loads((p1.parent / "info.json").read_text())["kind"] == "thing"
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_leaves_nothing_when_training_fails(tmp_path):
    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cached(tmp_path, "thing", {"a": 1}, boom)
    assert not list(tmp_path.rglob("*.pt"))
    assert cached(tmp_path, "thing", {"a": 1}, lambda: ({}, {})).exists()


def test_cache_root_follows_option_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "env"))
    assert digits.cache_root(None) == tmp_path / "env" / "digits"
    assert digits.cache_root(str(tmp_path / "opt")) == tmp_path / "opt"
    monkeypatch.delenv("BENCH_CACHE")
    assert digits.cache_root(None).parts[-3:] == (".cache", "distill-bench", "digits")


def test_teacher_trains_once_and_lowers_the_edm_loss(suite, monkeypatch):
    path = suite.train_teacher(torch.device("cpu"))
    assert path.exists() and path.parent.name.startswith("teacher-")
    assert (path.parent.parent / next(p.name for p in path.parent.parent.iterdir() if p.name.startswith("classifier-"))).is_dir()
    monkeypatch.setattr(digits, "train_denoiser", lambda *a: pytest.fail("retrained a cached teacher"))
    assert suite.train_teacher(torch.device("cpu")) == path

    def edm_loss(net):
        gen = torch.Generator().manual_seed(0)
        y = suite.data["x_held"]
        sigma = (torch.randn(len(y), generator=gen) * 1.2 - 1.2).exp()
        n = torch.randn(y.shape, generator=gen)
        w = ((sigma**2 + 0.25) / (sigma * 0.5) ** 2).reshape(-1, 1, 1, 1)
        with torch.no_grad():
            return (w * (net(y + sigma.reshape(-1, 1, 1, 1) * n, sigma) - y).square()).mean().item()

    untrained = digits.make_denoiser(suite.teacher_config()["net"])
    assert edm_loss(suite.load_teacher(torch.device("cpu"))) < 0.8 * edm_loss(untrained)


def test_teacher_cache_key_covers_its_configuration(tmp_path):
    base = DigitsSuite(cache_dir=str(tmp_path), **TINY)
    keys = {digits.config_hash(base.teacher_config())}
    for change in ({"channels": 16}, {"teacher_lr": 1e-3}, {"teacher_seed": 1}, {"teacher_kimg": 2.0}):
        keys.add(digits.config_hash(DigitsSuite(cache_dir=str(tmp_path), **{**TINY, **change}).teacher_config()))
    assert len(keys) == 5
    same = DigitsSuite(cache_dir=str(tmp_path), **{**TINY, "teacher_steps": 9, "n_eval": 5})
    assert digits.config_hash(same.teacher_config()) in keys


def test_build_initialises_generator_and_fake_from_the_teacher(trained):
    parts = trained.build(2.5, torch.device("cpu"))
    z = torch.randn(6, *trained.latent_shape)
    with torch.no_grad():
        x_g = parts.generator(z)
        expected = parts.teacher(2.5 * z, torch.full((6,), 2.5))
        x = torch.randn(6, 1, 8, 8)
        sigma = torch.rand(6) + 0.1
        torch.testing.assert_close(parts.fake(x, sigma), parts.teacher(x, sigma))
    assert x_g.shape == (6, 1, 8, 8)
    torch.testing.assert_close(x_g, expected)
    assert not any(p.requires_grad for p in parts.teacher.parameters())
    assert all(p.requires_grad for p in parts.generator.parameters())
    assert all(p.requires_grad for p in parts.fake.parameters())
    with torch.no_grad():  # copies, not shared parameters
        next(parts.generator.parameters()).add_(1.0)
    assert not torch.equal(next(parts.generator.parameters()), next(parts.teacher.parameters()))
    assert trained.sample_cond(4, torch.Generator()) is None


def test_teacher_sampler_and_real_data(trained):
    teacher = trained.load_teacher(torch.device("cpu"))
    z = torch.randn(5, 1, 8, 8)
    x = trained.teacher_sample(teacher, z)
    assert x.shape == z.shape and torch.isfinite(x).all()
    assert trained.teacher_info() == {"sampler": "heun", "steps": 4}
    real, cond = trained.real_data(7, torch.Generator().manual_seed(3))
    again, _ = trained.real_data(7, torch.Generator().manual_seed(3))
    assert real.shape == (7, 1, 8, 8) and cond is None and torch.equal(real, again)
    train = trained.data["x_train"].flatten(1)
    assert all((train == r.flatten()).all(1).any() for r in real)


@pytest.mark.slow
def test_classifier_reaches_97_percent_held_out(tmp_path, monkeypatch):
    """The real classifier configuration (a few seconds on the CPU), found as `bench fid` finds it."""
    from bench.metrics import fidelity

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    spec = fidelity.resolve_extractor("digits")  # through the extractor registry: trains the default classifier
    path = Path(spec.kwargs["feature_extractor_weights_path"])
    assert path.parent.parent == tmp_path / "digits" and spec.weights_id == path.parent.name
    _, info = digits.load_cached(path)
    net = digits.load_classifier(path)
    data = load_split()
    assert info["held_out_accuracy"] >= 0.97
    assert digits.classifier_accuracy(net, data["x_held"], data["y_held"]) == pytest.approx(info["held_out_accuracy"])


def test_extractor_reads_uint8_with_one_or_three_channels(trained):
    from bench.suites.digits_features import DigitsFeatureExtractor

    path = trained.train_classifier()
    extractor = DigitsFeatureExtractor("digits", ["features", "logits"], feature_extractor_weights_path=str(path))
    u = to_uint8(trained.data["x_held"][:10])
    f1, logits1 = extractor(u)
    f3, logits3 = extractor(u.expand(-1, 3, -1, -1))
    assert f1.shape == (10, 64) and logits1.shape == (10, 10)
    torch.testing.assert_close(f1, f3)
    torch.testing.assert_close(logits1, logits3)
    with pytest.raises(BadInput, match="uint8"):
        extractor(u.float())
    with pytest.raises(BadInput, match="8, 8"):
        extractor(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(BadInput, match="weights_path"):
        DigitsFeatureExtractor("digits", ["features"])


def test_unknown_option_is_bad_input():
    with pytest.raises(BadInput, match="chanels"):
        DigitsSuite(chanels=8)


def test_shift_augmentation_translates_by_at_most_one_pixel():
    x = torch.rand(50, 1, 8, 8)
    out = digits._shift(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, [1] * 4, value=-1.0)
    for img, src in zip(out, padded):
        assert any(torch.equal(img, src[:, dy:dy + 8, dx:dx + 8]) for dy in range(3) for dx in range(3))
    assert not torch.equal(out, x)  # some images moved


def test_dmd2_discriminator_head_on_the_unet_bottleneck(trained):
    from bench.nets.precond import BottleneckDiscriminator

    parts = trained.build(80.0, torch.device("cpu"))
    disc = BottleneckDiscriminator(parts.fake, trained.latent_shape)
    x = torch.randn(4, 1, 8, 8)
    logits = disc(x, torch.full((4,), 1.5))
    assert logits.shape == (4,)
    logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.fake.parameters())


def test_evaluator_scores_real_digits_above_noise(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "weights"))  # the reference cache goes there
    evaluator = trained.evaluator(torch.device("cpu"))
    assert evaluator.n_samples == 64
    real = trained.data["x_train"][:64]
    noise = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    on_real = {m.metric: m for m in evaluator.evaluate(real)}
    on_noise = {m.metric: m for m in evaluator.evaluate(noise)}
    assert set(on_real) == {"fid", "is", "kid", "precision", "recall", "fd_teacher", *DIVERSITY}
    assert all(m.n_samples == 64 and "digits classifier-" in m.impl for m in on_real.values())
    assert on_real["fid"].value < on_noise["fid"].value
    assert on_real["precision"].value > on_noise["precision"].value
    assert on_real["coverage"].value > on_noise["coverage"].value
    assert on_real["class_balance"].value > on_noise["class_balance"].value
    fractions = on_real["class_balance"].detail["class_fractions"]
    assert len(fractions) == 10 and sum(fractions) == pytest.approx(1)


@pytest.mark.slow
def test_distillation_run_from_the_teacher_is_evaluated(trained, tmp_path, monkeypatch, capsys):
    """A few SiD steps through the CLI: the first evaluation scores the teacher-initialised generator."""
    from bench.cli import main

    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    sets = [f"suite.{k}={json.dumps(v)}" for k, v in {**TINY, "cache_dir": trained.options["cache_dir"]}.items()]
    argv = ["run", "--suite", "digits", "--method", "sid", "--kimg", "0.128", "--batch", "32", "--eval-every", "0.064",
            "--checkpoint-every", "0.128", "--results", str(tmp_path / "results"), "--quiet"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["kimg"] for r in rows}) == [0.0, 0.064, 0.128]
    assert {r["metric"] for r in rows} == {"fid", "is", "kid", "precision", "recall", "fd_teacher", *DIVERSITY}
    assert all(len(r["detail"]["class_fractions"]) == 10 for r in rows if r["metric"] == "class_balance")
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"
    assert list((run_dir / "samples").glob("*.png"))


def test_two_fresh_trainings_are_bit_identical_and_evaluate_identically(tmp_path, monkeypatch, capsys):
    """Teacher and classifier trained twice from scratch (different caller threads and global RNG
    state): the same weights hash, and the teacher's baseline row scores exactly the same."""
    from bench.cli import main

    rows, hashes = [], []
    for i, threads in enumerate((2, 1)):
        torch.set_num_threads(threads)
        torch.manual_seed(100 + i)  # training must not depend on the caller's RNG
        cache = tmp_path / f"cache{i}"
        suite = DigitsSuite(cache_dir=str(cache), **TINY)
        try:
            suite.train_teacher(torch.device("cpu"))
            assert torch.get_num_threads() == threads  # the caller's setting is restored
        finally:
            torch.set_num_threads(1)
        hashes.append({p.parent.name.split("-")[0]: json.loads(p.read_text())["sha256"] for p in cache.glob("*/info.json")})
        monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / f"weights{i}"))  # reference statistics afresh too
        sets = [f"suite.{k}={json.dumps(v)}" for k, v in {**TINY, "cache_dir": str(cache)}.items()]
        assert main(["run", "--suite", "digits", "--method", "teacher", "--results", str(tmp_path / f"results{i}"),
                     "--quiet"] + [x for s in sets for x in ("--set", s)]) == 0
        run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
        rows.append([(r["metric"], r["value"], r["impl"]) for r in map(json.loads, (run_dir / "metrics.jsonl").open())])
    assert hashes[0] == hashes[1] and set(hashes[0]) == {"teacher", "classifier"}
    assert rows[0] == rows[1] and len(rows[0]) == 6 + len(DIVERSITY)
    assert all(f"sha256:{hashes[0]['classifier'][:12]}" in impl for _, _, impl in rows[0])
