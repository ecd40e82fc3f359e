import random

import numpy as np
import pytest
import torch

from bench.train import memory
from bench.errors import BadInput


def test_bytes_per_sample_is_the_slope_of_the_saved_activations():
    lin = torch.nn.Linear(32, 16)

    def loss_at(b):
        x = torch.randn(b, 32)
        return lin(x).pow(2).sum()  # keeps x (b x 32) for the weight's gradient, lin(x) (b x 16) for pow

    assert memory.bytes_per_sample(loss_at) == (32 + 16) * 4


def test_probing_leaves_the_random_streams_alone():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    memory.bytes_per_sample(lambda b: (torch.randn(b, 3, requires_grad=True) * np.random.rand() * random.random()).sum())
    after = torch.rand(1).item(), np.random.rand(), random.random()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    assert after == (torch.rand(1).item(), np.random.rand(), random.random())


def test_check_fits_refuses_what_exceeds_free_memory(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10 * 2**30)
    cpu = torch.device("cpu")
    assert memory.check_fits(1000.0, 1000, 10**6, cpu) == memory.HEADROOM * 10**6 + 3 * 10**6
    with pytest.raises(BadInput, match="needs about 18.6 GB of cpu memory"):
        memory.check_fits(1000.0, 10**7, 0, cpu)


def test_free_bytes_reads_this_machine():
    free = memory.free_bytes(torch.device("cpu"))
    assert free is None or free > 0
