"""Load EDM teachers: NVlabs ``.pkl`` checkpoints through a restricted unpickler, and this project's ``.pt``.

An NVlabs checkpoint is ``pickle.dump(dict(ema=EDMPrecond, loss_fn=..., augment_pipe=...,
dataset_kwargs=...))`` where every network module is a *persistent object* of EDM's
``torch_utils.persistence``: it pickles as ``_reconstruct_persistent_obj(meta)`` with ``meta`` a
dict of ``type='class'``, ``version``, ``module_src`` (the module's source code, which EDM
executes on load), ``class_name`` and ``state`` (the object's ``__dict__``: ``_parameters``,
``_buffers``, ``_modules``, plain attributes, and the constructor's ``_init_args`` and
``_init_kwargs``).

Here nothing from the file is executed. The unpickler resolves only the handful of globals such
a file needs (the persistent-object record, torch's tensor rebuild functions, OrderedDict, EDM's
EasyDict, numpy scalars) to inert stand-ins or checked functions, and refuses every other global
with BadInput. Persistent records become plain ``Record`` objects; ``module_src`` is dropped
unread. The network is then built from this project's own classes (``bench.nets.edm``) with the
recorded constructor arguments, checked module by module against the records (class names and
constructor arguments), and loaded with every tensor in the file accounted for.

The same loader reads the *by-name* layout that ``write_by_name_pickle`` writes (``bench export
--format edm-pickle``): every network module is a plain ``training.networks.<Class>`` global, created
without its constructor (``NEWOBJ``) and given its ``__dict__`` (``BUILD``), as EDM's persistent
classes hold it (``_init_args``/``_init_kwargs`` included). No source code is in the file: inside
EDM's or SiD's repository, where ``training.networks`` is importable, ``pickle.load`` rebuilds their own
classes with this state; here the allow-listed names become ``Record`` stand-ins as above.
"""
from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..errors import BadInput
from . import edm, edm_layers
from .precond import EDMPrecond

# Classes a checkpoint may hold: the network's modules (built from this project's code), and
# training-only objects of the top-level dict, kept as inert records and never built.
NETWORK_CLASSES = {"EDMPrecond", "SongUNet", "DhariwalUNet", "UNetBlock", "Conv2d", "GroupNorm", "Linear",
                   "PositionalEmbedding", "FourierEmbedding"}
TRAINING_ONLY_CLASSES = {"EDMLoss", "VPLoss", "VELoss", "AugmentPipe"}
PT_FORMAT = "distill-bench/edm-teacher"
PT_VERSION = 1


class Record:
    """A persistent object from the file: its class name and state, nothing executable."""

    def __init__(self, class_name: str, state: dict, version):
        self.class_name, self.state, self.version = class_name, state, version

    def __repr__(self):
        return f"Record({self.class_name})"


class ContainerRecord:
    """Stand-in for a torch container module (ModuleDict, ModuleList, Sequential) in the file."""

    class_name = "container"

    def __init__(self, *args):
        if args:
            raise pickle.UnpicklingError("a module container takes no constructor arguments")
        self.state = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a module container's state must be a dict")
        self.state = state


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict subclass."""


class _NumpyDType:
    """Stand-in for a pickled ``numpy.dtype``: only numeric kinds, read with its byte order."""

    def __init__(self, name, align=False, copy=True):
        if not isinstance(name, str) or name[:1] not in ("f", "i", "u", "b") or not name[1:].isdigit():
            raise pickle.UnpicklingError(f"numpy dtype {name!r} is not a plain numeric type")
        self.name, self.byteorder = name, "<"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]


def _numpy_scalar(dtype, data):
    """A numpy scalar from its dtype and raw bytes, as the Python number it holds."""
    import numpy as np

    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("malformed numpy scalar")
    order = "" if dtype.byteorder in ("|", "=") else dtype.byteorder
    return np.frombuffer(data, dtype=np.dtype(order + dtype.name), count=1)[0].item()


def _reconstruct_persistent_obj(meta):
    """Turn a persistent-object record into a ``Record``; its ``module_src`` is never looked at."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise BadInput("persistent object of an unknown kind (expected type='class')")
    name, state = meta.get("class_name"), meta.get("state")
    if name not in NETWORK_CLASSES | TRAINING_ONLY_CLASSES:
        raise BadInput(f"unknown class {name!r} in the checkpoint (known: {', '.join(sorted(NETWORK_CLASSES))})")
    if not isinstance(state, dict):
        raise BadInput(f"persistent object {name} has no state dict")
    return Record(name, state, meta.get("version"))


class NamedRecord(Record):
    """A by-name network module (``training.networks.<Class>``): made by ``NEWOBJ``, filled by ``BUILD``."""

    class_name = version = None

    def __init__(self, *args, **kwargs):  # only NEWOBJ (no constructor call) makes one; a call is refused
        raise pickle.UnpicklingError(f"{self.class_name} is created by NEWOBJ, not called")

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.class_name}: a module's state must be a dict")
        self.state = state


BY_NAME_MODULE = "training.networks"  # EDM's and SiD's module of network classes
BY_NAME_CLASSES = {name: type(name, (NamedRecord,), {"class_name": name}) for name in sorted(NETWORK_CLASSES)}


def _load_storage(data):
    """A tensor storage pickled by torch as bytes of a legacy ``torch.save``: load it safely."""
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("storage bytes expected")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """torch's tensor rebuild, after checking its arguments are plain data."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)) or hooks:
        raise pickle.UnpicklingError("malformed tensor record")
    return torch._utils._rebuild_tensor_v2(storage, offset, tuple(size), tuple(stride), False, OrderedDict())


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    """A parameter record: its tensor (parameters are re-created by this project's modules)."""
    if not isinstance(data, torch.Tensor) or hooks:
        raise pickle.UnpicklingError("malformed parameter record")
    return data


ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("torch.nn.modules.container", "ModuleDict"): ContainerRecord,
    ("torch.nn.modules.container", "ModuleList"): ContainerRecord,
    ("torch.nn.modules.container", "Sequential"): ContainerRecord,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    **{(BY_NAME_MODULE, name): cls for name, cls in BY_NAME_CLASSES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``ALLOWED``; anything else is refused before it can run."""

    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise BadInput(f"refusing {module}.{name}: not part of an NVlabs EDM checkpoint") from None

    def persistent_load(self, pid):
        raise BadInput("refusing a persistent id: not part of an NVlabs EDM checkpoint")


def read_nvlabs_pickle(path: str | Path):
    """The checkpoint's top-level object with ``Record`` stand-ins; BadInput naming any problem."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError, KeyError,
            RuntimeError, OSError) as exc:
        raise BadInput(f"{path}: not a readable NVlabs EDM checkpoint ({type(exc).__name__}: {exc})") from None


# --- from records to this project's network ---------------------------------------------------

def _same(a, b) -> bool:
    """Constructor arguments equal up to list/tuple and int/float (numpy scalars arrive as floats)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) or (math.isinf(a) and a == b)
    return a == b


def _check_arguments(record: Record, module: nn.Module, where: str):
    """The record's constructor arguments must be the ones this project's module was built with."""
    args, kwargs = record.state.get("_init_args", ()), record.state.get("_init_kwargs", {})
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise BadInput(f"{where}: malformed constructor arguments")
    names = list(module.init_kwargs)
    if len(args) > len(names):
        raise BadInput(f"{where}: {record.class_name} takes at most {len(names)} arguments, got {len(args)}")
    recorded = {**dict(zip(names, args)), **kwargs}
    for key, value in recorded.items():
        if key not in module.init_kwargs:
            raise BadInput(f"{where}: {record.class_name} argument {key!r} is unknown to this project's implementation")
        if not _same(value, module.init_kwargs[key]):
            raise BadInput(f"{where}: checkpoint built {record.class_name} with {key}={value!r}, this project's "
                           f"network has {module.init_kwargs[key]!r}")


def _collect(record, module: nn.Module, prefix: str, tensors: dict):
    """Walk records and modules together: check classes and arguments, gather tensors by name."""
    where = prefix.rstrip(".") or "network"
    if isinstance(record, Record):
        if record.class_name != type(module).__name__:
            raise BadInput(f"{where}: checkpoint has {record.class_name}, this project's network has "
                           f"{type(module).__name__}")
        _check_arguments(record, module, where)
    elif not isinstance(record, ContainerRecord) or not isinstance(module, (nn.ModuleDict, nn.ModuleList, nn.Sequential)):
        raise BadInput(f"{where}: unexpected {type(record).__name__} for {type(module).__name__}")
    state = record.state
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise BadInput(f"{where}: {group[1:-1]} {name!r} is not a tensor")
            tensors[prefix + name] = value
    children = {n: c for n, c in (state.get("_modules") or {}).items() if c is not None}
    ours = dict(module.named_children())
    if set(children) != set(ours):
        missing, extra = sorted(set(ours) - set(children)), sorted(set(children) - set(ours))
        raise BadInput(f"{where}: submodules differ from this project's network "
                       f"(missing {missing or 'none'}, unexpected {extra or 'none'})")
    for name, child in children.items():
        _collect(child, ours[name], f"{prefix}{name}.", tensors)


def _load_exactly(net: nn.Module, tensors: dict, source: str):
    """Load ``tensors`` into ``net``: every tensor of the file used, every one of the net filled."""
    expected = net.state_dict()
    missing, unused = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unused:
        raise BadInput(f"{source}: tensors do not match the network (missing {missing[:3]}, unused {unused[:3]})")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise BadInput(f"{source}: {name} has shape {tuple(value.shape)}, the network expects "
                           f"{tuple(expected[name].shape)}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)


def network_from_record(record: Record, source: str = "checkpoint") -> EDMPrecond:
    """This project's EDMPrecond built and loaded from an ``EDMPrecond`` record."""
    if not isinstance(record, Record) or record.class_name != "EDMPrecond":
        found = getattr(record, "class_name", type(record).__name__)
        raise BadInput(f"{source}: expected an EDMPrecond network, found {found}")
    args, kwargs = record.state.get("_init_args", ()), record.state.get("_init_kwargs", {})
    try:
        net = edm.edm_precond(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{source}: cannot build EDMPrecond from its recorded arguments: {exc}") from None
    # EDMPrecond itself records its kwargs in the file; its module here is the generic wrapper.
    tensors: dict = {}
    _collect(record.state.get("_modules", {}).get("model"), net.model, "model.", tensors)
    own = {k: v for g in ("_parameters", "_buffers") for k, v in (record.state.get(g) or {}).items() if v is not None}
    tensors.update(own)
    _load_exactly(net, tensors, source)
    return net.eval().requires_grad_(False)


# --- entry points --------------------------------------------------------------------------------

def load_nvlabs_pickle(path: str | Path, key: str = "ema") -> EDMPrecond:
    """The ``key`` network (default the EMA weights) of an NVlabs ``.pkl``, as this project's EDMPrecond."""
    data = read_nvlabs_pickle(path)
    if isinstance(data, dict):
        if key not in data:
            raise BadInput(f"{path}: no {key!r} entry (entries: {', '.join(map(str, data))})")
        data = data[key]
    return network_from_record(data, str(path))


def read_generator_pickle(path: str | Path) -> tuple[EDMPrecond, float | None, dict]:
    """A one-step generator pickle in SiD's layout (``dict(ema=EDMPrecond, ...)``), persistent or by-name.

    Returns the network, the file's ``init_sigma`` (None where the file has none, as in SiD's own
    snapshots, whose sigma is a flag of its generate script) and the other plain entries (str, int,
    float) of the top-level dict.
    """
    data = read_nvlabs_pickle(path)
    if not isinstance(data, dict) or "ema" not in data:
        raise BadInput(f"{path}: not a generator pickle (expected a dict with an 'ema' network)")
    sigma = data.get("init_sigma")
    if sigma is not None and (not isinstance(sigma, (int, float)) or isinstance(sigma, bool)
                              or not math.isfinite(sigma) or sigma <= 0):
        raise BadInput(f"{path}: init_sigma must be a positive number, got {sigma!r}")
    plain = {k: v for k, v in data.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    return network_from_record(data["ema"], str(path)), (None if sigma is None else float(sigma)), plain


class _ByNamePickler(pickle._Pickler):
    """Pickles this project's network modules as ``training.networks.<Class>`` objects, state only.

    The pure-Python pickler is used because its ``dispatch`` table can take a writer per class: each
    module becomes ``GLOBAL training.networks <Class>``, ``EMPTY_TUPLE``, ``NEWOBJ`` (``cls.__new__(cls)``,
    no constructor call) and ``BUILD`` with its ``__dict__`` (``nn.Module.__setstate__`` takes it).
    Everything else (tensors, containers, dicts) pickles as torch and pickle normally do.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_module(self, obj):
        name = type(obj).__name__
        self.write(pickle.GLOBAL + f"{BY_NAME_MODULE}\n{name}\n".encode())
        self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        self.memoize(obj)
        self.save(_persistent_state(obj))
        self.write(pickle.BUILD)


for _cls in (EDMPrecond, edm.SongUNet, edm.DhariwalUNet, edm_layers.UNetBlock, edm_layers.Conv2d, edm_layers.GroupNorm,
             edm_layers.Linear, edm_layers.PositionalEmbedding, edm_layers.FourierEmbedding):
    _ByNamePickler.dispatch[_cls] = _ByNamePickler._save_module


def _persistent_state(module: nn.Module) -> dict:
    """``__dict__`` as EDM's persistent classes hold it: constructor arguments in ``_init_args``/``_init_kwargs``."""
    state = {k: v for k, v in module.__dict__.items() if k != "init_kwargs"}
    kwargs = edm.edm_precond_kwargs(module) if isinstance(module, EDMPrecond) else dict(module.init_kwargs)
    state.update(_init_args=(), _init_kwargs=kwargs)
    return state


def write_by_name_pickle(path: str | Path, net: EDMPrecond, extra: dict | None = None) -> None:
    """Write ``dict(ema=net, **extra)`` in the by-name layout (no source code), atomically.

    ``net`` must be built from this project's EDM classes; it is written on the CPU in float32 (as
    EDM's snapshots are), in eval mode. ``extra`` holds plain values (``init_sigma``, ``kimg``, ...).
    """
    import copy

    if not isinstance(net, EDMPrecond) or type(net.model).__name__ not in NETWORK_CLASSES:
        raise BadInput("only an EDMPrecond around an EDM SongUNet or DhariwalUNet can be written as an EDM pickle")
    net = copy.deepcopy(net).cpu().float().eval().requires_grad_(False)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            _ByNamePickler(f, protocol=4).dump({"ema": net, **(extra or {})})
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_teacher(net: EDMPrecond, path: str | Path):
    """Write ``net`` as this project's ``.pt``: a small header (class, kwargs) and the state dict."""
    payload = {"format": PT_FORMAT, "version": PT_VERSION, "class": "EDMPrecond",
               "kwargs": edm.edm_precond_kwargs(net), "state_dict": net.state_dict()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_pt(path: str | Path) -> EDMPrecond:
    """A teacher written by ``save_teacher`` (read with ``weights_only=True``)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt or unsafe file
        raise BadInput(f"{path}: not a readable teacher file ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != PT_FORMAT or payload.get("class") != "EDMPrecond":
        raise BadInput(f"{path}: not a distill-bench EDM teacher file (expected format {PT_FORMAT!r})")
    if payload.get("version") != PT_VERSION:
        raise BadInput(f"{path}: teacher file version {payload.get('version')!r}, this project reads {PT_VERSION}")
    try:
        net = edm.edm_precond(**payload["kwargs"])
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{path}: cannot build EDMPrecond from its header: {exc}") from None
    _load_exactly(net, payload["state_dict"], str(path))
    return net.eval().requires_grad_(False)


def load_state_dict_file(path: str | Path, like: EDMPrecond) -> EDMPrecond:
    """A plain state dict of an EDMPrecond (DMD2's ``pytorch_model.bin``) loaded onto a copy of ``like``.

    DMD2 saves its generator, EDM's EDMPrecond, with ``state_dict()``: the keys are ``model.<module>...``
    as here (a ``module.`` prefix of a DDP-wrapped save is removed). This project's ``.pt`` teacher file
    is read as ``load_pt`` does. Read with ``weights_only=True``; every tensor must fit ``like``.
    """
    import copy

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt or unsafe file
        raise BadInput(f"{path}: not a readable state dict ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if isinstance(payload, dict) and payload.get("format") == PT_FORMAT:
        return load_pt(path)
    if not isinstance(payload, dict) or not payload or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise BadInput(f"{path}: not a generator's state dict (expected names mapped to tensors, as DMD2's "
                       "pytorch_model.bin)")
    if all(k.startswith("module.") for k in payload):
        payload = {k[len("module."):]: v for k, v in payload.items()}
    net = copy.deepcopy(like).cpu()
    _load_exactly(net, payload, str(path))
    return net.eval().requires_grad_(False)


def load_teacher(path: str | Path) -> EDMPrecond:
    """An EDM teacher from an NVlabs ``.pkl`` or this project's ``.pt``, on the CPU, frozen."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInput(f"teacher file {path} does not exist")
    if path.suffix == ".pkl":
        return load_nvlabs_pickle(path)
    if path.suffix == ".pt":
        return load_pt(path)
    raise BadInput(f"teacher file {path}: expected a .pkl (NVlabs EDM) or .pt (distill-bench) file")
