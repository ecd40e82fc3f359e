import hashlib
import types

import pytest

from bench import weights
from bench.errors import BadInput


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    for var, sub in [("BENCH_WEIGHTS_DIR", "w"), ("TORCH_HOME", "torch"), ("HF_HUB_CACHE", "hf"), ("HOME", "home")]:
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("HF_HOME", raising=False)
    return tmp_path


def test_registry_covers_every_weight():
    files = {w.filename for w in weights.REGISTRY.values()}
    for f in ["weights-inception-2015-12-05-6726825d.pth", "sac+logos+ava1-l14-linearMSE.pth", "ViT-L-14.pt",
              "ImageReward.pt", "med_config.json", "PickScore_v1", "CLIP-ViT-H-14-laion2B-s32B-b79K",
              "edm-cifar10-32x32-uncond-vp.pkl", "edm-cifar10-32x32-cond-vp.pkl", "edm-imagenet-64x64-cond-adm.pkl",
              "PixArt-XL-2-512x512"]:
        assert f in files
    assert all(w.url or w.hf_repo for w in weights.REGISTRY.values())


def test_missing_weight_names_file_and_fetch(dirs):
    with pytest.raises(BadInput, match=r"ViT-L-14\.pt.*bench weights fetch clip-vit-l-14"):
        weights.find_weight("clip-vit-l-14")
    with pytest.raises(BadInput, match="unknown weight"):
        weights.find_weight("nope")


def test_lookup_order_and_caches(dirs):
    hub = dirs / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "weights-inception-2015-12-05-6726825d.pth").write_bytes(b"x")
    assert weights.find_weight("inception") == hub / "weights-inception-2015-12-05-6726825d.pth"
    (dirs / "w").mkdir()
    (dirs / "w" / "weights-inception-2015-12-05-6726825d.pth").write_bytes(b"y")
    assert weights.find_weight("inception") == dirs / "w" / "weights-inception-2015-12-05-6726825d.pth"
    snap = dirs / "hf" / "models--yuvalkirstain--PickScore_v1" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    assert weights.locate("pickscore") is None  # an empty snapshot is not a model
    (snap / "config.json").write_text("{}")
    assert weights.find_weight("pickscore") == snap
    clip_dir = dirs / "home" / ".cache" / "clip"
    clip_dir.mkdir(parents=True)
    (clip_dir / "ViT-L-14.pt").write_bytes(b"z")
    assert weights.find_weight("clip-vit-l-14") == clip_dir / "ViT-L-14.pt"


def _args(action, *names):
    return types.SimpleNamespace(action=action, names=list(names))


def test_check_exit_status_and_checksum(dirs, capsys, monkeypatch):
    assert weights.cli_weights(_args("check", "aesthetic-head")) == 1
    assert "bench weights fetch aesthetic-head" in capsys.readouterr().out
    (dirs / "w").mkdir()
    (dirs / "w" / "sac+logos+ava1-l14-linearMSE.pth").write_bytes(b"head")
    assert weights.cli_weights(_args("check", "aesthetic-head")) == 0
    # a known checksum that does not match is reported as bad
    good = hashlib.sha256(b"head").hexdigest()
    monkeypatch.setitem(weights.REGISTRY, "aesthetic-head",
                        weights.REGISTRY["aesthetic-head"].__class__(**{**weights.REGISTRY["aesthetic-head"].__dict__, "sha256": good[:8]}))
    assert weights.cli_weights(_args("check", "aesthetic-head")) == 0
    (dirs / "w" / "sac+logos+ava1-l14-linearMSE.pth").write_bytes(b"tampered")
    assert weights.cli_weights(_args("check", "aesthetic-head")) == 1
    assert "BAD" in capsys.readouterr().out


def test_list_and_unknown(dirs, capsys):
    assert weights.cli_weights(_args("list")) == 0
    out = capsys.readouterr().out
    assert "inception" in out and "missing" in out and str(dirs / "w") in out
    with pytest.raises(BadInput):
        weights.cli_weights(_args("check", "nope"))


def test_fetch_reports_network_failure_and_leaves_nothing(dirs, monkeypatch, capsys):
    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(weights.urllib.request, "urlopen", offline)
    assert weights.cli_weights(_args("fetch", "edm-cifar10-uncond")) == 1
    assert "network unreachable" in capsys.readouterr().err
    assert not any((dirs / "w").iterdir())


def test_fetch_verifies_checksum(dirs, monkeypatch):
    import io

    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"corrupt"))
    with pytest.raises(BadInput, match="does not match"):
        weights.fetch("inception")
    assert not any((dirs / "w").iterdir())
