"""bench.train.cost: passes and measured FLOPs of training steps, and the compute budget of a run."""
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from bench_helpers import read_jsonl, tiny_run_args
from torch.utils.flop_counter import FlopCounterMode

from bench.train.cost import CostMeter, count_passes, sampling_cost
from bench.nets.mlp import ResidualMLP
from bench.nets.precond import EDMPrecond
from bench.train.loop import Run
from bench.train.runconfig import resolve
from bench.train.step import training_step

DIM, WIDTH, DEPTH, BATCH = 8, 48, 2, 32


def make_run(method, **sets):
    config = resolve("gaussian", method, batch=BATCH,
                     sets={"suite.dim": DIM, "suite.width": WIDTH, "suite.depth": DEPTH, **sets})
    config["device"] = "cpu"
    run = Run(config, torch.device("cpu"), quiet=True)
    run.parts.teacher = EDMPrecond(ResidualMLP(DIM, WIDTH, DEPTH)).requires_grad_(False)  # a network teacher
    run.cost.networks["teacher"] = run.parts.teacher
    for provider in run.inputs:  # DMD's regression pairs, from this teacher
        provider.prepare(run)
    return run


def pass_flops(net, x, backward, trainable, input_grad, *args):
    """FLOPs of one pass of ``net`` on its own: the forward, or the backward alone (gradient of ones)."""
    was = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(trainable)
    x = x.detach().requires_grad_(input_grad)
    try:
        with torch.set_grad_enabled(backward), FlopCounterMode(display=False) as forward:
            out = net(x, *args)
        if not backward:
            return forward.get_total_flops()
        with FlopCounterMode(display=False) as back:
            out.backward(torch.ones_like(out))
        return back.get_total_flops()
    finally:
        for p, r in zip(net.parameters(), was):
            p.requires_grad_(r)


def predicted_phase_flops(run, phase, passes):
    """A phase's FLOPs from its pass counts and each pass measured on its own with the same networks:
    trained networks backpropagate into their weights, frozen ones only into their inputs."""
    z, x, sigma = torch.randn(BATCH, DIM), torch.randn(BATCH, DIM), torch.full((BATCH,), 1.0)
    gen, fake, teacher = run.generator, run.fake, run.parts.teacher
    generator_phase = phase == "generator"
    per_image = {
        "generator_forward": pass_flops(gen, z, False, False, False),
        "generator_backward": pass_flops(gen, z, True, True, False),
        "teacher_forward": pass_flops(teacher, x, False, False, False, sigma),
        "teacher_backward": pass_flops(teacher, x, True, False, True, sigma),
        "fake_forward": pass_flops(fake, x, False, False, False, sigma),
        "fake_backward": pass_flops(fake, x, True, not generator_phase, generator_phase, sigma),
    }
    assert set(passes) <= set(per_image), passes
    return sum(n * per_image[k] / BATCH for k, n in passes.items())


@pytest.mark.parametrize("method", ["sid", "di", "dmd", "dmd2"])
def test_step_flops_are_the_sum_of_its_passes(method):
    run = make_run(method)
    training_step(run)
    phases = {shape[0]: measured for shape, measured in run.cost.per_phase.items()}
    assert set(phases) == {"fake", "generator"}
    for phase, (flops, passes) in phases.items():
        predicted = predicted_phase_flops(run, phase, passes)
        assert flops == pytest.approx(predicted, rel=0.01), (phase, passes)
    assert run.cost.flops == sum(f for f, _ in phases.values()) + sum(run.cost.oneoff.values())
    if method == "dmd":  # the teacher's ODE for each regression pair, paid once
        nfe = 2 * run.suite.teacher_info()["steps"] - 1  # Heun: two evaluations per step but the last
        forward = pass_flops(run.parts.teacher, torch.randn(BATCH, DIM), False, False, False,
                             torch.full((BATCH,), 1.0)) / BATCH
        n_pairs = run.train_opts["n_regression_pairs"]
        assert run.cost.oneoff["regression_pairs"] == pytest.approx(n_pairs * nfe * forward, rel=0.01)
    training_step(run)  # a second step adds the measured figures again, without measuring
    assert run.cost.flops == 2 * sum(f for f, _ in phases.values()) + sum(run.cost.oneoff.values())


# images through each network per generator image, read off the recipes: SiD backpropagates the generator
# loss through teacher and fake score; DMD2 runs 5 fake updates, the first on the generator's own samples
EXPECTED_PASSES = {
    "sid": {"generator_forward": 2, "generator_backward": 1, "fake_forward": 2, "fake_backward": 2,
            "teacher_forward": 1, "teacher_backward": 1},
    "dmd2": {"generator_forward": 5, "generator_backward": 1, "fake_forward": 6, "fake_backward": 5,
             "teacher_forward": 1},
}


def test_dmd2_against_sid_per_kimg_as_the_pass_counts_predict():
    runs = {m: make_run(m) for m in EXPECTED_PASSES}
    for run in runs.values():
        for _ in range(2):
            training_step(run)
    per_kimg = {}
    for method, run in runs.items():
        assert {k: v / run.nimg for k, v in run.cost.passes.items()} == EXPECTED_PASSES[method]
        per_kimg[method] = run.cost.flops / run.kimg
    # the same networks in both runs: price each pass once, on its own, in its phase
    sid = runs["sid"]
    fake_phase = {k: predicted_phase_flops(sid, "fake", {k: BATCH}) for k in ("generator_forward", "fake_forward",
                                                                                "fake_backward")}
    gen_phase = {k: predicted_phase_flops(sid, "generator", {k: BATCH}) for k in EXPECTED_PASSES["sid"]}
    predicted = {
        "sid": sum(gen_phase.values()) + sum(fake_phase.values()),
        "dmd2": (gen_phase["generator_forward"] + gen_phase["generator_backward"] + gen_phase["teacher_forward"]
                 + gen_phase["fake_forward"] + 4 * fake_phase["generator_forward"]
                 + 5 * (fake_phase["fake_forward"] + fake_phase["fake_backward"])),
    }
    ratio = per_kimg["dmd2"] / per_kimg["sid"]
    assert ratio == pytest.approx(predicted["dmd2"] / predicted["sid"], rel=0.01)
    assert ratio > 1.5  # DMD2's five fake updates cost more than SiD's backward through two networks


def test_count_passes_counts_images_and_backward_only_where_gradients_flow():
    net, other = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    with count_passes({"net": net, "other": other, "absent": None}) as passes:
        y = net(torch.randn(5, 3))
        with torch.no_grad():
            other(torch.randn(7, 3))
        y.sum().backward()
    assert passes == {"net_forward": 5, "net_backward": 5, "other_forward": 7}
    y = net(torch.randn(2, 3))  # hooks are gone after the block
    assert passes["net_forward"] == 5


def test_meter_scales_by_processes_and_round_trips():
    net = torch.nn.Linear(4, 6)
    meter = CostMeter({"net": net}, scale=2)
    for _ in range(3):
        with meter.phase("forward", 5):
            net(torch.randn(5, 4))
    with meter.once("setup"):
        net(torch.randn(10, 4))
    assert meter.flops == 2 * (3 * 2 * 5 * 4 * 6 + 2 * 10 * 4 * 6)
    assert meter.passes == {"net_forward": 2 * 25} and meter.oneoff == {"setup": 2 * 2 * 10 * 4 * 6}
    with pytest.raises(RuntimeError):  # a failed phase adds nothing
        with meter.phase("forward", 5):
            raise RuntimeError
    again = CostMeter({"net": net})
    again.load_state_dict(meter.state_dict())
    assert again.row() == meter.row() and again.summary() == meter.summary()


def test_sampling_cost_is_nfe_times_forward():
    net = torch.nn.Linear(4, 4)

    def sample():
        x = torch.randn(6, 4)
        for _ in range(7):
            x = net(x)
        return x

    cost = sampling_cost({"net": net}, sample, 6, "net")
    assert cost["nfe"] == 7 and cost["forward_gflop_per_image"] == pytest.approx(2 * 16 / 1e9)
    assert cost["gflop_per_image"] == pytest.approx(7 * 2 * 16 / 1e9) and cost["samples"].shape == (6, 4)


def test_cost_in_every_log_row_and_the_manifest(tmp_path, cli):
    code, out, _ = cli(*tiny_run_args(tmp_path, method="dmd"))
    assert code == 0
    run_dir = Path(out.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cost = manifest["cost"]
    assert cost["gflop"] > 0 and "regression_pairs" in cost["oneoff_gflop"]  # 0 here: an analytic teacher
    assert cost["sample"]["nfe"] == 1 and cost["sample"]["gflop_per_image"] > 0  # one generator pass
    for log in ("stats.jsonl", "metrics.jsonl"):
        rows = read_jsonl(run_dir / log)
        assert rows and all({"gflop", "passes", "train_s"} <= set(r) for r in rows)
        gflops = [r["gflop"] for r in rows]
        assert gflops == sorted(gflops)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert metrics[0]["gflop"] == pytest.approx(cost["oneoff_gflop"]["regression_pairs"])  # paid before step 1
    assert metrics[-1]["gflop"] == pytest.approx(cost["gflop"]) and metrics[-1]["passes"] == cost["passes"]


def test_gflop_budget_stops_at_the_first_step_that_reaches_it(tmp_path, cli):
    code, out, _ = cli(*tiny_run_args(tmp_path, method="di"))
    per_step = read_jsonl(Path(out.strip().splitlines()[-1]) / "stats.jsonl")[0]["gflop"]  # tick = one step
    budget = 3.5 * per_step
    args = tiny_run_args(tmp_path / "g", method="di")
    at = args.index("--kimg")
    code, out, _ = cli(*args[:at], *args[at + 2:], "--gflop", repr(budget))
    assert code == 0
    run_dir = Path(out.strip().splitlines()[-1])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["gflop"] == budget and config["kimg"] is None
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["cost"]["gflop"] == pytest.approx(4 * per_step)
    assert manifest["kimg_done"] == pytest.approx(4 * 64 / 1000)
    last = read_jsonl(run_dir / "metrics.jsonl")[-1]
    assert last["gflop"] == pytest.approx(4 * per_step)  # the final evaluation is at the budget


def test_gflop_budget_writes_about_fifty_stats_rows(tmp_path, cli):
    """Without a kimg to divide, the tick is a fiftieth of the budget in images, set after the first step."""
    code, out, _ = cli(*tiny_run_args(tmp_path, method="di"))
    per_step = read_jsonl(Path(out.strip().splitlines()[-1]) / "stats.jsonl")[0]["gflop"]
    args = tiny_run_args(tmp_path / "g", method="di")
    at = args.index("--kimg")
    code, out, _ = cli(*args[:at], *args[at + 2:], "--gflop", repr(200 * per_step))
    assert code == 0
    stats = read_jsonl(Path(out.strip().splitlines()[-1]) / "stats.jsonl")
    steps = [r["step"] for r in stats]
    assert 45 <= len(stats) <= 52 and steps[0] == 1 and steps[-1] >= 196  # not one row per step (200)
    assert all(b - a == 4 for a, b in zip(steps[1:], steps[2:]))  # 200 steps / 50 rows
    code, _, err = cli(*args, "--gflop", "10")
    assert code == 2 and "alternative budgets" in err


def test_scm_counts_its_jvp_as_a_pass_of_about_three_forwards():
    """sCM's step: no fake-score phase; the student's tangent is one ``torch.func.jvp``, counted as
    ``generator_jvp`` and measured at 2 to 3.5 forward passes of FLOPs (primal and tangent together)."""
    run = make_run("scm")
    training_step(run)
    (shape, (flops, passes)), = run.cost.per_phase.items()
    assert shape[0] == "generator"
    assert passes == {"generator_forward": BATCH, "generator_backward": BATCH, "generator_jvp": BATCH,
                      "teacher_forward": BATCH}
    student, teacher = run.generator.denoiser, run.parts.teacher
    x, sigma = torch.randn(BATCH, DIM), torch.full((BATCH,), 1.0)
    forward = pass_flops(student, x, False, False, False, sigma)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        torch.func.jvp(lambda x_, s_: student(x_, s_), (x, sigma), (torch.randn_like(x), sigma))
    jvp = counter.get_total_flops()
    assert 2 <= jvp / forward <= 3.5, jvp / forward
    weight = run.parts.loss_weight.linear  # the learned weight: a linear layer, forward and backward
    weight_flops = 3 * 2 * BATCH * weight.in_features
    predicted = (forward + pass_flops(student, x, True, True, False, sigma) + jvp
                 + pass_flops(teacher, x, False, False, False, sigma) + weight_flops)
    assert flops == pytest.approx(predicted, rel=0.01)
    assert "fake_forward" not in run.cost.passes and "loss_fake" not in training_step(run)


def test_rcm_passes_are_the_same_before_and_after_its_dmd_term_starts():
    """rCM's DMD term runs at weight 0 during the tangent warm-up, so the once-measured phase holds after it."""
    run = make_run("rcm", tangent_warmup_iterations=1)
    training_step(run)
    (_, measured), = [(s, p) for s, (f, p) in run.cost.per_phase.items() if s[0] == "generator"]
    assert measured == {"generator_forward": 2 * BATCH, "generator_backward": 2 * BATCH, "generator_jvp": BATCH,
                        "teacher_forward": 2 * BATCH, "fake_forward": BATCH}
    with count_passes(run.cost.networks) as passes:  # the next step is past the warm-up: the DMD term is on
        row = training_step(run)
    assert row["loss_g"] != row["loss_scm"]
    first_step = sum((p for _, p in run.cost.per_phase.values()), Counter())
    assert passes == first_step


@pytest.mark.parametrize("method", ["sida", "uni_instruct"])
def test_passes_after_the_gan_term_starts_include_the_discriminator(method):
    """SiDA's GAN term (and Uni-Instruct's density ratio) start at gan_start_kimg: the step's cost is
    measured again there, so the meter's totals match the passes the steps actually ran."""
    sets = {"gan_start_kimg": 1.5 * BATCH / 1000}  # off in the first step, on from the second
    if method == "uni_instruct":
        sets["divergence"] = "kl"
    run = make_run(method, **sets)
    counted = Counter()
    for _ in range(3):
        with count_passes(run.cost.networks) as passes:
            training_step(run)
        counted.update(passes)
    assert len({s[0] for s in run.cost.per_phase}) == 2 and len(run.cost.per_phase) == 4  # before and after
    assert run.cost.passes == counted
    before, after = ({s: p for s, (f, p) in run.cost.per_phase.items() if s[-1] is on} for on in (False, True))
    generator = [sum(p.values()) for phases in (before, after) for s, p in phases.items() if s[0] == "generator"]
    assert generator[1] > generator[0]  # the discriminator's passes on the generator's samples


@pytest.mark.parametrize("method, teacher_passes", [("dmd2", 2), ("ddmd", 4), ("snoopi", 2)])
def test_a_guided_teachers_passes_are_passes_of_its_network(method, teacher_passes):
    """A guided call is two passes of the conditional network (null and class), and the guidance-based losses
    call the two parts directly: both count. Decoupled DMD (hybrid, paper weighting) takes the conditional
    and null parts at the DM level and at the CA level; SNOOPI one of each."""
    config = resolve("gaussian_cond", method, batch=BATCH, sets={"suite.dim": DIM, "suite.width": WIDTH,
                                                                 "suite.depth": DEPTH})
    config["device"] = "cpu"
    run = Run(config, torch.device("cpu"), quiet=True)
    training_step(run)
    generator_phase = [p for s, (f, p) in run.cost.per_phase.items() if s[0] == "generator"]
    assert generator_phase and generator_phase[0]["teacher_forward"] == teacher_passes * BATCH
