"""``bench methods`` and ``bench suites``: rows from the registries, JSON for scripts, measured cost."""
import json

import methods
from bench.suites import SUITES
from rundirs import COST, costed_results


def test_methods_lists_every_registered_method_with_its_recipe(cli):
    code, out, _ = cli("methods", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and sorted(rows) == methods.available()
    for name, row in rows.items():
        cls = methods.get(name)
        assert row["paper"] and row["minimises"], name
        assert row["defaults"] == cls.defaults and row["sigma_init"] == cls.recipe.sigma_init
        assert row["lr"] == cls.recipe.lr and row["gflop_per_kimg"] is None
    assert rows["dmd2"]["fake_updates_per_generator_update"] == 5
    assert rows["dmd"]["inputs"] == ["teacher_pairs"] and not rows["scm"]["fake_score"]
    code, text, _ = cli("methods")
    assert code == 0 and len(text.splitlines()) == len(rows)
    assert text.splitlines()[1].startswith("di: Luo et al. 2023")


def test_methods_reads_the_measured_gflop_per_kimg_from_runs(cli, tmp_path):
    code, out, _ = cli("methods", "--json", "--results", str(costed_results(tmp_path)))
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    for name, cost in COST.items():
        assert abs(rows[name]["gflop_per_kimg"] - cost["gflop_per_kimg"]) < 1e-9 * cost["gflop_per_kimg"], name
    assert rows["di"]["gflop_per_kimg"] is None
    code, text, _ = cli("methods", "--results", str(tmp_path))
    assert "sid: " in text and "25 GFLOP/kimg" in text


def test_suites_lists_every_suite_with_its_summary(cli):
    code, out, _ = cli("suites", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == SUITES.names()
    for row in rows:
        assert set(row) == {"name", "teacher", "data", "shape", "conditioning", "metrics"}, row["name"]
    t2i = next(r for r in rows if r["name"] == "t2i")
    assert "pickscore_raw" in t2i["metrics"]  # from the metric registry, not written by hand
    code, text, _ = cli("suites")
    assert code == 0 and text.splitlines()[2].startswith("digits: teacher EDM UNet")


def test_bad_input_is_one_line_and_exit_2(cli, tmp_path):
    code, out, err = cli("methods", "--results", str(tmp_path / "missing"))
    assert code == 2 and out == "" and err.strip() == f"bench: error: --results {tmp_path / 'missing'}: no such directory"
    code, _, err = cli("suites", "--bogus")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_run_help_names_the_suites(cli):
    from bench.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert all(name in text for name in SUITES.names()) and "bench methods" in text
