"""Hostile layers: one test per hostile item of the checklist in oci-unpacking.md.

Every case builds its layers byte by byte and asserts three things:
- a canary directory NEXT TO the output root is untouched (names, contents, modes, mtimes);
- the image is REFUSED with an error naming the layer and the entry, or, where the spec says
  paths are interpreted inside the image (absolute names, symlinks), UNPACKED SAFELY inside it;
  each test says which;
- for the workflow-level cases, the previously published version of the tag is still served.

Most cases run at the extractor level (extract_layer + flatten_image, fast). A representative set runs
through the whole Snakemake workflow against a real registry on 127.0.0.1 (and a small fake registry
for what a real one refuses to store: traversal digests, blobs that do not match their digest).

Also here: ownership and permissions (the workflow run as an unprivileged user, owners kept as root)
and nested results staying apart (two images sharing layers).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from unpacked.errors import LayerError
from unpacked.extract import MAX_LAYER_BYTES_ENV, extract_layer, read_layer_index
from unpacked.fsutil import remove_tree
from unpacked.store import Store

from support import oci
from support.loopback import LoopbackServer
from support.registry import LocalRegistry
from support.unpack import unpack
from support.workflow import run_workflow, snakemake_command, workflow_env, write_config

CONFIG = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}}
CANARY_MTIME = 1_000_000_000

# -------------------------------------------------------------------------------------------------
# Helpers: the canary, snapshots, building an image at the extractor level
# -------------------------------------------------------------------------------------------------


def make_canary(path: Path) -> None:
    """A directory that must never change: files, a subdirectory, a file an attacker would want."""
    (path / "sub").mkdir(parents=True)
    (path / "etc").mkdir()
    (path / "keep").write_text("keep\n")
    (path / "sub" / "inner").write_text("inner\n")
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    for item in sorted(path.rglob("*"), reverse=True):
        os.chmod(item, 0o755 if item.is_dir() else 0o644)
        os.utime(item, (CANARY_MTIME, CANARY_MTIME))
    os.utime(path, (CANARY_MTIME, CANARY_MTIME))


def snapshot(root: Path, with_inode: bool = False) -> dict[str, tuple[Any, ...]]:
    """Every path under `root` (itself included, as "."): type, mode, owner, mtime, content or target.

    Link counts and ctimes are left out: another image linking the same inode changes them without
    changing the file.
    """
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if dirpath == str(root) else [*dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name != "." else dirpath
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as handle:
                    content: str = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = "-> " + os.readlink(full)
            else:
                content = ""
            entry: tuple[Any, ...] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, content)
            if with_inode:
                entry += (st.st_ino,)
            found[os.path.relpath(full, root)] = entry
    return found


@dataclass
class Sandbox:
    """`base/output` (where flat images go), `base/work` (layers) and `base/canary` next to them."""

    base: Path
    built: int = 0
    canary_before: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        make_canary(self.canary)
        self.canary_before = snapshot(self.canary)

    @property
    def canary(self) -> Path:
        return self.base / "canary"

    @property
    def root(self) -> Path:
        return self.base / "output"

    @property
    def abs_target(self) -> str:
        """The canary's absolute host path: a symlink target that escapes if followed on the host."""
        return str(self.canary)

    @property
    def rel_target(self) -> str:
        """A relative target that reaches the host's canary from any depth below 30."""
        return "../" * 30 + str(self.canary).lstrip("/")

    @property
    def inside(self) -> str:
        """Where a write through a symlink to the canary lands: the same path, inside the image."""
        return str(self.canary).lstrip("/")

    @property
    def store(self) -> Store:
        """The store of the last build: `work/build<n>`, with the root `output/image<n>`."""
        return Store(self.base / "work" / f"build{self.built}", self.root / f"image{self.built}")

    def build(self, layers: list[bytes | oci.LayerBlob], compression: oci.Compression = "gzip") -> Path:
        """Fetch, extract (`layer 1`, `layer 2`...) and flatten `layers` with the core API: the flat tree.

        Each build has a store of its own: `work/build<n>` and the root `output/image<n>`."""
        self.built += 1
        flat = unpack(self.store, oci.build_image(layers, compression, config=CONFIG["config"]))
        self.check_canary()
        return flat

    def refuse(
        self, layers: list[bytes | oci.LayerBlob], *fragments: str, compression: oci.Compression = "gzip"
    ) -> str:
        """Build `layers`, expecting a LayerError whose message holds every fragment; return it."""
        with pytest.raises(LayerError) as info:
            self.build(layers, compression)
        message = str(info.value)
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message!r}"
        self.check_canary()
        assert not list(self.store.root.glob(".flat/*/*")), "a refused image leaves no flat tree"
        leftovers = [p for p in self.base.rglob("*") if ".tmp-" in p.name]
        assert leftovers == [], "a refused layer or image leaves no staging directory"
        return message

    def check_canary(self) -> None:
        assert snapshot(self.canary) == self.canary_before, "something outside the image changed"
        # Nothing planted anywhere else either: only inside an image tree or a layer's rootfs.
        allowed = ("rootfs", "image")
        stray = [
            path
            for path in self.base.rglob("planted*")
            if not any(part == "rootfs" or part.startswith(allowed[1]) for part in path.relative_to(self.base).parts)
        ]
        assert stray == [], f"written outside any image: {stray}"


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def layer(*build: Any) -> bytes:
    """A layer from (method, *args) tuples of oci.TarLayer, in order."""
    tar = oci.TarLayer()
    for method, *args in build:
        getattr(tar, method)(*args)
    return tar.tar_bytes()


# -------------------------------------------------------------------------------------------------
# Names: `..`, absolute, `.` and `/`, a root entry that is not a directory
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("file", "../planted"),
        ("file", "a/../../planted"),
        ("file", "./../planted"),
        ("file", "../../../../../../../../canary/planted"),
        ("file", "a/../b"),  # stays inside, but every '..' is refused: no tool needs one
        ("dir", "../planted-dir"),
        ("symlink", "../planted-link"),
        ("fifo", "../planted-fifo"),
        ("hardlink-name", "../planted-hardlink"),
        ("hardlink-target", "x"),
    ],
)
def test_dotdot_names_are_refused(box: Sandbox, kind: str, name: str) -> None:
    """REFUSED: an entry (or hard-link target) with a `..` component; the error names layer and entry."""
    tar = oci.TarLayer().add_file("etc/ok", b"ok")
    if kind == "file":
        tar.add_file(name, b"x")
    elif kind == "dir":
        tar.add_dir(name)
    elif kind == "symlink":
        tar.add_symlink(name, "etc/ok")
    elif kind == "fifo":
        tar.add_fifo(name)
    elif kind == "hardlink-name":
        tar.add_hardlink(name, "etc/ok")
    else:
        tar.add_hardlink(name, "../../canary/keep")
    message = box.refuse([oci.TarLayer().add_file("base", b"b").tar_bytes(), tar.tar_bytes()], "layer 2", "'..'")
    assert repr(name) in message


@pytest.mark.parametrize("name", ["/etc/abs", "//etc/abs", "/./etc/abs", "./etc/abs", "etc//abs", "CANARY"])
def test_absolute_names_land_inside_the_image(box: Sandbox, name: str) -> None:
    """UNPACKED SAFELY: a leading `/` (or `./`, `//`) counts from the image root, as in a container."""
    name = f"{box.canary}/planted" if name == "CANARY" else name
    flat = box.build([oci.TarLayer().add_file(name, b"absolute").tar_bytes()])
    expected = flat / name.lstrip("./").replace("//", "/")
    assert expected.read_bytes() == b"absolute"
    assert expected.resolve().is_relative_to(flat)


@pytest.mark.parametrize("name", [".", "./", "/", "/.", "//", "./."])
def test_dot_and_slash_directory_entries_are_the_root(box: Sandbox, name: str) -> None:
    """UNPACKED SAFELY: a directory entry naming the root; its metadata is ignored (the root stays 0755)."""
    flat = box.build([oci.TarLayer().add_dir(name, mode=0o777, uid=1234).add_file("etc/f", b"f").tar_bytes()])
    st = flat.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
    assert (flat / "etc/f").read_bytes() == b"f"


@pytest.mark.parametrize("name", [".", "./", "/", "/.", "//"])
@pytest.mark.parametrize("kind", ["symlink-abs", "symlink-rel", "file", "hardlink", "fifo"])
@pytest.mark.parametrize("position", [0, 1])
def test_root_entry_that_is_not_a_directory_is_refused(box: Sandbox, name: str, kind: str, position: int) -> None:
    """REFUSED: umoci CVE-2021-29136 (`/.` a symlink to a host directory, then files through it).

    The root entry comes in the first layer or in a second one; files follow it in the same layer.
    """
    tar = oci.TarLayer()
    if kind == "symlink-abs":
        tar.add_symlink(name, box.abs_target)
    elif kind == "symlink-rel":
        tar.add_symlink(name, box.rel_target)
    elif kind == "file":
        tar.add_file(name, b"root as a file")
    elif kind == "hardlink":
        tar.add_hardlink(name, "etc/passwd")
    else:
        tar.add_fifo(name)
    tar.add_file("etc/passwd", b"pwned\n").add_file("planted", b"x")
    layers = [tar.tar_bytes()]
    if position == 1:
        layers.insert(0, oci.TarLayer().add_file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n").tar_bytes())
    message = box.refuse(layers, f"layer {position + 1}", "replace the image root")
    assert repr(name) in message


# -------------------------------------------------------------------------------------------------
# Writes through symlinks: same layer, across layers, relative and absolute targets
# -------------------------------------------------------------------------------------------------

TARGETS = ["absolute", "relative", "root", "dotdot"]
WRITES = ["file", "dir", "dir-and-file", "symlink", "hardlink", "fifo", "deep-file"]


def _target(box: Sandbox, kind: str) -> tuple[str, str]:
    """(symlink target, where a write through it lands inside the image, relative to the root)."""
    return {
        "absolute": (box.abs_target, box.inside),
        "relative": (box.rel_target, box.inside),
        "root": ("/", ""),
        "dotdot": ("../../../../../../../../../..", ""),
    }[kind]


def _write_through(tar: oci.TarLayer, write: str) -> str:
    """Add entries under `evil/`; return the path (under evil/) that must end up as a regular file."""
    if write == "file":
        tar.add_file("evil/keep", b"through", mode=0o4777)
        return "keep"
    if write == "dir":
        tar.add_dir("evil/sub", mode=0o777)
        tar.add_file("evil/sub/planted", b"through")
        return "sub/planted"
    if write == "dir-and-file":
        tar.add_dir("evil/etc", mode=0o777).add_file("evil/etc/passwd", b"through")
        return "etc/passwd"
    if write == "symlink":
        tar.add_symlink("evil/keep", "/bin/sh").add_file("evil/real", b"through")
        return "real"
    if write == "hardlink":
        tar.add_file("source", b"through").add_hardlink("evil/keep", "source")
        return "keep"
    if write == "fifo":
        tar.add_fifo("evil/fifo").add_file("evil/keep", b"through")
        return "keep"
    tar.add_file("evil/a/b/c/d/e/planted", b"through")
    return "a/b/c/d/e/planted"


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("target", TARGETS)
def test_write_through_symlink_in_the_same_layer(box: Sandbox, target: str, write: str) -> None:
    """UNPACKED SAFELY: the symlink is followed inside the image root; nothing is written outside."""
    link, lands = _target(box, target)
    tar = oci.TarLayer().add_symlink("evil", link)
    expect = _write_through(tar, write)
    flat = box.build([tar.tar_bytes()])
    assert (flat / "evil").is_symlink() and os.readlink(flat / "evil") == link
    landed = flat / lands / expect
    assert landed.read_bytes() == b"through" and not landed.is_symlink()


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("target", TARGETS)
def test_write_through_symlink_of_a_lower_layer(box: Sandbox, target: str, write: str) -> None:
    """UNPACKED SAFELY: a lower layer's symlink is followed inside the image root, never on the host."""
    link, lands = _target(box, target)
    lower = oci.TarLayer().add_symlink("evil", link).tar_bytes()
    upper = oci.TarLayer()
    expect = _write_through(upper, write)
    flat = box.build([lower, upper.tar_bytes()])
    assert (flat / "evil").is_symlink(), "an implied parent follows the lower symlink"
    landed = flat / lands / expect
    assert landed.read_bytes() == b"through" and not landed.is_symlink()


def test_symlink_chain_and_absolute_symlink_parents_resolve_inside(box: Sandbox) -> None:
    """UNPACKED SAFELY: chains of absolute symlinks as parents (`a -> /b`, `b -> /c/../d`, `x -> /`)."""
    lower = (
        oci.TarLayer()
        .add_symlink("a", "/b")
        .add_symlink("b", "/c/../d")
        .add_dir("d")
        .add_symlink("x", "/")
        .add_symlink("esc", box.abs_target + "/sub")
        .tar_bytes()
    )
    upper = (
        oci.TarLayer()
        .add_file("a/f", b"via a")
        .add_file("x/x/x/etc/f2", b"via x")
        .add_file("esc/inner", b"via esc")
        .add_symlink("y", "x/x/d")
        .add_file("y/g", b"via y")
        .tar_bytes()
    )
    flat = box.build([lower, upper])
    assert (flat / "d/f").read_bytes() == b"via a"
    assert (flat / "etc/f2").read_bytes() == b"via x"
    assert (flat / box.inside / "sub/inner").read_bytes() == b"via esc"
    assert (flat / "d/g").read_bytes() == b"via y"


@pytest.mark.parametrize("where", ["same layer", "lower layer"])
def test_symlink_loop_as_parent_is_refused(box: Sandbox, where: str) -> None:
    """REFUSED: a parent that never resolves (a symlink loop); the error names the layer and entry."""
    links = [("add_symlink", "loop", "/loop2"), ("add_symlink", "loop2", "loop")]
    write = ("add_file", "loop/planted", b"x")
    layers = [layer(*links, write)] if where == "same layer" else [layer(*links), layer(write)]
    number = len(layers)
    message = box.refuse(layers, f"layer {number}", "too many levels of symbolic links")
    assert "loop" in message


# -------------------------------------------------------------------------------------------------
# Metadata never follows symlinks (containerd CVE-2021-32760)
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["absolute", "relative"])
@pytest.mark.parametrize(
    "case",
    [
        "same layer: symlink, then a directory of that name",
        "same layer: directory and subdirectory, then a symlink replacing the directory",
        "same layer: symlink, then a setuid file of that name",
        "same layer: symlink, then a hard link of that name",
        "across layers: symlink, then a directory of that name",
        "across layers: symlink, then a subdirectory through it",
        "across layers: directory, then a symlink, then a subdirectory",
    ],
)
def test_modes_owners_times_never_follow_symlinks(box: Sandbox, target: str, case: str) -> None:
    """UNPACKED SAFELY: the metadata of an entry goes to the entry, never to a symlink's target.

    Every directory and file entry asks for mode 0777/04777, owner 1234 and an mtime of 1; the
    canary (which the symlinks point at) keeps its own.
    """
    link = box.abs_target if target == "absolute" else box.rel_target
    ask = {"mode": 0o777, "uid": 1234, "gid": 1234, "mtime": 1}
    if case == "same layer: symlink, then a directory of that name":
        layers = [layer(("add_symlink", "d", link), ("add_dir", "d", *ask.values()))]
        check = "d"
    elif case == "same layer: directory and subdirectory, then a symlink replacing the directory":
        layers = [layer(("add_dir", "d"), ("add_dir", "d/sub", *ask.values()), ("add_symlink", "d", link))]
        check = ""
    elif case == "same layer: symlink, then a setuid file of that name":
        layers = [layer(("add_symlink", "d", link + "/keep"), ("add_file", "d", b"f", 0o4777, 1234, 1234, 1))]
        check = "d"
    elif case == "same layer: symlink, then a hard link of that name":
        tar = oci.TarLayer().add_file("t", b"t", 0o4777, 1234, 1234, 1).add_symlink("d", link + "/keep")
        layers = [tar.add_hardlink("d", "t").tar_bytes()]
        check = "d"
    elif case == "across layers: symlink, then a directory of that name":
        layers = [layer(("add_symlink", "d", link)), layer(("add_dir", "d", *ask.values()))]
        check = "d"
    elif case == "across layers: symlink, then a subdirectory through it":
        layers = [layer(("add_symlink", "d", link)), layer(("add_dir", "d/sub", *ask.values()))]
        check = f"{box.inside}/sub"
    else:
        layers = [
            layer(("add_dir", "d"), ("add_dir", "d/sub")),
            layer(("add_symlink", "d", link)),
            layer(("add_dir", "d/sub", *ask.values())),
        ]
        check = f"{box.inside}/sub"
    flat = box.build(layers)
    if check:
        st = (flat / check).lstat()
        assert not stat.S_ISLNK(st.st_mode), "the entry replaced the symlink, or landed inside the image"
        assert stat.S_IMODE(st.st_mode) in (0o777, 0o4777) and st.st_mtime == 1
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (1234, 1234)
    else:
        assert (flat / "d").is_symlink()


# -------------------------------------------------------------------------------------------------
# Hard links
# -------------------------------------------------------------------------------------------------


def test_hard_link_outside_the_root_by_absolute_host_path_is_refused(box: Sandbox) -> None:
    """REFUSED: `/host/path/canary/keep` is a path INSIDE the image, where there is no such file."""
    message = box.refuse([layer(("add_hardlink", "x", f"{box.canary}/keep"))], "layer 1", "'x'", "no such file")
    assert box.inside in message


@pytest.mark.parametrize("target", ["absolute", "relative"])
@pytest.mark.parametrize("where", ["same layer", "lower layer"])
def test_hard_link_outside_the_root_through_a_symlink_parent_is_refused(box: Sandbox, target: str, where: str) -> None:
    """REFUSED: `c -> <canary>`, then a hard link to `c/keep`: resolved inside the image, not found."""
    link = box.abs_target if target == "absolute" else box.rel_target
    symlink = ("add_symlink", "c", link)
    hardlink = ("add_hardlink", "x", "c/keep")
    layers = [layer(symlink, hardlink)] if where == "same layer" else [layer(symlink), layer(hardlink)]
    box.refuse(layers, f"layer {len(layers)}", "hard link 'x'", "no such file")


@pytest.mark.parametrize("where", ["same layer", "lower layer"])
def test_hard_link_to_a_symlink_links_the_symlink_itself(box: Sandbox, where: str) -> None:
    """UNPACKED SAFELY: a hard link to a symlink is a symlink with the same target; nothing dereferenced."""
    symlink = ("add_symlink", "s", box.abs_target + "/keep")
    hardlink = ("add_hardlink", "h", "s")
    layers = [layer(symlink, hardlink)] if where == "same layer" else [layer(symlink), layer(hardlink)]
    flat = box.build(layers)
    for name in ("h", "s"):  # flattening recreates symlinks: a symlink has no content to share
        assert (flat / name).is_symlink() and os.readlink(flat / name) == box.abs_target + "/keep"


def test_hard_link_to_a_later_entry_is_refused(box: Sandbox) -> None:
    """REFUSED: a link to a file that only comes later in the same layer (as GNU tar and umoci fail)."""
    box.refuse([layer(("add_hardlink", "h", "f"), ("add_file", "f", b"later"))], "layer 1", "'h'", "no such file")


def test_hard_link_to_a_file_a_lower_layer_had_and_this_layer_replaces_later(box: Sandbox) -> None:
    """UNPACKED SAFELY, in tar order: the link gets the LOWER file; the later entry replaces `f` only."""
    lower = layer(("add_file", "f", b"old"))
    upper = layer(("add_hardlink", "h", "f"), ("add_file", "f", b"new"))
    flat = box.build([lower, upper])
    assert (flat / "h").read_bytes() == b"old" and (flat / "f").read_bytes() == b"new"
    assert (flat / "h").stat().st_ino != (flat / "f").stat().st_ino


def test_hard_link_to_a_file_this_layer_replaced_before(box: Sandbox) -> None:
    """UNPACKED SAFELY: the link gets this layer's new file, linked within the layer."""
    flat = box.build([layer(("add_file", "f", b"old")), layer(("add_file", "f", b"new"), ("add_hardlink", "h", "f"))])
    assert (flat / "h").read_bytes() == b"new"
    assert (flat / "h").stat().st_ino == (flat / "f").stat().st_ino


def test_hard_link_to_a_file_this_layer_whites_out_is_refused(box: Sandbox) -> None:
    """REFUSED: whiteouts of a layer apply to lower layers first; the link then has no target."""
    layers = [layer(("add_file", "f", b"old")), layer(("add_whiteout", "f"), ("add_hardlink", "h", "f"))]
    box.refuse(layers, "layer 2", "hard link 'h'", "no such file")


def test_hard_link_entry_after_a_later_duplicate_loses(box: Sandbox) -> None:
    """UNPACKED SAFELY: duplicates, last wins: a lower-layer hard link at `h`, then a file `h`."""
    lower = layer(("add_file", "f", b"lower"))
    upper = layer(("add_hardlink", "h", "f"), ("add_file", "h", b"last"))
    flat = box.build([lower, upper])
    assert (flat / "h").read_bytes() == b"last" and (flat / "f").read_bytes() == b"lower"


@pytest.mark.parametrize("where", ["same layer", "lower layer"])
def test_hard_link_to_a_directory_is_refused(box: Sandbox, where: str) -> None:
    """REFUSED: hard links to directories do not exist on Linux."""
    layers = [layer(("add_dir", "d"), ("add_hardlink", "h", "d"))]
    if where == "lower layer":
        layers = [layer(("add_dir", "d")), layer(("add_hardlink", "h", "d"))]
    box.refuse(layers, f"layer {len(layers)}", "'h'")


def test_hard_link_to_itself_keeps_the_lower_file(box: Sandbox) -> None:
    """UNPACKED SAFELY: `h` hard-linked to `h` (a lower file) is that file."""
    flat = box.build([layer(("add_file", "h", b"lower")), layer(("add_hardlink", "h", "h"))])
    assert (flat / "h").read_bytes() == b"lower"


# -------------------------------------------------------------------------------------------------
# Whiteouts
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh...", "etc/.wh.", "etc/.wh..", "etc/.wh...", "/.wh.."])
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_invalid_whiteout_names_are_refused(box: Sandbox, name: str, kind: str) -> None:
    """REFUSED: `.wh.`, `.wh..`, `.wh...` (a naive join deletes the root's PARENT, where the canary is)."""
    lower = layer(("add_dir", "etc"), ("add_file", "etc/passwd", b"p"))
    entry = ("add_file", name, b"") if kind == "file" else ("add_dir", name)
    message = box.refuse([lower, layer(entry)], "layer 2", "invalid whiteout")
    assert repr(name) in message


# -------------------------------------------------------------------------------------------------
# Streams: bombs, truncation, corruption, trailing garbage, digests, compression by magic bytes
# -------------------------------------------------------------------------------------------------

STREAM = oci.TarLayer().add_file("etc/a", os.urandom(300_000)).add_file("etc/b", b"b").tar_bytes()


def blob_of(data: bytes, diff_id: str | None = None) -> oci.LayerBlob:
    return oci.LayerBlob(data, "application/vnd.oci.image.layer.v1.tar", diff_id or oci.sha256(STREAM))


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_decompression_bomb_stops_at_the_limit(box: Sandbox, compression: oci.Compression) -> None:
    """REFUSED: a layer inflating beyond the limit stops there (here 1 MiB; 64 GiB by default)."""
    tar = oci.TarLayer().add_file("zeros", bytes(16 << 20)).tar_bytes()
    data = oci.compress(tar, compression)
    (box.base / "bomb").write_bytes(data)
    with pytest.raises(LayerError, match=r"layer 1: uncompressed size exceeds the limit of 1048576 bytes") as info:
        extract_layer(box.base / "bomb", oci.sha256(tar), box.base / "work" / "bomb", "layer 1", max_bytes=1 << 20)
    assert "'zeros'" in str(info.value)
    assert not (box.base / "work" / "bomb").exists()
    box.check_canary()


def test_bomb_limit_comes_from_the_environment(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit the workflow's jobs use: $UNPACKED_MAX_LAYER_BYTES; a bad value is a clear error."""
    tar = oci.TarLayer().add_file("zeros", bytes(4 << 20)).tar_bytes()
    (box.base / "bomb").write_bytes(oci.compress(tar, "gzip"))
    monkeypatch.setenv(MAX_LAYER_BYTES_ENV, str(1 << 20))
    with pytest.raises(LayerError, match="exceeds the limit of 1048576 bytes"):
        extract_layer(box.base / "bomb", oci.sha256(tar), box.base / "work" / "l1", "layer 1")
    monkeypatch.setenv(MAX_LAYER_BYTES_ENV, "lots")
    with pytest.raises(LayerError, match=f"{MAX_LAYER_BYTES_ENV}='lots'"):
        extract_layer(box.base / "bomb", oci.sha256(tar), box.base / "work" / "l2", "layer 1")
    monkeypatch.setenv(MAX_LAYER_BYTES_ENV, str(8 << 20))
    extract_layer(box.base / "bomb", oci.sha256(tar), box.base / "work" / "l3", "layer 1")
    assert (box.base / "work/l3/rootfs/zeros").stat().st_size == 4 << 20


def _damage(data: bytes, how: str) -> bytes:
    if how == "half":
        return data[: len(data) // 2]
    if how == "last-8-bytes":
        return data[:-8]
    if how == "corrupt-middle":
        middle = bytearray(data)
        for offset in range(len(data) // 2, len(data) // 2 + 16):
            middle[offset] ^= 0xA5
        return bytes(middle)
    return data[:100]


@pytest.mark.parametrize("how", ["half", "last-8-bytes", "corrupt-middle", "header-only"])
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_truncated_and_corrupt_streams_are_refused(box: Sandbox, compression: oci.Compression, how: str) -> None:
    """REFUSED: by the decompressor, the tar reader or the diff_id check, whichever notices first."""
    data = _damage(oci.compress(STREAM, compression), how)
    message = box.refuse([blob_of(data)], "layer 1")
    assert any(
        text in message
        for text in ("corrupt or truncated compressed stream", "not a valid tar stream", "config says diff_id")
    ), message


def test_lying_tar_header_size_is_refused(box: Sandbox) -> None:
    """REFUSED: a header announcing 1 MB followed by 5 bytes: the stream ends inside the entry."""
    info = tarfile.TarInfo("big")
    info.mode = 0o644
    tar = oci.TarLayer().add_raw(info, b"short", size=10**6).tar_bytes()
    box.refuse([oci.LayerBlob.from_tar(tar, "gzip")], "layer 1", "not a valid tar stream", "'big'")


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_trailing_garbage_after_the_compressed_stream_is_refused(box: Sandbox, compression: oci.Compression) -> None:
    """REFUSED: bytes after the last gzip member / zstd frame that are not another member."""
    data = oci.compress(STREAM, compression) + b"garbage after the stream"
    box.refuse([blob_of(data)], "layer 1", "corrupt or truncated compressed stream")


def test_trailing_bytes_after_an_uncompressed_archive_are_covered_by_the_diff_id(box: Sandbox) -> None:
    """Uncompressed: bytes after the end blocks are no entry. UNPACKED SAFELY when the diff_id covers
    them (it is the digest of every byte); REFUSED when it does not."""
    data = STREAM + b"garbage after the archive"
    flat = box.build([oci.LayerBlob(data, "application/vnd.oci.image.layer.v1.tar", oci.sha256(data))])
    assert sorted(os.listdir(flat / "etc")) == ["a", "b", "hosts", "resolv.conf"]
    box.refuse([blob_of(data)], "layer 1", "config says diff_id")


def test_gzip_zero_padding_and_multiple_members_are_read(box: Sandbox) -> None:
    """Not hostile, the contrast: zero padding after gzip, and a second member, are valid gzip."""
    for data in (oci.compress(STREAM, "gzip") + bytes(1024), oci.compress(STREAM, "gzip") + oci.compress(b"", "gzip")):
        flat = box.build([blob_of(data)])
        assert (flat / "etc/b").read_bytes() == b"b"


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_wrong_diff_id_is_refused(box: Sandbox, compression: oci.Compression) -> None:
    """REFUSED: the uncompressed bytes must hash to the config's diff_id (checked while extracting)."""
    data = oci.compress(STREAM, compression)
    message = box.refuse([blob_of(data, oci.sha256(b"something else"))], "layer 1", "config says diff_id")
    assert oci.sha256(STREAM) in message


@pytest.mark.parametrize("actual", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("declared", ["gzip", "zstd", "none"])
def test_compression_detected_by_magic_bytes_not_media_type(
    box: Sandbox, actual: oci.Compression, declared: oci.Compression
) -> None:
    """UNPACKED: gzip (1f 8b), zstd (28 b5 2f fd) or plain tar, whatever the media type says."""
    blob = oci.LayerBlob(oci.compress(STREAM, actual), oci.LAYER_TYPES[("oci", declared)], oci.sha256(STREAM))
    flat = box.build([blob])
    assert (flat / "etc/b").read_bytes() == b"b"
    index = read_layer_index(box.store.layer(blob.digest))
    assert index.compression == actual


# -------------------------------------------------------------------------------------------------
# Through the whole workflow: publish a good version of each tag, push the hostile one, run again
# -------------------------------------------------------------------------------------------------

BOMB_LIMIT = 8 << 20  # $UNPACKED_MAX_LAYER_BYTES for these runs


class EvilRegistry:
    """A registry-like server on 127.0.0.1 serving exactly what a real registry refuses to store:
    manifests naming traversal digests, a HEAD digest that is a path, blobs not matching their digest."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str, str]] = {}  # (repo, ref) -> (body, type, digest)
        self.blobs: dict[tuple[str, str], bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                parts = self.path.split("?")[0].split("/")
                found: tuple[bytes, str, str] | None = None
                if self.path.rstrip("/") == "/v2":
                    found = (b"{}", "application/json", "")
                elif len(parts) >= 5 and parts[-2] == "manifests":
                    found = server.manifests.get(("/".join(parts[2:-2]), parts[-1]))
                elif len(parts) >= 5 and parts[-2] == "blobs":
                    data = server.blobs.get(("/".join(parts[2:-2]), parts[-1]))
                    found = None if data is None else (data, "application/octet-stream", parts[-1])
                if found is None:
                    found = (b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}', "application/json", "")
                    self.send_response(404)
                else:
                    self.send_response(200)
                data, media_type, digest = found
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(data)))
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = LoopbackServer(Handler)
        self.host = self.server.host

    def serve(self, repo: str, tag: str, image: oci.Image, head_digest: str | None = None) -> None:
        """Serve `image` as `repo:tag` (manifest verbatim, blobs by the digests the manifest names)."""
        digest = head_digest or image.digest
        self.manifests[(repo, tag)] = (image.manifest, image.media_type, digest)
        self.manifests[(repo, image.digest)] = (image.manifest, image.media_type, image.digest)
        for blob_digest, data in image.blobs.items():
            self.blobs[(repo, blob_digest)] = data

    def stop(self) -> None:
        self.server.stop()


def good_image(text: str) -> oci.Image:
    return oci.build_image([layer(("add_dir", "etc"), ("add_file", "etc/id", text.encode()))])


def with_manifest(image: oci.Image, edit: Any) -> oci.Image:
    """`image` with its manifest JSON changed by `edit(document)` (blobs unchanged)."""
    document = image.manifest_json
    edit(document)
    manifest = json.dumps(document, indent=2).encode()
    return oci.Image(manifest, image.media_type, image.config, image.layers, image.blobs)


@dataclass
class Case:
    """One hostile image for the workflow: REFUSED with `fragments` in the output, or SAFE (published)."""

    registry: str  # "real" or "evil"
    refused: bool
    fragments: tuple[str, ...] = ()


WORKFLOW_CASES = {
    "traversal": Case("real", True, ("'..' component", "'../../../../planted'")),
    "root-symlink": Case("real", True, ("'/.'", "replace the image root")),
    "write-through": Case("real", False),
    "bad-whiteout": Case("real", True, ("'.wh..'", "invalid whiteout")),
    "bomb": Case("real", True, (f"exceeds the limit of {BOMB_LIMIT} bytes",)),
    "truncated": Case("real", True, ("corrupt or truncated compressed stream",)),
    "wrong-diff-id": Case("real", True, ("config says diff_id",)),
    "lying-media-types": Case("real", False),
    "bad-layer-digest": Case("evil", True, ("invalid digest 'sha256:../../../../planted'",)),
    "bad-config-digest": Case("evil", True, ("invalid digest 'sha256:../../../../planted'",)),
    "bad-head-digest": Case("evil", True, ("invalid digest 'sha256:../../../../planted'",)),
    "wrong-blob-digest": Case("evil", True, ("downloaded bytes have digest",)),
}


def hostile_image(case: str, canary: Path) -> tuple[oci.Image, str | None]:
    """The hostile version of `case` and, for the fake registry, the digest its HEAD answers."""
    abs_target, rel_target = str(canary), "../" * 30 + str(canary).lstrip("/")
    traversal = "sha256:../../../../planted"
    if case == "traversal":
        return oci.build_image([layer(("add_file", "etc/id", b"x"), ("add_file", "../../../../planted", b"x"))]), None
    if case == "root-symlink":
        return oci.build_image([layer(("add_symlink", "/.", abs_target), ("add_file", "planted", b"x"))]), None
    if case == "write-through":
        lower = layer(("add_symlink", "evil", abs_target), ("add_file", "evil/planted", b"x"), ("add_dir", "etc"))
        upper = layer(
            ("add_symlink", "rel", rel_target),
            ("add_file", "rel/sub/planted2", b"y"),
            ("add_dir", "evil/sub", 0o777),
            ("add_file", "etc/id", b"through\n"),
        )
        return oci.build_image([lower, upper]), None
    if case == "bad-whiteout":
        return oci.build_image([layer(("add_file", "etc/id", b"x")), layer(("add_file", ".wh..", b""))]), None
    if case == "bomb":
        return oci.build_image([layer(("add_file", "zeros", bytes(BOMB_LIMIT * 4)))]), None
    if case == "truncated":
        tar = layer(("add_file", "etc/id", os.urandom(200_000)))
        data = oci.compress(tar, "gzip")
        return oci.build_image(
            [oci.LayerBlob(data[: len(data) // 2], oci.LAYER_TYPES[("oci", "gzip")], oci.sha256(tar))]
        ), None
    if case == "wrong-diff-id":
        honest = oci.LayerBlob.from_tar(layer(("add_file", "etc/id", b"lying diff_id\n")))
        return oci.build_image([oci.LayerBlob(honest.data, honest.media_type, oci.sha256(b"other"))]), None
    if case == "lying-media-types":
        blobs = [
            oci.LayerBlob(oci.compress(tar, actual), oci.LAYER_TYPES[("oci", declared)], oci.sha256(tar))
            for tar, actual, declared in [
                (layer(("add_file", "etc/gz", b"gzip\n")), "gzip", "zstd"),
                (layer(("add_file", "etc/zst", b"zstd\n")), "zstd", "none"),
                (layer(("add_file", "etc/id", b"tar\n")), "none", "gzip"),
            ]
        ]
        return oci.build_image(blobs), None
    image = good_image(f"{case} v2\n")
    if case == "bad-layer-digest":
        return with_manifest(image, lambda m: m["layers"][0].update(digest=traversal)), None
    if case == "bad-config-digest":
        return with_manifest(image, lambda m: m["config"].update(digest=traversal)), None
    if case == "bad-head-digest":
        return image, traversal
    assert case == "wrong-blob-digest"
    return image, None


@dataclass
class HostileSync:
    directory: Path
    hosts: dict[str, str]  # "real"/"evil" -> host
    before: dict[str, tuple[str, dict[str, tuple[Any, ...]], str]]  # case -> (link, flat snapshot, record)
    hostile: dict[str, oci.Image]
    output: str
    returncode: int
    canary_before: dict[str, tuple[Any, ...]]

    @property
    def root(self) -> Path:
        return self.directory / "output"

    def link(self, case: str) -> Path:
        return self.root / self.hosts[WORKFLOW_CASES[case].registry] / "hostile" / f"{case}:1"

    def record(self, case: str) -> str:
        name = f"{self.hosts[WORKFLOW_CASES[case].registry]}/hostile/{case}:1"
        return (self.root / ".metadata" / name / "record.json").read_text()


@pytest.fixture(scope="module")
def hostile_sync(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[HostileSync]:
    """One workflow directory, every case a tag `hostile/<case>:1`: a good sync, then the hostile one."""
    evil = EvilRegistry()
    try:
        directory = tmp_path_factory.mktemp("hostile-workflow")
        make_canary(directory / "canary")
        canary_before = snapshot(directory / "canary")
        hosts = {"real": registry.host, "evil": evil.host}
        recipe = [f"http://{hosts[c.registry]}/hostile/{name}:1" for name, c in WORKFLOW_CASES.items()]
        write_config(directory, recipe, {host: {"insecure": True, "retries": 0} for host in hosts.values()})
        env = workflow_env(**{MAX_LAYER_BYTES_ENV: str(BOMB_LIMIT)})

        def put(name: str, image: oci.Image, head: str | None = None) -> None:
            if WORKFLOW_CASES[name].registry == "real":
                oci.push(registry, f"hostile/{name}", "1", image)
            else:
                evil.serve(f"hostile/{name}", "1", image, head)

        for name in WORKFLOW_CASES:
            put(name, good_image(f"{name} v1\n"))
        first = run_workflow(directory, env=env)
        assert first.returncode == 0, first.stdout + first.stderr[-5000:]
        sync = HostileSync(directory, hosts, {}, {}, "", 0, canary_before)
        for name in WORKFLOW_CASES:
            link = sync.link(name)
            sync.before[name] = (os.readlink(link), snapshot(link.resolve()), sync.record(name))
        for name in WORKFLOW_CASES:
            image, head = hostile_image(name, directory / "canary")
            sync.hostile[name] = image
            put(name, image, head)
        # The registry answers the layer's digest with other bytes (a real one refuses to store them).
        other = layer(("add_file", "etc/id", b"substituted\n"), ("add_file", "planted", b"x"))
        evil.blobs[("hostile/wrong-blob-digest", sync.hostile["wrong-blob-digest"].layers[0].digest)] = oci.compress(
            other, "gzip"
        )
        second = run_workflow(directory, env=env)
        sync.output, sync.returncode = second.stdout + second.stderr, second.returncode
        yield sync
    finally:
        evil.stop()


@pytest.mark.workflow
def test_workflow_run_with_hostile_images_fails_and_writes_nothing_outside(hostile_sync: HostileSync) -> None:
    """The run fails (some images are refused), the canary next to the output root is untouched, no
    staging directory is left, and nothing was planted outside an image tree or a layer's rootfs."""
    assert hostile_sync.returncode != 0, hostile_sync.output
    assert snapshot(hostile_sync.directory / "canary") == hostile_sync.canary_before
    base = hostile_sync.directory
    assert [p for p in base.rglob("*") if ".tmp-" in p.name] == []
    stray = [p for p in base.rglob("planted*") if "rootfs" not in p.parts and ".flat" not in p.parts]
    assert stray == []
    assert not list(base.rglob("*sha256:*")), "no digest string became a path"


@pytest.mark.workflow
@pytest.mark.parametrize("case", [name for name, c in WORKFLOW_CASES.items() if c.refused])
def test_workflow_refuses_hostile_image_and_keeps_serving_the_previous_version(
    hostile_sync: HostileSync, case: str
) -> None:
    """REFUSED, named in the run's summary (reference, layer digest where one applies, entry), and the
    previously published version is still served: same link, same tree, same metadata."""
    reference = f"{hostile_sync.hosts[WORKFLOW_CASES[case].registry]}/hostile/{case}:1"
    summary = hostile_sync.output[hostile_sync.output.find("image(s) failed") :]
    assert reference in summary, hostile_sync.output[-5000:]
    block = summary[summary.find(reference) :]
    block = block[: block.find("\n  ", len(reference) + 10) if "\n  " in block[len(reference) + 10 :] else None]
    for fragment in WORKFLOW_CASES[case].fragments:
        assert fragment in block, block
    image = hostile_sync.hostile[case]
    if case in ("traversal", "root-symlink", "bomb", "truncated", "wrong-diff-id"):
        layer_digest = image.layers[-1].digest
        assert f"layer {layer_digest}" in block, block
        hexd = layer_digest.split(":")[1]
        assert not (hostile_sync.directory / "work" / "layers" / hexd[:2] / hexd).exists()
    link, tree, record = hostile_sync.before[case]
    assert os.readlink(hostile_sync.link(case)) == link
    assert snapshot(hostile_sync.link(case).resolve()) == tree
    assert hostile_sync.record(case) == record
    assert (hostile_sync.link(case) / "etc/id").read_text() == f"{case} v1\n"


@pytest.mark.workflow
def test_workflow_publishes_write_through_symlinks_inside_the_image(hostile_sync: HostileSync) -> None:
    """UNPACKED SAFELY: symlinks to the canary (absolute, relative) are followed inside the image; the
    new version is published and the previous one is left intact until garbage collection."""
    link = hostile_sync.link("write-through")
    old_link, old_tree, _ = hostile_sync.before["write-through"]
    assert os.readlink(link) != old_link
    flat = link.resolve()
    inside = str(hostile_sync.directory / "canary").lstrip("/")
    assert (flat / inside / "planted").read_bytes() == b"x"
    assert (flat / inside / "sub/planted2").read_bytes() == b"y"
    assert stat.S_IMODE((flat / inside / "sub").stat().st_mode) == 0o777
    assert (flat / "etc/id").read_text() == "through\n"
    assert snapshot((link.parent / old_link).resolve()) == old_tree, "the previous flat image is unchanged"


@pytest.mark.workflow
def test_workflow_detects_compression_by_magic_bytes(hostile_sync: HostileSync) -> None:
    """UNPACKED: gzip labelled zstd, zstd labelled plain tar, plain tar labelled gzip."""
    flat = hostile_sync.link("lying-media-types").resolve()
    assert (flat / "etc/gz").read_text() == "gzip\n"
    assert (flat / "etc/zst").read_text() == "zstd\n"
    assert (flat / "etc/id").read_text() == "tar\n"


# -------------------------------------------------------------------------------------------------
# Ownership and permissions: root keeps owners; an unprivileged publisher works and can delete
# -------------------------------------------------------------------------------------------------

NOBODY = 65534


def permissions_layers() -> list[bytes]:
    lower = (
        oci.TarLayer()
        .add_dir("etc")
        .add_file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .add_file("etc/gshadow", b"root:*::\n", mode=0o000)
        .add_dir("secret", mode=0o000)
        .add_file("secret/f", b"f", mode=0o000)
        .add_dir("secret/sub", mode=0o000, uid=1234, gid=1234)
        .add_file("secret/sub/g", b"g", mode=0o4755, uid=1234, gid=1234)
        .add_dir("xonly", mode=0o111)
        .add_file("xonly/h", b"h", mode=0o600)
        .add_dir("ro", mode=0o555)
        .add_file("ro/f", b"ro")
        .add_file("bin/su", b"su", mode=0o4755)
        .add_file("bin/wall", b"wall", mode=0o2755, gid=5)
        .add_dir("tmp", mode=0o1777)
        .add_file("home/owned", b"o", uid=1234, gid=1234)
        .add_file("home/big-ids", b"o", uid=2**32 - 2, gid=2**31)
        .tar_bytes()
    )
    upper = (
        oci.TarLayer()
        .add_file("secret/new", b"new", mode=0o000)
        .add_whiteout("secret/f")
        .add_hardlink("bin/g-link", "secret/sub/g")
        .add_whiteout("ro/f")
        .add_file("ro/g", b"g")
        .add_file("xonly/i", b"i")
        .tar_bytes()
    )
    return [lower, upper]


EXPECTED_MODES = {
    "etc/gshadow": 0o000,
    "secret": 0o000,
    "secret/new": 0o000,
    "secret/sub": 0o000,
    "secret/sub/g": 0o4755,
    "xonly": 0o111,
    "ro": 0o555,
    "bin/su": 0o4755,
    "bin/wall": 0o2755,
    "tmp": 0o1777,
}


def modes_and_owners(flat: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, uid, gid) of every path of EXPECTED_MODES plus the owned files; reads 000 dirs as root."""
    return {
        rel: (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        for rel in [*EXPECTED_MODES, "home/owned", "home/big-ids", "bin/g-link"]
        for st in [os.lstat(flat / rel)]
    }


def test_owners_are_kept_as_root(box: Sandbox) -> None:
    """As root, owners and groups come from the image (policy: docs/policy.md); ids that fit no uid_t
    become 0. This suite runs as root in CI; an unprivileged run cannot test this."""
    assert os.geteuid() == 0, "run the test suite as root (CI does): ownership as root is tested here"
    flat = box.build(permissions_layers())
    found = modes_and_owners(flat)
    assert {rel: found[rel][0] for rel in EXPECTED_MODES} == EXPECTED_MODES
    assert found["secret/sub"][1:] == (1234, 1234) and found["secret/sub/g"][1:] == (1234, 1234)
    assert found["bin/wall"][1:] == (0, 5)
    assert found["home/owned"][1:] == (1234, 1234)
    assert found["home/big-ids"][1:] == (2**32 - 2, 2**31)
    assert (flat / "bin/g-link").stat().st_ino == (flat / "secret/sub/g").stat().st_ino
    assert not (flat / "secret/f").exists() and not (flat / "ro/f").exists()


def as_nobody(*command: str, scratch: Path) -> list[str]:
    """`command` run as uid/gid 65534 (setpriv). If the Python installation is not reachable by other
    users (e.g. under root's 0700 home), it runs in a private mount namespace where that installation
    alone is made reachable; nothing changes outside the namespace."""
    setpriv, unshare = shutil.which("setpriv"), shutil.which("unshare")
    assert setpriv and unshare, "setpriv/unshare not found: apt-get install -y util-linux"
    assert os.geteuid() == 0, "dropping to an unprivileged user needs root: run the test suite as root"
    drop = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *command]
    prefix = Path(sys.base_prefix).resolve()
    blocked = next((p for p in [*reversed(prefix.parents), prefix] if not p.stat().st_mode & 0o001), None)
    if blocked is None:
        return drop
    view = scratch / "python-view"
    view.mkdir(exist_ok=True)
    script = (
        'mount --bind "$1" "$2" && mount -t tmpfs -o mode=755 tmpfs "$3" && mkdir -p "$1" '
        '&& mount --bind "$2" "$1" && shift 3 && exec "$@"'
    )
    namespace = [unshare, "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"]
    return [*namespace, str(prefix), str(view), str(blocked), *drop]


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory owned by the unprivileged user, in the system's temp dir (pytest's is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="unpacked-unprivileged-"))
    try:
        os.chmod(base, 0o755)
        run = base / "run"
        run.mkdir()
        os.chown(run, NOBODY, NOBODY)
        yield run
    finally:
        remove_tree(base)


@pytest.mark.workflow
def test_unprivileged_publisher_unpacks_and_deletes_everything(
    nobody_dir: Path, registry: LocalRegistry, repo_name: str
) -> None:
    """The workflow run as uid 65534: mode-000 files and unreadable directories, setuid files and files
    of uid 1234 extract; everything belongs to the publisher; modes are the image's; then the
    publisher removes the published tree and the work directory with remove_tree."""
    oci.push(registry, repo_name, "1", oci.build_image(permissions_layers()))
    config = nobody_dir / "config"
    config.mkdir()
    (config / "recipe.yaml").write_text(json.dumps([f"http://{registry.host}/{repo_name}:1"]))
    settings = {"output_root": "output", "work_dir": "work", "registries": {registry.host: {"insecure": True}}}
    (config / "config.yaml").write_text(json.dumps(settings))
    home = nobody_dir / "home"
    home.mkdir()
    for path in [config, home, *config.iterdir()]:
        os.chown(path, NOBODY, NOBODY)
    # Its own (empty) Docker config: the per-test one is in pytest's root-only temp dir.
    env = workflow_env(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), DOCKER_CONFIG=str(home / ".docker"))
    done = subprocess.run(
        as_nobody(*snakemake_command(nobody_dir), scratch=nobody_dir.parent),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-5000:]
    published = nobody_dir / "output" / registry.host / f"{repo_name}:1"
    flat = published.resolve()
    found = modes_and_owners(flat)
    assert {rel: found[rel][0] for rel in EXPECTED_MODES} == EXPECTED_MODES, "the image's modes, setuid kept"
    assert {(uid, gid) for _, uid, gid in found.values()} == {(NOBODY, NOBODY)}, "everything belongs to the publisher"
    assert (flat / "bin/g-link").stat().st_ino == (flat / "secret/sub/g").stat().st_ino
    assert not (flat / "secret/f").exists() and (flat / "ro/g").exists() and (flat / "xonly/i").exists()

    remove = "from pathlib import Path; from unpacked.fsutil import remove_tree\n"
    remove += "for path in ('output', 'work'): remove_tree(Path(path))"
    gone = subprocess.run(
        as_nobody(sys.executable, "-c", remove, scratch=nobody_dir.parent),
        cwd=nobody_dir,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert gone.returncode == 0, gone.stderr
    assert not (nobody_dir / "output").exists() and not (nobody_dir / "work").exists()


# -------------------------------------------------------------------------------------------------
# Nested results stay apart: two images sharing layers
# -------------------------------------------------------------------------------------------------


@pytest.mark.workflow
def test_republishing_one_image_never_changes_another_that_shares_its_layers(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    """Flat files are hard links into the layer store, shared by every image using a layer. A new
    version of image A that changes the modes, times and content of shared files, whites some out and
    links others, must leave image B (and the layer store) exactly as it was: content, mode, owner,
    mtime and inode of every path. The Apptainer files of each image are its own inodes."""
    base = (
        oci.TarLayer()
        .add_dir("etc")
        .add_file("etc/shared", b"shared\n")
        .add_file("etc/motd", b"motd\n")
        .add_file("etc/gone", b"gone\n")
        .add_dir("opt", mode=0o755)
        .add_file("opt/tool", b"#!tool\n", mode=0o755)
        .add_dir("secret", mode=0o000)
        .add_file("secret/key", b"k", mode=0o000)
        .tar_bytes()
    )
    image_a = oci.build_image([base, layer(("add_file", "etc/a", b"a\n"))], config={"Cmd": ["/bin/a"]})
    image_b = oci.build_image([base, layer(("add_file", "etc/b", b"b\n"))], config={"Cmd": ["/bin/b"]})
    oci.push(registry, f"{repo_name}/a", "1", image_a)
    oci.push(registry, f"{repo_name}/b", "1", image_b)
    directory = tmp_path / "run"
    recipe = [f"http://{registry.host}/{repo_name}/{name}:1" for name in ("a", "b")]
    write_config(directory, recipe, {registry.host: {"insecure": True}})
    done = run_workflow(directory)
    assert done.returncode == 0, done.stdout + done.stderr[-5000:]
    link_a = directory / "output" / registry.host / repo_name / "a:1"
    link_b = directory / "output" / registry.host / repo_name / "b:1"
    base_hex = oci.LayerBlob.from_tar(base).digest.split(":")[1]
    store = directory / "work" / "layers" / base_hex[:2] / base_hex
    flat_b, old_a = link_b.resolve(), link_a.resolve()
    assert (flat_b / "etc/shared").stat().st_ino == (old_a / "etc/shared").stat().st_ino, "layers are shared"
    before_b, before_a, before_store = snapshot(flat_b, True), snapshot(old_a, True), snapshot(store, True)

    upper = (
        oci.TarLayer()
        .add_file("etc/shared", b"shared\n", mode=0o600, mtime=1)  # same content, other metadata
        .add_whiteout("etc/gone")
        .add_dir("opt", mode=0o700, mtime=1)
        .add_file("opt/tool", b"#!changed\n", mode=0o700)
        .add_hardlink("etc/motd-link", "etc/motd")
        .add_dir("secret", mode=0o700)
        .add_file("secret/key", b"changed", mode=0o644)
        .tar_bytes()
    )
    oci.push(registry, f"{repo_name}/a", "1", oci.build_image([base, upper], config={"Cmd": ["/bin/a2"]}))
    done = run_workflow(directory)
    assert done.returncode == 0, done.stdout + done.stderr[-5000:]
    new_a = link_a.resolve()
    assert new_a != old_a
    assert snapshot(flat_b, True) == before_b, "image B changed when image A was republished"
    assert snapshot(store, True) == before_store, "the shared layer changed in the layer store"
    assert snapshot(old_a, True) == before_a, "the previous flat image of A changed"
    shared = new_a / "etc/shared"
    assert (
        stat.S_IMODE(shared.stat().st_mode) == 0o600 and shared.stat().st_ino != (flat_b / "etc/shared").stat().st_ino
    )
    assert (new_a / "opt/tool").read_bytes() == b"#!changed\n" and not (new_a / "etc/gone").exists()

    # Apptainer files: written per image, never a hard link shared with another image or a layer.
    foreign = {entry[-1] for entry in snapshot(flat_b, True).values()}
    for layer_dir in (directory / "work" / "layers").glob("*/*"):
        foreign |= {entry[-1] for entry in snapshot(layer_dir, True).values()}
    for flat in (new_a, flat_b):
        own = [p for p in (flat / ".singularity.d").rglob("*") if p.is_file() and not p.is_symlink()]
        own += [flat / "etc/hosts", flat / "etc/resolv.conf"]
        assert len(own) > 5
        for path in own:
            st = path.lstat()
            assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1, path
            if flat is new_a:
                assert st.st_ino not in foreign, f"{path} shares its inode with image B or the layer store"
    assert (new_a / ".singularity.d/runscript").read_text() != (flat_b / ".singularity.d/runscript").read_text()
