"""recipe.py by table: documents parsed (no file), their refusals word for word, ignoreErrors matching."""

from __future__ import annotations

import pytest

from unpacked.errors import RecipeError
from unpacked.recipe import Recipe, parse_recipe
from unpacked.reference import parse_reference

DIGEST = "sha256:" + "cd" * 32

# (document, the published names of its images, in order)
ACCEPTED = [
    (["quay.io/a/b:1"], ["quay.io/a/b:1"]),
    (["quay.io/a/b:2", "quay.io/a/b:1"], ["quay.io/a/b:2", "quay.io/a/b:1"]),  # recipe order, not sorted
    (["quay.io/a/b:1", "quay.io/a/b:1"], ["quay.io/a/b:1"]),  # duplicates merged
    (["quay.io/a/b:1", "https://quay.io/a/b:1"], ["quay.io/a/b:1"]),  # https is the default scheme
    (["quay.io/a/b:1", " quay.io/a/b:1 "], ["quay.io/a/b:1"]),
    (["quay.io/a/b@" + DIGEST, "quay.io/a/b:1"], ["quay.io/a/b@" + DIGEST, "quay.io/a/b:1"]),
    ([], []),
    ({"input": None}, []),
    ({"version": 1, "input": ["quay.io/a/b:1"]}, ["quay.io/a/b:1"]),
    (
        {"version": 1, "user": "u", "cvmfs_repo": "r", "output_format": "f", "input": ["h.io/x:1"], "ignoreErrors": []},
        ["h.io/x:1"],
    ),
    ({"input": ["quay.io/a/b:*"]}, ["quay.io/a/b:*"]),  # a glob stays a glob until resolution
]


@pytest.mark.parametrize(("document", "names"), ACCEPTED)
def test_parse_recipe_accepts(document: object, names: list[str]) -> None:
    assert [ref.published_name for ref in parse_recipe(document).images] == names


@pytest.mark.parametrize(
    ("document", "ignore"),
    [
        ({"input": []}, []),
        ({"input": [], "ignoreErrors": None}, []),
        ({"input": [], "ignoreErrors": ["quay.io/*", "ghcr.io/x:1"]}, ["quay.io/*", "ghcr.io/x:1"]),
        (["quay.io/a/b:1"], []),  # a plain list has no ignoreErrors
    ],
)
def test_parse_recipe_ignore_errors(document: object, ignore: list[str]) -> None:
    assert parse_recipe(document).ignore_errors == ignore


WISHLIST = "cvmfs_repo, ignoreErrors, input, output_format, user, version"

# (document, the whole message, the source being "r.yaml")
REFUSED = [
    (None, "recipe r.yaml: the file is empty"),
    ("quay.io/a/b:1", "recipe r.yaml: expected a list of images or a wishlist mapping with 'input'"),
    (42, "recipe r.yaml: expected a list of images or a wishlist mapping with 'input'"),
    ({"version": 1}, "recipe r.yaml: no 'input' list of images"),
    ({"input": [], "zz": 1, "aa": 2}, f"recipe r.yaml: unknown key(s) aa, zz; a wishlist has {WISHLIST}"),
    ({"input": [], 7: 1}, f"recipe r.yaml: unknown key(s) 7; a wishlist has {WISHLIST}"),
    ({"input": [], "version": 2}, "recipe r.yaml: version 2 unknown (use 1)"),
    ({"input": [], "version": "1"}, "recipe r.yaml: version '1' unknown (use 1)"),
    ({"input": "quay.io/a/b:1"}, "recipe r.yaml: 'input' must be a list of image strings"),
    ({"input": [], "ignoreErrors": "quay.io/*"}, "recipe r.yaml: 'ignoreErrors' must be a list of strings"),
    ({"input": [], "ignoreErrors": ["a", 1]}, "recipe r.yaml: 'ignoreErrors' must be a list of strings"),
    ([None], "recipe r.yaml: entry 1 (None) is not a string"),
    (["quay.io/a/b:1", 3], "recipe r.yaml: entry 2 (3) is not a string"),
    (["quay.io/a/b"], "recipe r.yaml: entry 1: 'quay.io/a/b': no tag or digest (add :latest to mean latest)"),
    (
        ["quay.io/a/b:1", "http://quay.io/a/b:1"],
        "recipe r.yaml: entries 1 (https://quay.io/a/b:1) and 2 (http://quay.io/a/b:1) would both be published "
        "as quay.io/a/b:1; keep one of them",
    ),
]


@pytest.mark.parametrize(("document", "message"), REFUSED)
def test_parse_recipe_refuses(document: object, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(document, source="r.yaml")
    assert str(info.value) == message


# (ignoreErrors patterns, a failed entry, ignored?)
IGNORED = [
    ([], "quay.io/a/b:1", False),
    (["quay.io/a/*"], "quay.io/a/b:1", True),
    (["quay.io/a/*"], "quay.io/ab:1", False),
    (["quay.io/a/*"], "quay.io/a/b/c:1", True),  # fnmatch: * crosses '/'
    (["ghcr.io/*", "quay.io/*"], "quay.io/a/b:1", True),  # any pattern
    (["http://quay.io/a/b:1"], "https://quay.io/a/b:1", True),  # the scheme is not compared
    (["quay.io/a/b:1"], "http://quay.io/a/b:1", True),
    (["quay.io/a/b:1"], "quay.io/a/b:1@" + DIGEST, False),  # the pin is part of the entry
    (["quay.io/a/b:1*"], "quay.io/a/b:1@" + DIGEST, True),
    (["QUAY.IO/*"], "quay.io/a/b:1", False),  # case-sensitive
    (["quay.io/a/b:[0-9]"], "quay.io/a/b:7", True),
    (["quay.io/a/b:[!0-9]"], "quay.io/a/b:7", False),
    (["*"], "localhost:5000/x@" + DIGEST, True),
]


@pytest.mark.parametrize(("patterns", "entry", "expected"), IGNORED)
def test_is_ignored(patterns: list[str], entry: str, expected: bool) -> None:
    assert Recipe(images=[], ignore_errors=patterns).is_ignored(parse_reference(entry)) is expected
