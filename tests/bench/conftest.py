import pytest
from bench_helpers import cli_caller


@pytest.fixture
def cli(capsys):
    """Run ``bench`` in-process; returns (exit status, stdout, stderr)."""
    return cli_caller(capsys)
