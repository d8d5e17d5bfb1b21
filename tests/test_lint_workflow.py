"""The CI's lint check lets through only the lint this workflow answers on purpose."""

from __future__ import annotations

import pytest

from support.lint_workflow import unexpected_lints

CONDA = "    * Specify a conda environment or container for each rule.:\n      This way, ...\n"
LOG = "    * No log directive defined:\n      Without a log directive, ...\n"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("", []),
        (f"Lints for rule fetch_blob (line 1, rules/fetch.smk):\n{CONDA}", []),
        (f"Lints for rule a (line 1, x):\n{CONDA}Lints for rule b (line 1, y):\n{CONDA}", []),
        (f"Lints for rule fetch_blob (line 1, rules/fetch.smk):\n{LOG}", ["No log directive defined"]),
        (f"Lints for rule a (line 1, x):\n{CONDA}{LOG}", ["No log directive defined"]),
    ],
)
def test_unexpected_lints(output: str, expected: list[str]) -> None:
    assert unexpected_lints(output) == expected
