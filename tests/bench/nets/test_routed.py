"""Routed denoisers (MSD): each class to its student only, in outputs, gradients, state and FLOPs."""
import copy

import pytest
import torch

from bench.nets.guidance import one_hot
from bench.nets.mlp import ResidualMLP
from bench.nets.precond import EDMPrecond, FewStepGenerator, OneStepGenerator
from bench.nets.routed import RoutedDenoiser, route_generator, routed_copies
from bench.train.cost import measure
from methods.base import contiguous_router, parse_router

DIM, CLASSES, STUDENTS = 4, 6, 3


def students(k=STUDENTS):
    torch.manual_seed(0)
    return [EDMPrecond(ResidualMLP(DIM, width=16, depth=1, cond_dim=CLASSES)) for _ in range(k)]


def batch(labels):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(len(labels), DIM, generator=gen)
    sigma = 0.1 + 3 * torch.rand(len(labels), generator=gen)
    return x, sigma, one_hot(torch.tensor(labels), CLASSES)


def test_contiguous_router_gives_equal_blocks():
    assert contiguous_router(6, 3) == [0, 0, 1, 1, 2, 2]
    assert contiguous_router(1000, 4)[:250] == [0] * 250 and contiguous_router(1000, 4)[-1] == 3
    assert parse_router("2, 0,1,1,0,2", 6, 3) == [2, 0, 1, 1, 0, 2]
    for bad, message in (("0,1", "lists 2 classes"), ("0,0,0,0,0,0", "each of the 3"), ("x", "one student index")):
        with pytest.raises(ValueError, match=message):
            parse_router(bad, 6, 3)


def test_each_sample_goes_through_its_own_student():
    nets = students()
    routed = RoutedDenoiser(nets, contiguous_router(CLASSES, STUDENTS))
    labels = [5, 0, 3, 1, 2, 4, 0, 5]
    x, sigma, cond = batch(labels)
    out = routed(x, sigma, cond)
    for i, c in enumerate(labels):
        alone = nets[c * STUDENTS // CLASSES](x[i:i + 1], sigma[i:i + 1], cond=cond[i:i + 1])
        assert torch.allclose(out[i:i + 1], alone, atol=1e-6)


@pytest.mark.parametrize("label", range(CLASSES))
def test_gradients_reach_only_the_owning_student(label):
    router = [2, 0, 1, 1, 0, 2]  # explicit, not contiguous
    nets = students()
    routed = RoutedDenoiser(nets, router)
    x, sigma, cond = batch([label] * 5)
    routed(x, sigma, cond).square().sum().backward()
    for k, net in enumerate(nets):
        grads = [p.grad for p in net.parameters()]
        if k == router[label]:
            assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads), k  # the other students neither run nor move


def test_one_student_is_the_plain_denoiser():
    net, = students(1)
    x, sigma, cond = batch([3, 1, 4, 1, 5])
    assert torch.equal(RoutedDenoiser([net], [0] * CLASSES)(x, sigma, cond), net(x, sigma, cond=cond))


def test_samples_without_a_class_are_refused():
    routed = RoutedDenoiser(students(), contiguous_router(CLASSES, STUDENTS))
    x, sigma, cond = batch([0, 1])
    with pytest.raises(ValueError, match="cond=None"):
        routed(x, sigma)
    with pytest.raises(ValueError, match="null class"):
        routed(x, sigma, torch.zeros(2, CLASSES))
    with pytest.raises(ValueError, match=r"\[B, 6\]"):
        routed(x, sigma, torch.zeros(2, 3))


def test_ema_copy_and_state_dict_round_trip():
    generator = route_generator(OneStepGenerator(students(1)[0], 2.5), contiguous_router(CLASSES, STUDENTS))
    ema = copy.deepcopy(generator)
    z, _, cond = batch([0, 2, 5, 3])
    assert torch.equal(ema(z, cond), generator(z, cond))
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(0.01 * torch.randn_like(p))
    fresh = route_generator(OneStepGenerator(students(1)[0], 2.5), contiguous_router(CLASSES, STUDENTS))
    fresh.load_state_dict(generator.state_dict())
    assert torch.equal(fresh(z, cond), generator(z, cond)) and not torch.equal(ema(z, cond), generator(z, cond))
    assert all(k.startswith("denoiser.students.") for k in generator.state_dict())


def test_a_sample_costs_one_students_pass():
    """FLOPs of a routed batch (classes of every student) equal one student's on the same batch size."""
    nets = students()
    routed = RoutedDenoiser(nets, contiguous_router(CLASSES, STUDENTS))
    x, sigma, cond = batch([0, 1, 2, 3, 4, 5, 0, 3, 5])
    with measure({"generator": routed}) as found:
        routed(x, sigma, cond)
    with measure({"generator": nets[0]}) as single:
        nets[0](x, sigma, cond=cond)
    assert found["flops"] == single["flops"] > 0
    assert found["passes"] == {"generator_forward": 9}


def test_few_step_generators_route_every_step():
    router = contiguous_router(CLASSES, STUDENTS)
    denoiser = routed_copies(students(1)[0], router)
    generator = FewStepGenerator(denoiser, (2.5, 0.8, 0.1), chain="deterministic")
    z, _, cond = batch([0, 5, 2])
    out = generator(z, cond)
    alone = FewStepGenerator(denoiser.students[2], (2.5, 0.8, 0.1), chain="deterministic")(z[1:2], cond[1:2])
    assert torch.allclose(out[1:2], alone, atol=1e-6)
    assert generator.training_point(z, cond).x0.shape == z.shape
