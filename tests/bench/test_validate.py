"""bench.validate: one-line errors naming the option."""
import pytest

from bench import validate
from bench.errors import BadInput


@pytest.mark.parametrize("call, message", [
    (lambda: validate.positive("x", 0), "x must be a positive number, got 0"),
    (lambda: validate.positive("x", 2.5, integer=True), "x must be a positive integer, got 2.5"),
    (lambda: validate.positive("x", float("nan")), "x must be a positive number"),
    (lambda: validate.positive("x", True), "x must be a positive number"),
    (lambda: validate.non_negative("x", -1), "x must be a non-negative number"),
    (lambda: validate.number("x", 0.5, low=1, strict=False), "x must be a number >= 1"),
    (lambda: validate.positive("x", "abc", optional=True), "x must be a positive number or null"),
    (lambda: validate.boolean("x", "yes"), "x must be true or false"),
    (lambda: validate.choice("x", "c", ("a", "b")), "x must be one of a, b; got 'c'"),
    (lambda: validate.like_default("x", "abc", 8), "x must be an integer, got 'abc'"),
    (lambda: validate.like_default("x", 1, [1]), "x must be a list"),
])
def test_bad_values(call, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        call()


def test_good_values_keep_their_type():
    assert validate.positive("x", 3, integer=True) == 3 and validate.positive("x", 2) == 2.0
    assert validate.positive("x", None, optional=True) is None
    assert validate.like_default("x", 2, 1.0) == 2 and isinstance(validate.like_default("x", 2, 1.0), int)
    assert validate.like_default("x", "/a/path", None) == "/a/path"
