"""gc.py's pure parts by table: which root paths are published names, which a recipe still wants, and
how a plan lists and sums itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from unpacked.gc import Plan, _wanted, is_published_name, summary
from unpacked.recipe import parse_recipe

DIGEST = "sha256:" + "0a" * 32

# (path below the root, is it a name the layout publishes?)
NAMES = [
    ("quay.io/a/b:1", True),
    ("localhost:5000/a:1", True),
    (f"quay.io/a/b@{DIGEST}", True),
    (".multiarch/amd64/quay.io/a:1", True),
    (".multiarch/arm64:v8/quay.io/a:1", True),
    (f".multiarch/arm64:v8/quay.io/a@{DIGEST}", True),
    (f"quay.io/a/b:1@{DIGEST}", False),  # published as quay.io/a/b:1
    (".multiarch/arm64:v8:x/quay.io/a:1", False),
    (".multiarch/../quay.io/a:1", False),
    (".multiarch/amd64", False),
    (".multiarch/amd64/.multiarch/amd64/quay.io/a:1", False),
    ("quay.io/a/b:*", False),  # a glob is never published as such
    ("quay.io/a/b", False),
    ("https://quay.io/a:1", False),
    ("quay.io/a/b:1\n", False),
    (".flat/0a/" + "0a" * 32, False),
    (".metadata/quay.io/a:1", False),
    ("library/busybox:1", False),  # no registry host
    ("quay.io/A/b:1", False),
    ("", False),
]


@pytest.mark.parametrize(("name", "published"), NAMES)
def test_is_published_name(name: str, published: bool) -> None:
    assert is_published_name(name) is published


RECIPE = parse_recipe(["quay.io/a/b:1", "http://quay.io/c/d:v*", f"quay.io/e@{DIGEST}", "quay.io/f:[0-9]"])

# (published name, does the recipe above still want it?)
WANTED = [
    ("quay.io/a/b:1", True),
    ("quay.io/a/b:2", False),
    ("quay.io/c/d:v1", True),  # through the glob
    ("quay.io/c/d:v1.2-rc", True),
    ("quay.io/c/d:w1", False),
    ("quay.io/c/dd:v1", False),
    (f"quay.io/e@{DIGEST}", True),
    ("quay.io/e:1", False),
    ("quay.io/f:7", True),
    ("quay.io/f:77", False),
    ("ghcr.io/a/b:1", False),
]


@pytest.mark.parametrize(("name", "wanted"), WANTED)
def test_wanted(name: str, wanted: bool) -> None:
    assert _wanted(name, RECIPE) is wanted


PLAN = Plan(
    links=["quay.io/a:1", ".multiarch/amd64/quay.io/a:1"],
    flats=[Path("/r/.flat/aa/aa1")],
    layers=[Path("/w/layers/bb/bb1"), Path("/w/layers/bb/bb2")],
    blobs=[Path("/w/blobs/sha256/cc1")],
    leftovers=[Path("/w/flat/.dd.tmp")],
)


@pytest.mark.parametrize(
    ("plan", "lines"),
    [
        (Plan(), []),
        (
            PLAN,
            [
                "quay.io/a:1",
                ".multiarch/amd64/quay.io/a:1",
                "/r/.flat/aa/aa1",
                "/w/layers/bb/bb1",
                "/w/layers/bb/bb2",
                "/w/blobs/sha256/cc1",
                "/w/flat/.dd.tmp",
            ],
        ),
    ],
)
def test_plan_lines(plan: Plan, lines: list[str]) -> None:
    assert plan.lines() == lines


@pytest.mark.parametrize(
    ("plan", "text"),
    [
        (Plan(), '{"links": 0, "flats": 0, "layers": 0, "blobs": 0, "leftovers": 0}'),
        (PLAN, '{"links": 2, "flats": 1, "layers": 2, "blobs": 1, "leftovers": 1}'),
    ],
)
def test_summary(plan: Plan, text: str) -> None:
    assert summary(plan) == text
