"""bounded.py by table: user data shown in error messages, cut to a bound."""

from __future__ import annotations

import pytest

from unpacked.bounded import bounded_repr, bounded_text

ABC = "a" * 50 + "b" * 50 + "c" * 50

# (text, limit, shown): the head gets two thirds of what is left after "...", the tail one third
TEXTS = [
    ("", 100, ""),
    ("abc", 3, "abc"),  # fits: whole
    ("abcd", 3, "..."),  # no room for either end
    ("abcdef", 5, "ab..."),  # (5 - 3) // 3 = 0 characters of tail
    ("abcdefgh", 7, "abc...h"),
    ("abcdefghij", 9, "abcd...ij"),
    (ABC, 40, "a" * 25 + "..." + "c" * 12),
]


@pytest.mark.parametrize(("text", "limit", "shown"), TEXTS)
def test_bounded_text(text: str, limit: int, shown: str) -> None:
    assert bounded_text(text, limit) == shown


@pytest.mark.parametrize(("length", "limit"), [(101, 100), (10_000, 100), (10, 4), (7, 6), (1_000_000, 300)])
def test_bounded_text_is_exactly_the_limit_when_cut(length: int, limit: int) -> None:
    assert len(bounded_text("x" * length, limit)) == limit


# (value, limit, shown)
REPRS: list[tuple[object, int, str]] = [
    ("short", 100, "'short'"),
    (42, 100, "42"),
    (None, 100, "None"),
    ({"a": [1, 2]}, 100, "{'a': [1, 2]}"),
    ([1, 2, 3, 4, 5], 100, "[1, 2, 3, 4, ...]"),  # four items of a container
    ([[["x"]]], 100, "[[['x']]]"),  # three levels
    ([[[["x"]]]], 100, "[[[[...]]]]"),  # not four
    (10**5000, 100, "<int>"),  # too long for str(): the type says what it was
    ("x" * 1000, 20, "'" + "x" * 7 + "..." + "x" * 8 + "'"),
]


@pytest.mark.parametrize(("value", "limit", "shown"), REPRS, ids=[shown for _, _, shown in REPRS])
def test_bounded_repr(value: object, limit: int, shown: str) -> None:
    assert bounded_repr(value, limit) == shown


HUGE = 1_000_000


@pytest.mark.parametrize(
    "value",
    ["s" * HUGE, list(range(HUGE)), {str(n): n for n in range(10_000)}, 10**100_000, b"\x00" * HUGE, ("t",) * HUGE],
    ids=["string", "list", "dict", "integer", "bytes", "tuple"],
)
@pytest.mark.parametrize("limit", [20, 100])
def test_bounded_repr_stays_within_the_limit(value: object, limit: int) -> None:
    assert 0 < len(bounded_repr(value, limit)) <= limit
