"""paths.py by table: entry names cleaned, and paths resolved inside a root whatever its symlinks say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unpacked.errors import LayerError
from unpacked.paths import MAX_SYMLINKS, clean_entry_name, resolve_in_root, resolve_parent

# (tar entry name, layer-relative path)
CLEAN = [
    ("etc/passwd", "etc/passwd"),
    ("./etc//passwd", "etc/passwd"),
    ("/etc/passwd", "etc/passwd"),  # absolute names count from the root
    ("etc/", "etc"),
    ("a/./b/.", "a/b"),
    (".", ""),
    ("./", ""),
    ("/", ""),
    ("", ""),
    ("...", "..."),  # three dots are a name
    ("..a/b..", "..a/b.."),
    (".wh..wh..opq", ".wh..wh..opq"),
]


@pytest.mark.parametrize(("name", "expected"), CLEAN)
def test_clean_entry_name(name: str, expected: str) -> None:
    assert clean_entry_name(name, "layer") == expected


@pytest.mark.parametrize("name", ["..", "../x", "a/../b", "a/..", "/..", "./../etc", "a/b/../../.."])
def test_clean_entry_name_refuses_dot_dot(name: str) -> None:
    with pytest.raises(LayerError, match=r"^layer: entry .* has a '\.\.' component; refused$"):
        clean_entry_name(name, "layer")


# The image root the resolution tables run in: symlinks of every kind, a file and a directory.
LINKS = {
    "abs": "/etc",
    "rel": "etc",
    "up": "../../..",
    "loop": "loop",
    "ping": "pong",
    "pong": "ping",
    "deep": "rel/../abs",
    "etc/parent": "..",
    "etc/self": ".",
    "etc/outside": "/../../../../tmp",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    top = tmp_path_factory.mktemp("image-root")
    (top / "etc").mkdir()
    (top / "file").write_text("x")
    for name, target in LINKS.items():
        os.symlink(target, top / name)
    chain = top / "chain"  # chain/0 -> 1 -> ... : one more link than Linux follows
    chain.mkdir()
    for n in range(MAX_SYMLINKS + 1):
        os.symlink(str(n + 1), chain / str(n))
    return str(top)


# (path asked for, where it is inside the root: every component followed, the last one too)
IN_ROOT = [
    ("etc/x", "etc/x"),
    ("abs/x", "etc/x"),  # absolute targets count from the root
    ("rel/x", "etc/x"),
    ("rel", "etc"),
    ("up/x", "x"),  # `..` stops at the root
    ("up/etc/x", "etc/x"),
    ("../../etc", "etc"),
    ("/etc/x", "etc/x"),
    ("./etc/./x", "etc/x"),
    ("deep/x", "etc/x"),
    ("etc/parent/abs/y", "etc/y"),
    ("etc/self/self/x", "etc/x"),
    ("etc/outside/x", "tmp/x"),  # an escape through `..` lands inside the root
    ("file/x", "file/x"),  # not a symlink: kept as it is
    ("missing/../x", "x"),
    ("", ""),
    ("chain/40", "chain/41"),  # the end of the chain does not exist
]


@pytest.mark.parametrize(("rel", "expected"), IN_ROOT)
def test_resolve_in_root(root: str, rel: str, expected: str) -> None:
    assert resolve_in_root(root, rel, "layer") == expected


# (path asked for, where its entry goes: parents followed, the last component never)
PARENT = [
    ("rel", "rel"),
    ("abs", "abs"),
    ("rel/x", "etc/x"),
    ("abs/passwd", "etc/passwd"),
    ("etc/parent", "etc/parent"),
    ("etc/parent/x", "x"),
    ("up/x", "x"),
    ("etc/outside/x", "tmp/x"),
    ("x", "x"),
]


@pytest.mark.parametrize(("rel", "expected"), PARENT)
def test_resolve_parent(root: str, rel: str, expected: str) -> None:
    assert resolve_parent(root, rel, "layer") == expected


@pytest.mark.parametrize("rel", ["loop/x", "ping/x", "ping", "chain/0/x"])
def test_resolve_in_root_refuses_link_loops(root: str, rel: str) -> None:
    with pytest.raises(LayerError, match="too many levels of symbolic links"):
        resolve_in_root(root, rel, "layer")


@pytest.mark.parametrize("rel", ["loop/x", "chain/0/x"])
def test_resolve_parent_refuses_link_loops(root: str, rel: str) -> None:
    with pytest.raises(LayerError, match="too many levels of symbolic links"):
        resolve_parent(root, rel, "layer")


@pytest.mark.parametrize("rel", [rel for rel, _ in IN_ROOT])
def test_resolved_path_stays_inside_the_root(root: str, rel: str) -> None:
    resolved = os.path.realpath(Path(root, resolve_in_root(root, rel, "layer")))
    assert os.path.commonpath([resolved, os.path.realpath(root)]) == os.path.realpath(root)
