"""bench.analysis.styles: every method drawn distinctly, the same way in every figure."""
from bench.analysis.styles import method_styles


def test_methods_not_in_the_table_get_distinct_deterministic_styles():
    new = ["fdistill", "sida", "uni_instruct", "uni_instruct_kl", "uni_instruct_fkl", "fdistill_js", "zz"]
    styles = method_styles(new + ["sim", "dmd2"])
    assert len(set(styles.values())) == len(styles)
    assert method_styles(["uni_instruct_kl"])["uni_instruct_kl"] == styles["uni_instruct_kl"]
    again = method_styles(list(reversed(new)) + ["dmd2", "sim"])
    assert again == styles
