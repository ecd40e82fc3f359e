"""Shared test settings: deterministic torch on one CPU thread.

The tests' tensors are small: one intra-op thread is faster than two, and 10-50x faster when other
processes load the cores (OpenMP threads then wait on each other).
"""
import os

import pytest
import torch

os.environ.setdefault("BENCH_NO_DOWNLOAD", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
