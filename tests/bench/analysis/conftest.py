"""Fixtures of the analysis tests: hand-built results folders whose every expected number is known."""
import pytest

import rundirs


@pytest.fixture
def results_dir(tmp_path):
    return rundirs.standard_results(tmp_path / "results")


@pytest.fixture
def costed_dir(tmp_path):
    return rundirs.costed_results(tmp_path / "results")
