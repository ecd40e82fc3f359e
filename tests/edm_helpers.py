"""Test helpers (importable as ``edm_helpers``): tiny EDM networks and a writer of NVlabs-format pickles.

The writer reproduces the documented format of EDM's ``torch_utils.persistence``: every network
module pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
``meta = dict(type='class', version=6, module_src=..., class_name=..., state=obj.__dict__ plus
_init_args/_init_kwargs)``; the top level is ``dict(ema=..., loss_fn=..., augment_pipe=...,
dataset_kwargs=EasyDict)``. The fake ``torch_utils`` and ``dnnlib`` modules exist in
``sys.modules`` only while writing. Float constructor arguments are written as numpy scalars,
as EDM's own (``np.sqrt(0.5)``) are.
"""
from __future__ import annotations

import contextlib
import pickle
import sys
import types

import numpy as np
import torch

from bench.nets import edm, edm_layers
from bench.nets.precond import EDMPrecond

TINY_SONG = dict(img_resolution=8, img_channels=3, model_type="SongUNet", model_channels=16, channel_mult=[1, 2],
                 num_blocks=1, attn_resolutions=[4], augment_dim=9, dropout=0.13, channel_mult_emb=2)
TINY_ADM = dict(img_resolution=8, img_channels=3, label_dim=10, model_type="DhariwalUNet", model_channels=32,
                channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.1, use_fp16=True, channel_mult_emb=2)
NETWORK_TYPES = (EDMPrecond, edm.SongUNet, edm.DhariwalUNet, edm_layers.UNetBlock, edm_layers.Conv2d, edm_layers.GroupNorm, edm_layers.Linear,
                 edm_layers.PositionalEmbedding, edm_layers.FourierEmbedding)




def perturbed(net, scale=0.1, seed=0):
    """``net`` with noise added to every parameter: EDM zero-initialises output layers, so a fresh
    network ignores its inputs; tests of input dependence need non-zero weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return net


MODULE_SRC = "# the network's source code would be here; a loader must never run it\n"


def _numpy_floats(value):
    if isinstance(value, dict):
        return {k: _numpy_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy_floats(v) for v in value)
    if isinstance(value, float):
        return np.float64(value)
    return value


@contextlib.contextmanager
def fake_edm_modules():
    """``torch_utils.persistence`` and ``dnnlib.util`` stand-ins, present only inside the block."""
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # never called: the writer only names it
        raise AssertionError("not for loading")

    class EasyDict(dict):
        pass

    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    util.EasyDict = EasyDict
    names = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
             "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    saved = {k: sys.modules.get(k) for k in names}
    sys.modules.update(names)
    try:
        yield persistence, util
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class Persistent:
    """A persistent object of any class name with the given state (loss_fn, augment_pipe, hostile ones)."""

    def __init__(self, class_name, state, module_src=MODULE_SRC):
        self.class_name, self.state, self.module_src = class_name, state, module_src


def write_nvlabs_pickle(path, net: EDMPrecond, module_src: str = MODULE_SRC, extra: dict | None = None,
                        class_name_of=None, protocol: int = 4):
    """Write ``dict(ema=net, ...)`` in NVlabs' pickle format (protocol 4: ``pickle.dump``'s default on
    the Python versions EDM supports; 3 on older ones)."""
    class_name_of = class_name_of or (lambda obj: type(obj).__name__)
    with fake_edm_modules() as (persistence, util):
        class Writer(pickle.Pickler):
            def reducer_override(self, obj):
                if isinstance(obj, Persistent):
                    meta = dict(type="class", version=6, module_src=obj.module_src, class_name=obj.class_name,
                                state=obj.state)
                    return persistence._reconstruct_persistent_obj, (meta,)
                if not isinstance(obj, NETWORK_TYPES):
                    return NotImplemented
                state = {k: v for k, v in obj.__dict__.items() if k != "init_kwargs"}
                kwargs = (edm.edm_precond_kwargs(obj) if isinstance(obj, EDMPrecond)
                          else {k: v for k, v in obj.init_kwargs.items()})
                state.update(_init_args=(), _init_kwargs=_numpy_floats(kwargs))
                meta = dict(type="class", version=6, module_src=module_src, class_name=class_name_of(obj),
                            state=state)
                return persistence._reconstruct_persistent_obj, (meta,)

        data = dict(ema=net,
                    loss_fn=Persistent("EDMLoss", dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5, _init_args=(),
                                                       _init_kwargs={})),
                    augment_pipe=Persistent("AugmentPipe", dict(p=np.float64(0.12), xflip=1e8, _init_args=(),
                                                                _init_kwargs=util.EasyDict(p=0.12))),
                    dataset_kwargs=util.EasyDict(class_name="training.dataset.ImageFolderDataset", path="x.zip",
                                                 resolution=net.img_resolution, max_size=50000))
        data.update(extra or {})
        with open(path, "wb") as f:
            Writer(f, protocol=protocol).dump(data)
