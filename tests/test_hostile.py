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
import os
import stat
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unpacked.errors import LayerError
from unpacked.extract import MAX_LAYER_BYTES_ENV, extract_layer, read_layer_index
from unpacked.flatten import flatten_image

from support import oci

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
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

    def build(self, layers: list[bytes | oci.LayerBlob], compression: oci.Compression = "gzip") -> Path:
        """Extract (`layer 1`, `layer 2`... as flattening numbers them) and flatten `layers`: the flat tree."""
        self.built += 1
        work = self.base / "work" / f"build{self.built}"
        dirs, diff_ids = [], []
        for number, layer in enumerate(layers):
            blob = layer if isinstance(layer, oci.LayerBlob) else oci.LayerBlob.from_tar(layer, compression, "oci")
            path = work / "blobs" / str(number)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob.data)
            dest = work / "layers" / str(number)
            extract_layer(path, blob.diff_id, dest, f"layer {number + 1}")
            dirs.append(dest)
            diff_ids.append(blob.diff_id)
        flat = self.root / ".flat" / "ab" / f"image{self.built}"
        flatten_image(dirs, diff_ids, CONFIG, flat, "test image")
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
        flat = self.root / ".flat" / "ab" / f"image{self.built}"
        assert not flat.exists(), "a refused image leaves no flat tree"
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
    index = read_layer_index(box.base / "work" / f"build{box.built}" / "layers" / "0")
    assert index.compression == actual
