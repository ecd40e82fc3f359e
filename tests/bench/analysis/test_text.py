"""bench.analysis.text: numbers as people read them."""
import math

import pytest

from bench.analysis.text import fmt, fmt_duration, lr_text, samples_label


@pytest.mark.parametrize("lr, text", [(1e-4, "1e-4"), (1e-5, "1e-5"), (2.5e-4, "2.5e-4"), (0.5, "0.5"),
                                      (0.01, "1e-2")])
def test_learning_rates_are_written_like_papers_do(lr, text):
    assert lr_text(lr) == text


@pytest.mark.parametrize("n, text", [(1000, "1k"), (50000, "50k"), (256, "256"), (1250, "1250"), (math.nan, "?")])
def test_sample_counts_read_short(n, text):
    assert samples_label(n) == text


def test_numbers_and_durations():
    assert fmt(math.nan) == "–" and fmt(3) == "3" and fmt(123.456) == "123.5" and fmt(1.2345, 0.05) == "1.23 ± 0.05"
    assert fmt_duration(12.3) == "12 s" and fmt_duration(4000) == "67 min" and fmt_duration(8000) == "2.2 h"
