"""Table tests of unpacked.safefs: what is in the way of a write, and what the write does with it.

Each case builds a small tree (`root/`, with `outside/` next to it standing for anything an image
must not reach), runs one safefs call, and checks one thing. Above all: nothing outside the tree
changes, whatever symlink is in the way, and a hard link shared with other trees is never written.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from unpacked.errors import StoreError
from unpacked.safefs import (
    make_dir,
    make_free_dirs,
    open_dir,
    opened,
    own_dir,
    put_file,
    replace_symlink,
    staged_dir,
    write_atomic,
    write_if_changed,
)

Setup = Callable[[Path, Path], None]  # (root, outside)
Act = Callable[[Path], Any]  # root -> result
Probe = Callable[[Path, Path, Any], Any]  # (root, outside, result) -> what is checked


def _in_root(call: Callable[[int], Any]) -> Act:
    """Run `call` with an fd of the tree's root."""

    def act(root: Path) -> Any:
        with opened(os.open(root, os.O_RDONLY | os.O_DIRECTORY)) as fd:
            return call(fd)

    return act


def _put(name: str, data: bytes = b"new", mode: int = 0o644) -> Act:
    return _in_root(lambda fd: put_file(fd, name, data, mode))


def _own(name: str) -> Act:
    return _in_root(lambda fd: os.close(own_dir(fd, name)))


def _open(name: str) -> Act:
    def call(fd: int) -> bool:
        child = open_dir(fd, name)
        if child is not None:
            os.close(child)
        return child is not None

    return _in_root(call)


def _kind(rel: str) -> Probe:
    """What is at `rel` under the root: file, dir, link, fifo or missing."""

    def probe(root: Path, outside: Path, result: Any) -> str:
        try:
            mode = os.lstat(root / rel).st_mode
        except FileNotFoundError:
            return "missing"
        kinds = {stat.S_ISLNK: "link", stat.S_ISDIR: "dir", stat.S_ISREG: "file", stat.S_ISFIFO: "fifo"}
        return next(name for test, name in kinds.items() if test(mode))

    return probe


def _content(path: str) -> Probe:
    """The bytes of `path`, relative to the parent of root and outside (`root/x`, `outside/x`)."""
    return lambda root, outside, result: (root.parent / path).read_bytes()


def _outside_names(root: Path, outside: Path, result: Any) -> list[str]:
    return sorted(p.name for p in outside.rglob("*"))


def _leftovers(root: Path, outside: Path, result: Any) -> list[str]:
    """Temporary names left anywhere (`.tmp` files, staging `.tmp-` directories)."""
    return sorted(p.name for p in root.parent.rglob("*") if ".tmp" in p.name)


def _result(root: Path, outside: Path, result: Any) -> Any:
    return result


def _mode(rel: str) -> Probe:
    return lambda root, outside, result: oct(stat.S_IMODE(os.lstat(root / rel).st_mode))


# --------------------------------------------------------------------------- setups


def _nothing(root: Path, outside: Path) -> None:
    pass


def _link(rel: str, target: str) -> Setup:
    """A symlink at `root/rel`; a target starting with `@` is under outside/ (absolute)."""

    def setup(root: Path, outside: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(str(outside / target[1:]) if target.startswith("@") else target, root / rel)

    return setup


def _file(rel: str, data: bytes = b"old", mode: int = 0o644) -> Setup:
    def setup(root: Path, outside: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        os.chmod(root / rel, mode)

    return setup


def _hardlink(rel: str) -> Setup:
    """`root/rel` a hard link of `outside/secret` (a file shared with another tree)."""
    return lambda root, outside: os.link(outside / "secret", root / rel)


def _dir(rel: str, mode: int = 0o755) -> Setup:
    def setup(root: Path, outside: Path) -> None:
        (root / rel).mkdir(parents=True)
        (root / rel / "inside").write_bytes(b"x")
        os.chmod(root / rel, mode)

    return setup


def _fifo(rel: str) -> Setup:
    return lambda root, outside: os.mkfifo(root / rel)


# --------------------------------------------------------------------------- the table

CASES: list[tuple[str, Setup, Act, Probe, Any]] = [
    # put_file: the new file replaces whatever is at the name, never writing into it.
    ("put: new file", _nothing, _put("f"), _content("root/f"), b"new"),
    ("put: new file mode", _nothing, _put("f", mode=0o755), _mode("f"), "0o755"),
    ("put: returns True when written", _nothing, _put("f"), _result, True),
    ("put: same content and mode kept", _file("f", b"new"), _put("f"), _result, False),
    ("put: same content, other mode rewritten", _file("f", b"new", 0o600), _put("f"), _mode("f"), "0o644"),
    ("put: abs symlink to outside file replaced", _link("f", "@secret"), _put("f"), _kind("f"), "file"),
    ("put: abs symlink target untouched", _link("f", "@secret"), _put("f"), _content("outside/secret"), b"secret"),
    (
        "put: rel symlink target untouched",
        _link("f", "../outside/secret"),
        _put("f"),
        _content("outside/secret"),
        b"secret",
    ),
    ("put: symlink with same content replaced", _link("f", "@new"), _put("f"), _kind("f"), "file"),
    (
        "put: dangling symlink creates nothing outside",
        _link("f", "@gone"),
        _put("f"),
        _outside_names,
        ["new", "secret"],
    ),
    ("put: hard link replaced", _hardlink("f"), _put("f"), _content("root/f"), b"new"),
    ("put: hard-linked file untouched", _hardlink("f"), _put("f"), _content("outside/secret"), b"secret"),
    ("put: directory in the way replaced", _dir("f"), _put("f"), _kind("f"), "file"),
    ("put: FIFO in the way replaced, no hang", _fifo("f"), _put("f"), _kind("f"), "file"),
    ("put: no temporary file left", _link("f", "@secret"), _put("f"), _leftovers, []),
    # open_dir: real directories only.
    ("open: real dir", _dir("d"), _open("d"), _result, True),
    ("open: missing", _nothing, _open("d"), _result, False),
    ("open: file", _file("d"), _open("d"), _result, False),
    ("open: symlink to a dir", _link("d", "@"), _open("d"), _result, False),
    ("open: relative symlink to a dir", _link("d", "../outside"), _open("d"), _result, False),
    # own_dir: a real directory we can write into, whatever was there.
    ("own: symlink replaced by a dir", _link("d", "@"), _own("d"), _kind("d"), "dir"),
    ("own: symlink target untouched", _link("d", "@"), _own("d"), _outside_names, ["new", "secret"]),
    ("own: file replaced by a dir", _file("d"), _own("d"), _kind("d"), "dir"),
    ("own: hard-linked file untouched", _hardlink("d"), _own("d"), _content("outside/secret"), b"secret"),
    ("own: existing dir kept", _dir("d"), _own("d"), _content("root/d/inside"), b"x"),
    ("own: read-only dir made writable", _dir("d", 0o555), _own("d"), _mode("d"), "0o755"),
    ("own: new dir mode ignores umask", _nothing, _own("d"), _mode("d"), "0o755"),
    # make_dir: only where nothing is.
    ("mkdir: symlink left alone", _link("d", "@"), _in_root(lambda fd: make_dir(fd, "d")), _kind("d"), "link"),
    (
        "mkdir: dangling symlink left alone",
        _link("d", "@gone"),
        _in_root(lambda fd: make_dir(fd, "d")),
        _outside_names,
        ["new", "secret"],
    ),
    # make_free_dirs: stop at the first non-directory, never create through a symlink.
    ("free dirs: created", _nothing, _in_root(lambda fd: make_free_dirs(fd, "a/b")), _kind("a/b"), "dir"),
    (
        "free dirs: symlinked parent",
        _link("a", "@"),
        _in_root(lambda fd: make_free_dirs(fd, "a/b")),
        _outside_names,
        ["new", "secret"],
    ),
    (
        "free dirs: dangling symlink",
        _link("a", "@gone"),
        _in_root(lambda fd: make_free_dirs(fd, "a/b")),
        _outside_names,
        ["new", "secret"],
    ),
    ("free dirs: file in the way kept", _file("a"), _in_root(lambda fd: make_free_dirs(fd, "a/b")), _kind("a"), "file"),
    # write_atomic / write_if_changed: trees we own, still never written through a link.
    ("atomic: new file", _nothing, lambda root: write_atomic(root / "s/f", b"new"), _content("root/s/f"), b"new"),
    (
        "atomic: symlink replaced",
        _link("f", "@secret"),
        lambda root: write_atomic(root / "f", b"new"),
        _kind("f"),
        "file",
    ),
    (
        "atomic: symlink target untouched",
        _link("f", "@secret"),
        lambda root: write_atomic(root / "f", b"new"),
        _content("outside/secret"),
        b"secret",
    ),
    (
        "atomic: hard-linked file untouched",
        _hardlink("f"),
        lambda root: write_atomic(root / "f", b"new"),
        _content("outside/secret"),
        b"secret",
    ),
    ("atomic: mode", _nothing, lambda root: write_atomic(root / "f", b"new", 0o600), _mode("f"), "0o600"),
    (
        "changed: same content not written",
        _file("f", b"new"),
        lambda root: write_if_changed(root / "f", b"new"),
        _result,
        False,
    ),
    ("changed: other content written", _file("f"), lambda root: write_if_changed(root / "f", b"new"), _result, True),
    # replace_symlink: one rename; a killed run's temporary link does not stop it.
    (
        "symlink: replaces a link",
        _link("l", "a"),
        lambda root: replace_symlink(root / "l", "b", root / ".l.tmp-link"),
        lambda r, o, x: os.readlink(r / "l"),
        "b",
    ),
    (
        "symlink: stale temporary removed",
        _link(".l.tmp-link", "x"),
        lambda root: replace_symlink(root / "l", "b", root / ".l.tmp-link"),
        _leftovers,
        [],
    ),
    (
        "symlink: replaces a file",
        _file("l"),
        lambda root: replace_symlink(root / "l", "b", root / ".l.tmp-link"),
        _kind("l"),
        "link",
    ),
]


def _failing_build(root: Path) -> None:
    with staged_dir(root / "built") as staging:
        (staging / "half").write_bytes(b"x")
        raise RuntimeError("killed")


def _build(root: Path, *, swap: bool = True) -> None:
    with staged_dir(root / "built", swap=swap) as staging:
        (staging / "new").write_bytes(b"x")


def _catching(act: Act, error: type[BaseException]) -> Act:
    def run(root: Path) -> str:
        try:
            act(root)
        except error as err:
            return type(err).__name__
        return "no error"

    return run


CASES += [
    # staged_dir: all or nothing.
    ("staged: built", _nothing, _build, _content("root/built/new"), b"x"),
    ("staged: mode 0755", _nothing, _build, _mode("built"), "0o755"),
    ("staged: old tree replaced", _dir("built"), _build, lambda r, o, x: sorted(os.listdir(r / "built")), ["new"]),
    ("staged: failure leaves nothing", _nothing, _catching(_failing_build, RuntimeError), _kind("built"), "missing"),
    ("staged: failure leaves no staging", _nothing, _catching(_failing_build, RuntimeError), _leftovers, []),
    (
        "staged: failure keeps the old tree",
        _dir("built"),
        _catching(_failing_build, RuntimeError),
        _content("root/built/inside"),
        b"x",
    ),
    ("staged: stale staging removed", _dir(".built.tmp-1"), _build, _leftovers, []),
    (
        "staged, no swap: full dest refused",
        _dir("built"),
        _catching(lambda r: _build(r, swap=False), OSError),
        _result,
        "OSError",
    ),
    (
        "staged, no swap: refusal leaves no staging",
        _dir("built"),
        _catching(lambda r: _build(r, swap=False), OSError),
        _leftovers,
        [],
    ),
    # errors name the path being written.
    (
        "atomic: parent a file",
        _file("p"),
        _catching(lambda r: write_atomic(r / "p/f", b""), StoreError),
        _result,
        "StoreError",
    ),
]


@pytest.mark.parametrize(
    ("setup", "act", "probe", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_safefs(tmp_path: Path, setup: Setup, act: Act, probe: Probe, expected: Any) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (outside / "new").write_bytes(b"new")
    setup(root, outside)
    assert probe(root, outside, act(root)) == expected
