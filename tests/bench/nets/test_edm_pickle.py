"""Loading EDM teachers: NVlabs-format pickles written here, hostile pickles, our .pt, real checkpoints."""
import io
import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from edm_helpers import TINY_ADM, TINY_SONG, Persistent, perturbed, write_nvlabs_pickle

from bench.errors import BadInput
from bench.nets import edm
from bench.nets.edm_pickle import (ContainerRecord, Record, load_teacher, network_from_record, read_generator_pickle,
                                   read_nvlabs_pickle, save_teacher, write_by_name_pickle)
from bench.suites.base import heun_sampler
from bench import weights


def _file_tensors(record, prefix="model.", out=None):
    """Every tensor the file holds under a record, by state-dict name (an independent walk)."""
    out = {} if out is None else out
    for group in ("_parameters", "_buffers"):
        for name, t in (record.state.get(group) or {}).items():
            if t is not None:
                out[prefix + name] = t
    for name, child in (record.state.get("_modules") or {}).items():
        if child is not None:
            _file_tensors(child, f"{prefix}{name}.", out)
    return out


def _inputs(net, n=3):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, net.img_resolution, net.img_resolution, generator=gen)
    sigma = torch.tensor([0.02, 1.0, 60.0])[:n]
    cond = F.one_hot(torch.arange(n) % net.label_dim, net.label_dim).float() if net.label_dim else None
    return x, sigma, cond


@pytest.mark.parametrize("config, protocol", [(TINY_SONG, 4), (TINY_ADM, 4), (TINY_SONG, 3)],
                         ids=["ddpmpp-uncond", "adm-cond-fp16", "ddpmpp-protocol3"])
def test_nvlabs_pickle_loads_with_identical_outputs_and_every_tensor_used(tmp_path, config, protocol):
    net = perturbed(edm.edm_precond(**config)).eval()
    write_nvlabs_pickle(tmp_path / "net.pkl", net, protocol=protocol)
    loaded = load_teacher(tmp_path / "net.pkl")
    assert type(loaded.model) is type(net.model) and loaded.label_dim == net.label_dim
    assert loaded.use_fp16 == config.get("use_fp16", False)
    x, sigma, cond = _inputs(net)
    with torch.no_grad():
        assert torch.equal(loaded(x, sigma, cond), net(x, sigma, cond))
    file_tensors = _file_tensors(read_nvlabs_pickle(tmp_path / "net.pkl")["ema"].state["_modules"]["model"])
    assert file_tensors.keys() == loaded.state_dict().keys()
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_top_level_training_objects_stay_inert_records(tmp_path):
    write_nvlabs_pickle(tmp_path / "net.pkl", edm.edm_precond(**TINY_SONG))
    data = read_nvlabs_pickle(tmp_path / "net.pkl")
    assert isinstance(data["loss_fn"], Record) and data["loss_fn"].class_name == "EDMLoss"
    assert data["augment_pipe"].state["p"] == pytest.approx(0.12)  # a numpy scalar in the file
    assert isinstance(data["ema"].state["_modules"]["model"].state["_modules"]["enc"], ContainerRecord)
    assert data["dataset_kwargs"]["max_size"] == 50000


def test_our_pt_format_round_trips(tmp_path):
    net = perturbed(edm.edm_precond(**TINY_ADM)).eval()
    save_teacher(net, tmp_path / "teacher.pt")
    loaded = load_teacher(tmp_path / "teacher.pt")
    x, sigma, cond = _inputs(net)
    with torch.no_grad():
        assert torch.equal(loaded(x, sigma, cond), net(x, sigma, cond))


class _Shell:
    """Pickles as a call of ``func(*args)``: what an attacker puts in a file."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func", [os.system, eval], ids=["os.system", "builtins.eval"])
def test_pickle_calling_code_is_refused_and_nothing_runs(tmp_path, func):
    sentinel = tmp_path / "pwned"
    command = f"touch {sentinel}" if func is os.system else f"open({str(sentinel)!r}, 'w')"
    write_nvlabs_pickle(tmp_path / "evil.pkl", edm.edm_precond(**TINY_SONG), extra={"x": _Shell(func, command)})
    with pytest.raises(BadInput, match=f"refusing {func.__module__}.{func.__name__}"):
        load_teacher(tmp_path / "evil.pkl")
    assert not sentinel.exists()


def test_module_src_is_never_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    src = f"open({str(sentinel)!r}, 'w').write('ran')\n"
    net = perturbed(edm.edm_precond(**TINY_SONG)).eval()
    write_nvlabs_pickle(tmp_path / "known.pkl", net, module_src=src)
    load_teacher(tmp_path / "known.pkl")  # known classes: built from this project's code
    write_nvlabs_pickle(tmp_path / "unknown.pkl", net, module_src=src,
                        extra={"x": Persistent("Exploit", {"_init_kwargs": {}}, module_src=src)})
    with pytest.raises(BadInput, match="unknown class 'Exploit'"):
        load_teacher(tmp_path / "unknown.pkl")
    assert not sentinel.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_hostile_storage_bytes_are_refused(tmp_path):
    """Tensor storages arrive as bytes for ``torch.storage._load_from_bytes``: they are read with
    ``weights_only=True``, so a pickle hidden there is refused too."""
    sentinel = tmp_path / "pwned"
    hidden = pickle.dumps(_Shell(os.system, f"touch {sentinel}"))
    # GLOBAL torch.storage._load_from_bytes, BINBYTES hidden, TUPLE1, REDUCE, STOP
    outer = (b"\x80\x04ctorch.storage\n_load_from_bytes\nB" + len(hidden).to_bytes(4, "little") + hidden
             + b"\x85R.")
    (tmp_path / "evil.pkl").write_bytes(outer)
    with pytest.raises(BadInput, match="not a readable"):
        load_teacher(tmp_path / "evil.pkl")
    assert not sentinel.exists()


def test_architecture_differences_are_named(tmp_path):
    net = edm.edm_precond(**TINY_SONG)
    net.model.enc["8x8_block0"].init_kwargs["eps"] = 1e-5  # as if the file's block had another eps
    write_nvlabs_pickle(tmp_path / "eps.pkl", net)
    with pytest.raises(BadInput, match=r"model\.enc\.8x8_block0: checkpoint built UNetBlock with eps=1e-05"):
        load_teacher(tmp_path / "eps.pkl")
    renamed = lambda obj: "DhariwalUNet" if isinstance(obj, edm.SongUNet) else type(obj).__name__  # noqa: E731
    write_nvlabs_pickle(tmp_path / "class.pkl", edm.edm_precond(**TINY_SONG), class_name_of=renamed)
    with pytest.raises(BadInput, match="model: checkpoint has DhariwalUNet, this project's network has SongUNet"):
        load_teacher(tmp_path / "class.pkl")


def test_missing_tensor_is_refused(tmp_path):
    net = edm.edm_precond(**TINY_SONG)
    del net.model.map_layer1._parameters["bias"]
    net.model.map_layer1.bias = None
    write_nvlabs_pickle(tmp_path / "net.pkl", net)
    with pytest.raises(BadInput, match=r"missing \['model.map_layer1.bias'\]"):
        load_teacher(tmp_path / "net.pkl")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_files(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        load_teacher(tmp_path / "none.pkl")
    (tmp_path / "net.txt").write_text("x")
    with pytest.raises(BadInput, match="expected a .pkl"):
        load_teacher(tmp_path / "net.txt")
    write_nvlabs_pickle(tmp_path / "net.pkl", edm.edm_precond(**TINY_SONG))
    (tmp_path / "cut.pkl").write_bytes((tmp_path / "net.pkl").read_bytes()[:5000])
    with pytest.raises(BadInput, match="not a readable"):
        load_teacher(tmp_path / "cut.pkl")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(BadInput, match="not a distill-bench EDM teacher"):
        load_teacher(tmp_path / "other.pt")
    buf = io.BytesIO()
    pickle.dump(_Shell(os.system, "true"), buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(BadInput, match="not a readable teacher"):
        load_teacher(tmp_path / "evil.pt")


# --- the by-name layout of bench export --format edm-pickle -------------------------------------

@pytest.mark.parametrize("config", [TINY_SONG, TINY_ADM], ids=["ddpmpp", "adm-cond"])
def test_by_name_pickle_round_trips_with_identical_outputs(tmp_path, config):
    net = perturbed(edm.edm_precond(**config)).eval()
    write_by_name_pickle(tmp_path / "g.pkl", net, {"init_sigma": 2.5, "kimg": 12.0})
    loaded, sigma, plain = read_generator_pickle(tmp_path / "g.pkl")
    assert sigma == 2.5 and plain == {"init_sigma": 2.5, "kimg": 12.0}
    x, s, cond = _inputs(net)
    with torch.no_grad():
        assert torch.equal(loaded(x, s, cond), net(x, s, cond))
    assert load_teacher(tmp_path / "g.pkl").state_dict().keys() == net.state_dict().keys()


def test_by_name_pickle_names_classes_and_embeds_no_source(tmp_path):
    import pickletools

    write_by_name_pickle(tmp_path / "g.pkl", perturbed(edm.edm_precond(**TINY_SONG)))
    data = (tmp_path / "g.pkl").read_bytes()
    globals_ = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert {"training.networks EDMPrecond", "training.networks SongUNet", "training.networks UNetBlock"} <= globals_
    assert not any(g.startswith(("bench", "torch_utils")) for g in globals_)
    assert b"module_src" not in data and b"def forward" not in data and b"init_kwargs" not in data.replace(b"_init_kwargs", b"")


def test_by_name_unknown_class_and_bad_sigma_are_refused(tmp_path):
    # GLOBAL training.networks Exploit, EMPTY_TUPLE, NEWOBJ, STOP
    (tmp_path / "evil.pkl").write_bytes(b"\x80\x04ctraining.networks\nExploit\n)\x81.")
    with pytest.raises(BadInput, match="refusing training.networks.Exploit"):
        read_generator_pickle(tmp_path / "evil.pkl")
    # GLOBAL training.networks EDMPrecond, called (REDUCE) instead of created by NEWOBJ
    (tmp_path / "called.pkl").write_bytes(b"\x80\x04ctraining.networks\nEDMPrecond\nX\x01\x00\x00\x00a\x85R.")
    with pytest.raises(BadInput, match="created by NEWOBJ"):
        read_generator_pickle(tmp_path / "called.pkl")
    write_by_name_pickle(tmp_path / "g.pkl", edm.edm_precond(**TINY_SONG), {"init_sigma": -1.0})
    with pytest.raises(BadInput, match="init_sigma must be a positive number"):
        read_generator_pickle(tmp_path / "g.pkl")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(BadInput, match="not a generator pickle"):
        read_generator_pickle(tmp_path / "list.pkl")


# --- the released checkpoints, where present -----------------------------------------------------

RELEASED = ["edm-cifar10-uncond", "edm-cifar10-cond", "edm-imagenet64-cond"]


def _released(name):
    path = weights.locate(name)
    if path is None:
        w = weights.get(name)
        pytest.skip(f"{w.filename} not found in {weights.weights_dir()} ({w.url}; `bench weights fetch {name}`)")
    return path


@pytest.mark.parametrize("name", RELEASED)
def test_released_checkpoint_loads_completely_and_samples(name):
    path = _released(name)
    record = read_nvlabs_pickle(path)["ema"]
    net = network_from_record(record, str(path))
    file_tensors = _file_tensors(record.state["_modules"]["model"])
    state = net.state_dict()
    assert file_tensors.keys() == state.keys()
    assert all(torch.equal(file_tensors[k].to(state[k].dtype), state[k]) for k in state)
    z = torch.randn(2, 3, net.img_resolution, net.img_resolution, generator=torch.Generator().manual_seed(0))
    cond = F.one_hot(torch.tensor([3, 7]), net.label_dim).float() if net.label_dim else None
    with torch.no_grad():
        x = heun_sampler(net, z, cond, steps=18)  # 35 network evaluations
    assert torch.isfinite(x).all() and x.abs().max() < 1.5 and x.std() > 0.1
