"""bench.train.evaluation: the latent bank and its final extension, and the final evaluation's two counts."""
import json

import torch

from bench import suites
from bench.rundir import start_run
from bench.train import runconfig
from bench.train.evaluation import latent_bank
from bench.train.loop import Run


def test_final_bank_extends_the_training_bank_exactly():
    suite = suites.create("gaussian", dim=4, width=16, depth=1)
    z, _ = latent_bank(suite, 3, 100)
    z_final, _ = latent_bank(suite, 3, 100, 250)
    assert z_final.shape[0] == 250 and torch.equal(z_final[:100], z)
    assert not torch.equal(latent_bank(suite, 4, 100)[0], z)  # another seed, other latents


def test_log_schedule_and_final_evaluation_at_both_counts(tmp_path):
    config = runconfig.resolve("gaussian", "sid", batch=8, kimg=0.064, eval_every=0.008, checkpoint_every=0.064,
                               sets={"suite.dim": 4, "suite.width": 16, "suite.depth": 1, "suite.n_eval": 64,
                                     "train.n_eval_final": 128, "train.eval_growth": 2.0})
    run = Run(config, torch.device("cpu"), quiet=True)
    start_run(tmp_path, config, provenance={})
    run.attach(tmp_path)
    assert run.train(lambda: False) == "done"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    counts = {}
    for r in rows:
        counts.setdefault(r["kimg"], set()).add(r["n_samples"])
    assert sorted(counts) == [0.0, 0.008, 0.016, 0.032, 0.064]  # doubling after the first 8 images
    assert all(c == {64} for k, c in counts.items() if k < 0.064) and counts[0.064] == {64, 128}
