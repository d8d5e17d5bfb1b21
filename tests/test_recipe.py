"""Recipes: the real unpacked.cern.ch wishlist, plain lists, and broken recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from unpacked.errors import RecipeError
from unpacked.recipe import load_recipe, parse_recipe
from unpacked.reference import parse_reference

# The real unpacked.cern.ch wishlist, copied unchanged into the repository (see tests/data/README.md).
CERN_RECIPE = Path(__file__).parent / "data" / "recipe-images-unpacked.cern.ch.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_cern_recipe_loads_as_it_is() -> None:
    recipe = load_recipe(CERN_RECIPE)
    raw_entries = [line for line in CERN_RECIPE.read_text().splitlines() if line.strip().startswith("- ")]
    assert len(raw_entries) == 47
    assert len(recipe.images) == 46  # one duplicate merged
    published = [ref.published_name for ref in recipe.images]
    assert len(set(published)) == len(published)
    assert published.count("registry.hub.docker.com/stimela/pybdsf:1.6.6") == 1
    # First-seen order is kept.
    assert published[0] == "registry.hub.docker.com/library/centos:centos7"
    assert published[-1] == "registry.hub.docker.com/xlzdg3/xlzd_sandbox_offline_release:latest"
    globs = [ref for ref in recipe.images if ref.is_glob]
    assert [str(ref) for ref in globs] == ["https://ghcr.io/watonomous/actions-runner-image:*"]
    ported = [ref for ref in recipe.images if ref.registry == "gitlab-p4n.aip.de:5005"]
    assert len(ported) == 12
    assert ported[0].repository == "compute4punch/container-stacks/htcondor-wn"
    assert recipe.ignore_errors == []
    assert recipe.source == str(CERN_RECIPE)


def test_plain_yaml_list(tmp_path: Path) -> None:
    path = write(tmp_path, "- quay.io/a/b:1\n- 'https://ghcr.io/c/d:*'\n- quay.io/a/b:1\n")
    recipe = load_recipe(path)
    assert [str(ref) for ref in recipe.images] == ["https://quay.io/a/b:1", "https://ghcr.io/c/d:*"]
    assert recipe.ignore_errors == []


def test_wishlist_with_ignore_errors(tmp_path: Path) -> None:
    text = (
        "version: 1\nuser: u\ncvmfs_repo: r\noutput_format: 'x/$(image)'\n"
        "input:\n  - quay.io/some/thing:1\n  - ghcr.io/other/thing:1\n"
        "ignoreErrors:\n  - 'https://quay.io/some/*'\n"
    )
    recipe = load_recipe(write(tmp_path, text))
    assert len(recipe.images) == 2
    assert recipe.is_ignored(parse_reference("quay.io/some/thing:1"))
    assert not recipe.is_ignored(parse_reference("ghcr.io/other/thing:1"))


def test_wishlist_version_defaults_to_1(tmp_path: Path) -> None:
    assert len(load_recipe(write(tmp_path, "input: [quay.io/a/b:1]\n")).images) == 1


def test_empty_input_list_is_an_empty_recipe(tmp_path: Path) -> None:
    assert load_recipe(write(tmp_path, "version: 1\ninput: []\n")).images == []


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("input: [quay.io/a/b:1\n", ["not valid YAML"]),
        ("", ["the file is empty"]),
        ("# only a comment\n", ["the file is empty"]),
        ("version: 1\ninput: [quay.io/a/b:1]\nimages: []\nzz: 1\n", ["unknown key(s) images, zz"]),
        ("version: 1\nuser: u\n", ["no 'input' list"]),
        ("version: 1\ninput: quay.io/a/b:1\n", ["'input' must be a list"]),
        ("version: 1\ninput: {a: b}\n", ["'input' must be a list"]),
        ("just a string\n", ["expected a list of images or a wishlist"]),
        ("- quay.io/a/b:1\n- 42\n", ["entry 2", "42", "is not a string"]),
        ("input:\n  - quay.io/a/b:1\n  - {x: 1}\n", ["entry 2", "is not a string"]),
        ("- quay.io/a/b:1\n- quay.io/a/b:2\n- quay.io/Bad/b:1\n", ["entry 3", "invalid repository", "quay.io/Bad/b:1"]),
        ("- quay.io/a/b@sha256:../../x\n", ["entry 1", "invalid digest"]),
        ("input: [quay.io/a/b:1]\nignoreErrors: 'quay.io/*'\n", ["'ignoreErrors' must be a list of strings"]),
        ("input: [quay.io/a/b:1]\nignoreErrors: [1, 2]\n", ["'ignoreErrors' must be a list of strings"]),
        ("version: 2\ninput: [quay.io/a/b:1]\n", ["version 2 unknown"]),
        (
            "- quay.io/a/b:1\n- library/busybox:1.36\n",
            ["entry 2", "'library' is not a registry host", "e.g. registry.hub.docker.com/library/busybox:1.36"],
        ),
        ("input: [busybox:1.36]\n", ["entry 1", "no registry host", "registry.hub.docker.com/library/busybox:1.36"]),
        ("- quay.io/a/b:1\n- [[[[[[x]]]]]]\n", ["entry 2 ([[[[...]]]])", "is not a string"]),
        ("input: [a\n", ["not valid YAML: line 2, column 1", "expected ',' or ']'"]),
    ],
)
def test_broken_recipes(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message, message  # the file is named
    for fragment in fragments:
        assert fragment in message, message


def test_missing_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError, match="cannot read it") as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_parse_recipe_names_source() -> None:
    with pytest.raises(RecipeError, match=r"recipe inline.yaml: entry 1: .*no tag or digest"):
        parse_recipe(["quay.io/a/b"], source="inline.yaml")


def test_two_entries_publishing_the_same_name_are_refused() -> None:
    digest = "sha256:" + "a" * 64
    with pytest.raises(RecipeError) as info:
        parse_recipe(["quay.io/org/app:1", f"quay.io/org/app:1@{digest}"], source="r.yaml")
    message = str(info.value)
    assert "entries 1" in message and "and 2" in message
    assert "both be published as quay.io/org/app:1" in message
