import pytest
import torch
import torch.multiprocessing as mp
from bench_helpers import gloo_gradient_worker


@pytest.mark.slow
def test_average_gradients_over_gloo():
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(gloo_gradient_worker, args=(29533, out), nprocs=2)
    for rank in (0, 1):
        p_grad, q_grad, ranks, used, unused = out[rank]
        assert torch.equal(p_grad, torch.full((3,), 1.5)) and torch.equal(q_grad, torch.full((2, 2), 15.0))
        assert ranks == [0, 1]
        assert torch.equal(used, torch.full((2,), 2.0)) and unused is None  # zero where absent, none if unused
