"""Differential tests: our published trees against umoci's, path by path, on a corpus of images.

Every image of the corpus is pushed to a loopback registry, then unpacked twice:
- by us, with the whole workflow (one `snakemake` run over every image of the corpus);
- by the reference, `skopeo copy docker://... oci:LAYOUT:TAG` then `umoci raw unpack` (with
  `--rootless` only when not root: as root, umoci keeps owners, makes device nodes and sets xattrs).
`support.compare` then lists every difference (type, mode with setuid/setgid/sticky, owner, size,
sha256, symlink target, device numbers, xattrs, mtime, hard-link grouping), and every difference
must be explained by one row of POLICY, the table of our deliberate differences from umoci (also
in docs/unpacking.md). Nothing else may differ.

The corpus: a real Debian root filesystem (debootstrap minbase, built once per session) split over
layers that delete files, replace files by directories and the reverse, undo the usrmerge symlink,
change hard-linked files and add an opaque directory; and one small image per non-hostile item of
the checklist in oci-unpacking.md (see docs/unpacking.md for the mapping).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from unpacked.errors import LayerError
from unpacked.store import Store

from support import compare, oci
from support.compare import Difference, Entry
from support.registry import LocalRegistry, require_binary
from support.umoci_images import build_layout, skopeo_push
from support.unpack import unpack
from support.workflow import run_workflow, write_config

pytestmark = pytest.mark.workflow

IS_ROOT = os.geteuid() == 0
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# umoci --rootless records the original owner here; it is not image content.
ROOTLESS_XATTR = "user.rootlesscontainers"
# What `write_sandbox_files` adds (apptainer-sandbox.md).
APPTAINER_ROOT_LINKS = ("singularity", ".run", ".exec", ".shell", ".test", "environment")
MOUNT_POINTS = ("dev", "proc", "root", "var/tmp", "tmp", "etc", "sys", "home")


# ---------------------------------------------------------------------------------------------
# The policy table: every deliberate difference from umoci, and why
# ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the policy rows may consult about one image."""

    started: float  # before either unpacker ran: later mtimes are "time of unpacking"
    skipped_devices: set[str]  # device nodes our layer indexes list as not created
    ours: dict[str, Entry]
    theirs: dict[str, Entry]

    def unpack_time(self, mtime: int) -> bool:
        return mtime >= self.started - 1


@dataclass(frozen=True)
class Policy:
    pattern: str  # regular expression, matched against the whole path ("" is the image root)
    fields: frozenset[str]  # which differences it explains ("missing" = present on one side only)
    reason: str
    when: Callable[[Difference, Context], bool] = lambda d, c: True

    def explains(self, diff: Difference, context: Context) -> bool:
        if diff.field not in self.fields or re.fullmatch(self.pattern, diff.path) is None:
            return False
        return self.when(diff, context)


def _ours_only(diff: Difference, context: Context) -> bool:
    return diff.path not in context.theirs


def _ours_only_dir(diff: Difference, context: Context) -> bool:
    return diff.path not in context.theirs and context.ours[diff.path].type == "dir"


def _ours_empty_file(diff: Difference, context: Context) -> bool:
    ours = context.ours.get(diff.path)
    return ours is not None and (ours.type, ours.size, ours.mode) == ("file", 0, 0o644)


def _skipped_device(diff: Difference, context: Context) -> bool:
    theirs = context.theirs.get(diff.path)
    if diff.path in context.ours or theirs is None or diff.path not in context.skipped_devices:
        return False
    # umoci --rootless puts an empty file where it cannot make the device.
    return theirs.type in ("char", "block") or (not IS_ROOT and theirs.type == "file" and theirs.size == 0)


def _both_unpack_time(diff: Difference, context: Context) -> bool:
    return context.unpack_time(context.ours[diff.path].mtime) and context.unpack_time(context.theirs[diff.path].mtime)


def _ours_unpack_time(diff: Difference, context: Context) -> bool:
    return context.ours[diff.path].type == "dir" and context.unpack_time(context.ours[diff.path].mtime)


def _umoci_touched_dir(diff: Difference, context: Context) -> bool:
    ours, theirs = context.ours[diff.path], context.theirs[diff.path]
    return ours.type == "dir" and not context.unpack_time(ours.mtime) and context.unpack_time(theirs.mtime)


def _ours_no_xattrs(diff: Difference, context: Context) -> bool:
    return context.ours[diff.path].xattrs == ()


def _not_root(diff: Difference, _: Context) -> bool:
    return not IS_ROOT


_MOUNT_POINT_DIRS = "|".join(re.escape(p) for p in sorted({*MOUNT_POINTS, "var"}))
_ROOT_LINKS = "|".join(re.escape(p) for p in APPTAINER_ROOT_LINKS)

POLICY: tuple[Policy, ...] = (
    Policy(
        r"\.singularity\.d(/.*)?|" + _ROOT_LINKS,
        frozenset({"missing"}),
        "Apptainer metadata: /.singularity.d (env scripts, runscript, labels) and the root symlinks "
        "that `apptainer build --sandbox` writes; they make ENV and ENTRYPOINT/CMD work",
        _ours_only,
    ),
    Policy(
        _MOUNT_POINT_DIRS,
        frozenset({"missing"}),
        "Apptainer mount points (and var/ for var/tmp), created when the image has nothing there: "
        "without them Apptainer needs overlay/underlay support that CVMFS (FUSE) does not give",
        _ours_only_dir,
    ),
    Policy(
        r"etc/hosts|etc/resolv\.conf",
        frozenset({"missing", "mode", "uid", "gid", "size", "sha256", "mtime", "links"}),
        "Apptainer binds the host's files over etc/hosts and etc/resolv.conf: we leave an empty "
        "0644 file there (never written through a symlink, so a symlink stays as the image has it)",
        _ours_empty_file,
    ),
    Policy(
        r".*",
        frozenset({"missing"}),
        "device nodes are not created: the runtime provides /dev, an unprivileged publisher cannot "
        "mknod, and a device file in a shared tree is a hazard; the layer index lists them",
        _skipped_device,
    ),
    Policy(
        r"|etc|var",
        frozenset({"mtime"}),
        "directories we add Apptainer files or mount points to get the time of the build as "
        "their mtime, as in a sandbox Apptainer builds itself",
        _ours_unpack_time,
    ),
    Policy(
        r".*",
        frozenset({"mtime"}),
        "directories no layer lists (implicit parents) have no recorded time: both unpackers give "
        "them the time of unpacking, a few seconds apart",
        _both_unpack_time,
    ),
    Policy(
        r".*",
        frozenset({"mtime"}),
        "umoci artifact: when a whiteout or opaque marker comes AFTER a directory's entry in the same "
        "layer, umoci deletes the lower children after setting the directory's time, which changes "
        "it to the time of unpacking; we keep the time the layer records",
        _umoci_touched_dir,
    ),
    Policy(
        r".*",
        frozenset({"xattrs"}),
        "extended attributes in layers are not applied: file capabilities cannot take effect under "
        "Apptainer (no_new_privs, nosuid), an image's SELinux label is meaningless on the host, and "
        "the result must not depend on whether the publisher runs as root",
        _ours_no_xattrs,
    ),
    Policy(
        r".*",
        frozenset({"uid", "gid"}),
        "when not root, files belong to the publishing user (umoci --rootless likewise, with the "
        "image's owner in an xattr); as root, owners are the image's",
        _not_root,
    ),
)


def unexplained(differences: list[Difference], context: Context) -> list[Difference]:
    return [d for d in differences if not any(p.explains(d, context) for p in POLICY)]


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


@dataclass
class CorpusImage:
    name: str  # tag in the corpus repository
    checklist: str  # the item of oci-unpacking.md it covers
    layers: Callable[[Path], list[bytes]]  # tmp dir -> uncompressed layer tars
    # umoci 0.4.7 refuses some valid layers: then it unpacks this equivalent image instead (same
    # files, without the feature it cannot read), and `umoci_refuses` is what it says to the original.
    reference: Callable[[Path], list[bytes]] | None = None
    umoci_refuses: str = ""


def _special_files(_: Path) -> list[bytes]:
    layer = (
        oci.TarLayer()
        .add_dir("dev")
        .add_device("dev/null", "c", 1, 3)
        .add_device("dev/sda", "b", 8, 0, mode=0o660)
        .add_fifo("run/fifo", mode=0o640)
        .add_fifo("run/fifo-setgid", mode=0o2620)
    )
    return [layer.tar_bytes()]


def _special_modes(_: Path) -> list[bytes]:
    layer = (
        oci.TarLayer()
        .add_file("bin/su", b"su", mode=0o4755)
        .add_file("bin/wall", b"wall", mode=0o2755, gid=5)
        .add_file("bin/odd", b"odd", mode=0o7777)
        .add_file("bin/suid-noexec", b"x", mode=0o4600)
        .add_dir("shared", mode=0o2775, gid=100)
        .add_dir("scratch", mode=0o1777)
        .add_file("scratch/f", b"f", mode=0o644)
        .add_symlink("bin/su-link", "su")
    )
    return [layer.tar_bytes()]


def _mode_000(_: Path) -> list[bytes]:
    first = (
        oci.TarLayer()
        .add_file("etc/gshadow", b"root:*::\n", mode=0o000)
        .add_dir("locked", mode=0o000)
        .add_dir("locked/inner", mode=0o000)
        .add_file("locked/inner/secret", b"s", mode=0o000)
        .add_dir("readonly", mode=0o555)
        .add_file("readonly/f", b"r", mode=0o444)
        .add_dir("search-only", mode=0o111)
        .add_file("search-only/f", b"x", mode=0o600)
    )
    # A later layer adds to and deletes from directories the publisher may not write or read.
    second = (
        oci.TarLayer()
        .add_file("locked/inner/added", b"a", mode=0o000)
        .add_whiteout("readonly/f")
        .add_file("readonly/g", b"g", mode=0o400)
    )
    return [first.tar_bytes(), second.tar_bytes()]


def _owners(_: Path) -> list[bytes]:
    layer = (
        oci.TarLayer()
        .add_file("u1000", b"a", uid=1000, gid=1001)
        .add_file("nobody", b"b", uid=65534, gid=65534)
        .add_file("large", b"c", uid=2**31, gid=2**31 + 1)
        .add_file("largest", b"d", uid=2**32 - 2, gid=2**32 - 2)
        .add_file("minus-one", b"e", uid=-1, gid=-1)
        .add_dir("owned-dir", uid=1234, gid=5678)
        .add_symlink("owned-link", "u1000", uid=4321, gid=8765)
        .add_file("owned-dir/setuid-owned", b"f", mode=0o4755, uid=1000, gid=1000)
    )
    return [layer.tar_bytes()]


def _xattrs(_: Path) -> list[bytes]:
    capability = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12  # cap_net_raw, effective
    layer = (
        oci.TarLayer()
        .add_file("bin/ping", b"ping", mode=0o755, xattrs={"security.capability": capability})
        .add_file(
            "etc/labelled", b"l", xattrs={"user.comment": "hello", "security.selinux": "system_u:object_r:etc_t:s0"}
        )
    )
    return [layer.tar_bytes()]


def _pax_global_reference(_: Path) -> list[bytes]:
    layer = oci.TarLayer().add_file("src/a", b"a").add_dir("src/sub").add_file("src/sub/b", b"b" * 1000)
    return [layer.tar_bytes()]


def _pax_global(_: Path) -> list[bytes]:
    # `git archive` writes a global header with the commit id; POSIX says its keys apply to every
    # later entry, Go's tar reader (umoci, Docker, containerd) ignores them.
    layer = (
        oci.TarLayer()
        .add_pax_global({"comment": "0123456789abcdef0123456789abcdef01234567"})
        .add_file("src/a", b"a")
        .add_pax_global({"comment": "second global header"})
        .add_dir("src/sub")
        .add_file("src/sub/b", b"b" * 1000)
    )
    return [layer.tar_bytes()]


LONG = "long-name-" * 15  # 150 bytes: beyond ustar's 100-byte name field


def _gnu_long_names(_: Path) -> list[bytes]:
    gnu = (
        oci.TarLayer(format=tarfile.GNU_FORMAT)
        .add_dir(f"gnu/{LONG}")
        .add_file(f"gnu/{LONG}/{LONG}", b"gnu long name")
        .add_symlink(f"gnu/{LONG}-link", f"{LONG}/{LONG}" + "/../" * 30 + f"gnu/{LONG}/{LONG}")
        .add_hardlink(f"gnu/{LONG}-hard", f"gnu/{LONG}/{LONG}")
    )
    pax = (
        oci.TarLayer(format=tarfile.PAX_FORMAT)
        .add_dir(f"pax/{LONG}")
        .add_file(f"pax/{LONG}/{LONG}", b"pax long name")
        .add_symlink(f"pax/{LONG}-link", "/" + "x" * 300)
        .add_hardlink(f"pax/{LONG}-hard", f"gnu/{LONG}/{LONG}")  # long link to a lower layer
    )
    return [gnu.tar_bytes(), pax.tar_bytes()]


def _sparse(tmp: Path) -> list[bytes]:
    """Sparse entries as GNU tar writes them: old GNU format (one layer), PAX sparse 1.0 (another)."""
    gnu_tar = require_binary("tar", "tar")
    layers = []
    for fmt in ("gnu", "posix"):
        src = tmp / "sparse-src"
        (src / fmt).mkdir(parents=True)
        with open(src / fmt / "holes", "wb") as out:
            out.write(b"start")
            out.seek(1 << 20)
            out.write(b"middle" * 1000)
            out.seek(3 << 20)
            out.write(b"end")
            out.truncate((4 << 20) + 17)  # ends in a hole
        with open(src / fmt / "all-hole", "wb") as out:
            out.truncate(2 << 20)
        args = [gnu_tar, "-C", str(src), "--sparse", f"--format={fmt}", "--numeric-owner", "--owner=0"]
        args += ["--group=0", "--mtime=@1700000000", "-cf", "-", f"{fmt}/holes", f"{fmt}/all-hole"]
        raw = subprocess.run(args, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(raw)) as check:
            assert any(m.issparse() for m in check), f"GNU tar wrote no sparse entry in {fmt} format"
        layers.append(raw)
    return layers


def _sparse_reference(tmp: Path) -> list[bytes]:
    """The same files as `_sparse` (call it first), as plain entries: holes written as zeros."""
    layers = []
    for fmt in ("gnu", "posix"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in ("holes", "all-hole"):
                info = tar.gettarinfo(tmp / "sparse-src" / fmt / name, arcname=f"{fmt}/{name}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 1_700_000_000
                with open(tmp / "sparse-src" / fmt / name, "rb") as data:
                    tar.addfile(info, data)
        layers.append(buffer.getvalue())
    return layers


def _non_utf8(_: Path) -> list[bytes]:
    latin1 = "caf\udce9"  # b"caf\xe9": surrogateescape, written as the raw byte
    gnu = (
        oci.TarLayer(format=tarfile.GNU_FORMAT)
        .add_dir(f"gnu-{latin1}")
        .add_file(f"gnu-{latin1}/{latin1}", b"latin-1 name")
        .add_symlink(f"gnu-{latin1}/link", latin1)
        .add_file("gnu-\udcff\udcfe", b"not utf-8 at all")
    )
    pax = (
        oci.TarLayer(format=tarfile.PAX_FORMAT)  # names go into pax headers with hdrcharset=BINARY
        .add_file(f"pax-{latin1}", b"pax binary name")
        .add_symlink("pax-link", f"target-{latin1}")
        .add_whiteout(f"gnu-{latin1}/{latin1}")
        .add_file("utf8-\u00e9\u4e2d", b"real utf-8")
    )
    return [gnu.tar_bytes(), pax.tar_bytes()]


NAME_255 = "n" * 251 + ".txt"


def _names_255(_: Path) -> list[bytes]:
    first = (
        oci.TarLayer()
        .add_dir("d" * 255)
        .add_file("d" * 255 + "/" + NAME_255, b"255-byte name")
        .add_file(NAME_255, b"top")
        .add_symlink("s" * 255, "d" * 255)
        .add_file("gone-" + "g" * 250, b"whited out later")
    )
    # `.wh.` + a 255-byte name is 259 bytes: a whiteout no file system could store as a file.
    second = oci.TarLayer().add_whiteout("gone-" + "g" * 250).add_hardlink("h" * 255, NAME_255)
    return [first.tar_bytes(), second.tar_bytes()]


DEEP = "/".join(f"level{i:02d}-" + "x" * 120 for i in range(22))  # ~2,900 bytes, 22 levels


def _deep_paths(_: Path) -> list[bytes]:
    first = oci.TarLayer().add_file(f"{DEEP}/file", b"deep").add_symlink(f"{DEEP}/link", "/" + DEEP)
    second = oci.TarLayer().add_file(f"{DEEP}/second", b"deeper layer").add_whiteout(f"{DEEP}/file")
    return [first.tar_bytes(), second.tar_bytes()]


def _no_end_blocks(_: Path) -> list[bytes]:
    first = oci.TarLayer(end_blocks=False).add_dir("etc").add_file("etc/a", b"a" * 512)
    # Like `umoci insert`: the stream stops right after the last file's data, unpadded.
    unpadded = oci.TarLayer(end_blocks=False).add_file("etc/b", b"b").add_file("etc/c", b"ends here").tar_bytes()
    unpadded = unpadded[: len(unpadded) - (-len(b"ends here") % 512)]
    return [first.tar_bytes(), unpadded]


def _lower_hardlinks(_: Path) -> list[bytes]:
    first = (
        oci.TarLayer()
        .add_file("bin/tool", b"tool v1", mode=0o755)
        .add_hardlink("bin/tool-alias", "bin/tool")
        .add_file("etc/conf", b"conf")
    )
    second = (
        oci.TarLayer()
        .add_hardlink("usr/bin/tool", "bin/tool")  # to a lower layer's file
        .add_hardlink("etc/conf-link", "etc/conf")
        .add_file("etc/conf", b"conf v2")  # replaced after a link to the old one was made
    )
    third = oci.TarLayer().add_file("bin/tool", b"tool v2", mode=0o755)  # breaks the group
    return [first.tar_bytes(), second.tar_bytes(), third.tar_bytes()]


def _replacements(_: Path) -> list[bytes]:
    first = (
        oci.TarLayer()
        .add_file("file-to-dir", b"file")
        .add_dir("dir-to-file")
        .add_file("dir-to-file/child", b"child")
        .add_dir("dir-to-file/sub")
        .add_file("dir-to-file/sub/deep", b"deep")
        .add_file("file-to-link", b"file")
        .add_symlink("link-to-file", "file-to-dir")
        .add_dir("dir-to-link")
        .add_file("dir-to-link/child", b"c")
        .add_dir("target")
        .add_file("target/t", b"t")
    )
    second = (
        oci.TarLayer()
        .add_dir("file-to-dir", mode=0o750)
        .add_file("file-to-dir/new", b"new")
        .add_file("dir-to-file", b"now a file")
        .add_symlink("file-to-link", "target")
        .add_file("link-to-file", b"now a file")
        .add_symlink("dir-to-link", "target")
    )
    return [first.tar_bytes(), second.tar_bytes()]


def _whiteout_recreate(_: Path) -> list[bytes]:
    first = (
        oci.TarLayer()
        .add_dir("a")
        .add_file("a/old", b"old")
        .add_dir("b")
        .add_file("b/old", b"old")
        .add_file("c", b"lower c")
        .add_file("d", b"lower d")
    )
    second = (
        oci.TarLayer()
        .add_whiteout("a")  # whiteout first, then the directory again
        .add_dir("a", mode=0o700)
        .add_file("a/new", b"new")
        .add_dir("b", mode=0o750)  # the directory first, then its whiteout
        .add_file("b/new", b"new")
        .add_whiteout("b")
        .add_whiteout("c")
        .add_file("c", b"upper c")
        .add_file("d", b"upper d")
        .add_whiteout("d")
    )
    return [first.tar_bytes(), second.tar_bytes()]


def _opaque_after(_: Path) -> list[bytes]:
    first = (
        oci.TarLayer()
        .add_dir("opt/app")
        .add_file("opt/app/old", b"old")
        .add_dir("opt/app/sub")
        .add_file("opt/app/sub/old", b"old")
        .add_dir("var/lib")
        .add_file("var/lib/state", b"s")
    )
    second = (
        oci.TarLayer()
        .add_dir("opt/app", mode=0o750)
        .add_file("opt/app/new", b"new")
        .add_dir("opt/app/sub")
        .add_file("opt/app/sub/new", b"new")
        .add_opaque("opt/app")  # listed after the directory's new files
        .add_opaque("var/lib")  # an opaque directory without an entry of its own
        .add_file("var/lib/fresh", b"f")
    )
    return [first.tar_bytes(), second.tar_bytes()]


def _usrmerge(_: Path) -> list[bytes]:
    first = (
        oci.TarLayer()
        .add_dir("usr/lib")
        .add_file("usr/lib/libc.so", b"libc")
        .add_symlink("lib", "usr/lib")
        .add_dir("usr/bin")
        .add_symlink("bin", "/usr/bin")
    )
    second = (
        oci.TarLayer()
        .add_dir("lib")  # a real directory replaces the symlink
        .add_file("lib/ld.so", b"ld")
        .add_file("bin/tool", b"tool", mode=0o755)  # no entry for bin: goes through the symlink
    )
    return [first.tar_bytes(), second.tar_bytes()]


def _duplicates(_: Path) -> list[bytes]:
    layer = (
        oci.TarLayer()
        .add_file("twice", b"first", mode=0o600)
        .add_file("twice", b"second", mode=0o644)
        .add_file("file-then-dir", b"f")
        .add_dir("file-then-dir")
        .add_file("file-then-dir/x", b"x")
        .add_dir("dir-then-file")
        .add_file("dir-then-file/x", b"x")
        .add_file("dir-then-file", b"file wins")
        .add_dir("dir-twice", mode=0o700)
        .add_dir("dir-twice", mode=0o755)
    )
    return [layer.tar_bytes()]


CORPUS: list[CorpusImage] = [
    CorpusImage("special-files", "device nodes, FIFOs", _special_files),
    CorpusImage("special-modes", "setuid/setgid/sticky", _special_modes),
    CorpusImage("mode-000", "files and directories with mode 000", _mode_000),
    CorpusImage("owners", "very large or -1 uid/gid", _owners),
    CorpusImage("xattrs", "xattrs", _xattrs),
    CorpusImage("pax-global", "PAX global headers", _pax_global, _pax_global_reference, "unknown typeflag '\\x67'"),
    CorpusImage("long-names", "GNU long names and long links", _gnu_long_names),
    CorpusImage("sparse", "sparse entries", _sparse, _sparse_reference, "unknown typeflag '\\x53'"),
    CorpusImage("non-utf8", "non-UTF-8 names", _non_utf8),
    CorpusImage("names-255", "names of 255 bytes", _names_255),
    CorpusImage("deep-paths", "deep paths (within PATH_MAX)", _deep_paths),
    CorpusImage("no-end-blocks", "tar without the two zero blocks", _no_end_blocks),
    CorpusImage("lower-hardlinks", "hard links to lower-layer files", _lower_hardlinks),
    CorpusImage("replacements", "file replaced by a directory and the reverse", _replacements),
    CorpusImage("whiteout-recreate", "whiteout and re-creation in one layer, both orders", _whiteout_recreate),
    CorpusImage("opaque-after", "opaque marker after the directory's new files", _opaque_after),
    CorpusImage("usrmerge", "usrmerge symlink replaced by a directory", _usrmerge),
    CorpusImage("duplicates", "duplicate entries in one layer: the last wins", _duplicates),
]


# ---------------------------------------------------------------------------------------------
# The Debian image: a real root filesystem over several layers, built with umoci
# ---------------------------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if path.suffix not in (".list", ".sources") or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            match = re.match(r"URIs:\s*(\S+)", line) or re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if match and "security" not in match.group(1) and "debian" in match.group(1):
                return match.group(1)
    return DEFAULT_MIRROR


@pytest.fixture(scope="session")
def debian_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`debootstrap --variant=minbase bookworm`, once per session. No mirror reachable: FAIL."""
    debootstrap = require_binary("debootstrap", "debootstrap")
    if not IS_ROOT:
        pytest.fail("debootstrap needs root (chroot, mknod): run the differential tests as root")
    target = tmp_path_factory.mktemp("debian") / "rootfs"
    mirror = debian_mirror()
    done = subprocess.run(
        [debootstrap, "--variant=minbase", DEBIAN_SUITE, str(target), mirror],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        log = (target / "debootstrap/debootstrap.log").read_text(errors="replace")[-3000:] if target.exists() else ""
        pytest.fail(
            f"debootstrap of Debian {DEBIAN_SUITE} from {mirror} failed ({done.returncode}); the differential "
            f"tests need this mirror reachable.\n{done.stderr[-3000:]}\n{log}"
        )
    return target


# What the Debian image's layers change (asserted on both trees, so the corpus cannot go stale).
DEBIAN_DELETED = ("etc/motd", "usr/share/doc/apt", "etc/issue")
DEBIAN_OPAQUE = "usr/share/zoneinfo"


def _debian_layers(rootfs: Path) -> list[Callable[[Path], None]]:
    def base(root: Path) -> None:
        subprocess.run(["cp", "-a", f"{rootfs}/.", str(root)], check=True)

    def changes(root: Path) -> None:
        (root / "etc/motd").unlink()  # a whiteout for a file
        shutil.rmtree(root / "usr/share/doc/apt")  # ... and for a directory tree
        (root / "etc/issue").unlink()  # file -> directory
        (root / "etc/issue").mkdir()
        (root / "etc/issue/banner").write_text("now a directory\n")
        shutil.rmtree(root / "usr/share/doc/dpkg")  # directory -> file
        (root / "usr/share/doc/dpkg").write_text("now a file\n")
        (root / "sbin").unlink()  # usrmerge undone: the sbin -> usr/sbin symlink becomes a directory
        (root / "sbin").mkdir()
        (root / "sbin/local-tool").write_text("#!/bin/sh\n")
        (root / "sbin/local-tool").chmod(0o755)
        with open(root / "usr/bin/perl5.36.0", "ab") as perl:  # hard-linked to usr/bin/perl: both change
            perl.write(b"\n# changed\n")
        (root / "usr/bin/gunzip").unlink()  # hard-linked to usr/bin/uncompress: the link is broken
        (root / "usr/bin/gunzip").write_text('#!/bin/sh\nexec gzip -d "$@"\n')
        (root / "usr/bin/chfn").chmod(0o755)  # setuid bit dropped
        os.chown(root / "etc/hostname", 1234, 5678)

    def recreate(root: Path) -> None:
        (root / "etc/motd").write_text("back again\n")  # re-created after its whiteout
        shutil.rmtree(root / "etc/issue")  # the new directory whited out again

    return [base, changes, recreate]


def build_debian_image(rootfs: Path, work: Path, registry: LocalRegistry, repo: str, tag: str) -> None:
    layout = work / "debian-layout"
    build_layout(layout, _debian_layers(rootfs), tag=tag, cmd=["/bin/bash"])
    opaque = work / "opaque-src"
    opaque.mkdir()
    (opaque / "README").write_text("only this file\n")
    umoci = require_binary("umoci", "umoci")
    # `umoci insert --opaque` writes the marker and the new content, unpadded and without end blocks.
    subprocess.run(
        [umoci, "insert", "--image", f"{layout}:{tag}", "--opaque", str(opaque), f"/{DEBIAN_OPAQUE}"], check=True
    )
    skopeo_push(layout, tag, registry, repo)


# ---------------------------------------------------------------------------------------------
# Both unpackers over the whole corpus
# ---------------------------------------------------------------------------------------------

REPO_NAME = "differential/corpus"
NAMES = [image.name for image in CORPUS] + ["debian"]
REFUSED_BY_UMOCI = {image.name: image.umoci_refuses for image in CORPUS if image.reference is not None}


@dataclass
class Unpacked:
    ours_root: Path  # the workflow's output root
    work: Path
    reference: Path  # umoci trees, one directory per tag
    host: str
    started: float
    workflow_output: str
    oracle_errors: dict[str, str]
    umoci_refusals: dict[str, str]  # what umoci said to the originals of REFUSED_BY_UMOCI

    def ours(self, tag: str) -> Path:
        return (self.ours_root / self.host / f"{REPO_NAME}:{tag}").resolve()

    def skipped_devices(self, tag: str) -> set[str]:
        manifest = json.loads(
            (self.ours_root / ".metadata" / self.host / f"{REPO_NAME}:{tag}" / "manifest.json").read_text()
        )
        skipped: set[str] = set()
        for layer in manifest["layers"]:
            hexdigest = layer["digest"].split(":")[1]
            index = json.loads((self.work / "layers" / hexdigest[:2] / hexdigest / "layer.json").read_text())
            skipped.update(index["skipped_devices"])
        return skipped


def umoci_unpack(
    registry: LocalRegistry, repo: str, tag: str, layout: Path, dest: Path
) -> subprocess.CompletedProcess[str]:
    """The reference: skopeo copy to an OCI layout, then umoci raw unpack (--rootless unless root)."""
    skopeo = require_binary("skopeo", "skopeo")
    umoci = require_binary("umoci", "umoci")
    source = f"docker://{registry.host}/{repo}:{tag}"
    subprocess.run([skopeo, "copy", "--quiet", "--src-tls-verify=false", source, f"oci:{layout}:{tag}"], check=True)
    rootless = [] if IS_ROOT else ["--rootless"]
    return subprocess.run(
        [umoci, "raw", "unpack", *rootless, "--image", f"{layout}:{tag}", str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def unpacked(
    registry: LocalRegistry, debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Unpacked]:
    top = tmp_path_factory.mktemp("differential")
    for image in CORPUS:
        build_dir = top / "build" / image.name
        build_dir.mkdir(parents=True)
        oci.push(registry, REPO_NAME, image.name, oci.build_image(image.layers(build_dir)))
        if image.reference is not None:
            reference = oci.build_image(image.reference(build_dir))
            oci.push(registry, REPO_NAME, f"{image.name}.reference", reference)
    build_debian_image(debian_rootfs, top / "build", registry, REPO_NAME, "debian")

    directory = top / "run"
    recipe = {"version": 1, "input": [f"http://{registry.host}/{REPO_NAME}:{name}" for name in NAMES]}
    write_config(directory, recipe, {registry.host: {"insecure": True}})
    started = time.time()
    done = run_workflow(directory, "--cores", "4")
    errors: dict[str, str] = {}
    refusals: dict[str, str] = {}
    (top / "umoci").mkdir()
    (top / "umoci-refused").mkdir()
    for name in NAMES:
        tag = name
        if name in REFUSED_BY_UMOCI:
            original = umoci_unpack(registry, REPO_NAME, name, top / "oracle-layout", top / "umoci-refused" / name)
            refusals[name] = original.stderr if original.returncode != 0 else "(unpacked it)"
            tag = f"{name}.reference"
        result = umoci_unpack(registry, REPO_NAME, tag, top / "oracle-layout", top / "umoci" / name)
        if result.returncode != 0:
            errors[name] = result.stderr[-3000:]
    yield Unpacked(
        directory / "output",
        directory / "work",
        top / "umoci",
        registry.host,
        started,
        f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}",
        errors,
        refusals,
    )


def differences(unpacked: Unpacked, name: str) -> tuple[list[Difference], list[Difference]]:
    """(explained, unexplained) differences between our tree and umoci's for one corpus image."""
    ours = unpacked.ours(name)
    assert ours.is_dir(), f"{name} was not published by the workflow:\n{unpacked.workflow_output}"
    assert name not in unpacked.oracle_errors, f"umoci could not unpack {name}:\n{unpacked.oracle_errors[name]}"
    theirs = compare.scan(unpacked.reference / name, xattr_ignore=[ROOTLESS_XATTR])
    mine = compare.scan(ours)
    found = compare.compare(mine, theirs)
    context = Context(unpacked.started, unpacked.skipped_devices(name), mine, theirs)
    left = unexplained(found, context)
    return [d for d in found if d not in left], left


@pytest.mark.parametrize("name", NAMES)
def test_same_tree_as_umoci(unpacked: Unpacked, name: str) -> None:
    explained, left = differences(unpacked, name)
    assert not left, f"{name}: differences from umoci that no POLICY row explains:\n{compare.report(left)}"
    # Every image gets the Apptainer files, so the comparison did see both trees.
    assert any(d.path == ".singularity.d" for d in explained)


@pytest.mark.parametrize("name", sorted(REFUSED_BY_UMOCI))
def test_umoci_still_refuses_what_it_is_replaced_for(unpacked: Unpacked, name: str) -> None:
    """These images are compared with umoci's tree of an equivalent image: only while umoci needs it."""
    said = unpacked.umoci_refusals[name]
    assert REFUSED_BY_UMOCI[name] in said, f"umoci on the original {name} image now says: {said}"


def test_debian_corpus_has_what_it_claims(unpacked: Unpacked) -> None:
    """The Debian image really exercises deletions, replacements, hard links, setuid files, devices."""
    ours, theirs = compare.scan(unpacked.ours("debian")), compare.scan(unpacked.reference / "debian")
    for tree in (ours, theirs):
        assert len(tree) > 4000
        assert "usr/share/doc/apt" not in tree and "etc/issue" not in tree
        assert tree["etc/motd"].type == "file" and tree["usr/share/doc/dpkg"].type == "file"
        assert tree["sbin"].type == "dir" and tree["bin"].type == "symlink"
        assert tree["usr/bin/perl"].links == ("usr/bin/perl", "usr/bin/perl5.36.0")
        assert tree["usr/bin/gunzip"].links is None
        assert sorted(p for p in tree if p.startswith(DEBIAN_OPAQUE + "/")) == [f"{DEBIAN_OPAQUE}/README"]
        assert tree["usr/bin/su"].mode & stat.S_ISUID and not tree["usr/bin/chfn"].mode & stat.S_ISUID
        if IS_ROOT:
            assert (tree["etc/hostname"].uid, tree["etc/hostname"].gid) == (1234, 5678)
    assert theirs["dev/null"].type == "char" and "dev/null" not in ours


def test_comparator_reports_every_kind_of_difference(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root, content, mode, target in ((a, b"one", 0o644, "x"), (b, b"two", 0o4644, "y")):
        root.mkdir()
        (root / "f").write_bytes(content)
        (root / "f").chmod(mode)
        (root / "link").symlink_to(target)
        (root / "same").write_text("same")
        os.utime(root / "same", (1, 1))
        (root / "dir-or-file").mkdir() if root == a else (root / "dir-or-file").write_text("")
    os.link(a / "same", a / "same-link")
    (b / "same-link").write_text("same")
    os.utime(b / "same-link", (1, 1))
    os.utime(a / "same-link", (1, 1))
    os.setxattr(a / "f", "user.k", b"v")
    (b / "only-b").mkdir()
    found = {(d.path, d.field) for d in compare.compare(compare.scan(a), compare.scan(b))}
    assert {("f", "mode"), ("f", "sha256"), ("f", "xattrs"), ("link", "target")} <= found
    assert {("same", "links"), ("same-link", "links"), ("dir-or-file", "type"), ("only-b", "missing")} <= found
    assert ("f", "size") not in found and ("same", "sha256") not in found


def test_policy_explains_only_what_it_names(tmp_path: Path) -> None:
    empty = Entry("file", 0o644, 0, 0, 0, size=0, sha256="e3b0")
    content = Entry("file", 0o644, 0, 0, 0, size=3, sha256="abcd")
    device = Entry("char", 0o666, 0, 0, 0, device=(1, 3))
    ours = {"etc/hosts": empty, "etc/extra": content, "dev/tty": empty}
    theirs = {"etc/hosts": content, "dev/null": device, "dev/tty": device}
    context = Context(time.time(), {"dev/null"}, ours, theirs)
    left = {(d.path, d.field) for d in unexplained(compare.compare(ours, theirs), context)}
    # etc/hosts and the skipped dev/null are policy; an extra file and a device turned file are not.
    assert left == {("etc/extra", "missing"), ("dev/tty", "type")}


def _extract_and_flatten(tmp_path: Path, tars: list[bytes]) -> Path:
    return unpack(Store(tmp_path / "work", tmp_path / "root"), oci.build_image(tars))


def test_layer_ending_inside_the_last_padding_is_read_like_go_does(tmp_path: Path) -> None:
    """Bug found by the Debian image: `umoci insert` layers stop right after the last file's data."""
    tar = oci.TarLayer(end_blocks=False).add_file("a", b"x" * 600).add_file("b", b"ends here").tar_bytes()
    flat = _extract_and_flatten(tmp_path, [tar[: len(tar) - (-9 % 512)]])
    assert (flat / "a").read_bytes() == b"x" * 600 and (flat / "b").read_bytes() == b"ends here"


def test_layer_missing_file_data_is_still_refused(tmp_path: Path) -> None:
    tar = oci.TarLayer(end_blocks=False).add_file("a", b"x" * 600).tar_bytes()
    with pytest.raises(LayerError, match=r"layer 1 \(sha256:[0-9a-f]{64}\): not a valid tar stream"):
        _extract_and_flatten(tmp_path, [tar[: 512 + 599]])  # one byte of data missing


def test_paths_beyond_path_max_refused_like_umoci(registry: LocalRegistry, repo_name: str, tmp_path: Path) -> None:
    """Known limit, shared with umoci: a path longer than PATH_MAX once joined is refused, clearly."""
    deep = "/".join(f"level{i:02d}-" + "x" * 200 for i in range(22))  # ~4,600 bytes
    tar = oci.TarLayer().add_file(f"{deep}/file", b"too deep").tar_bytes()
    oci.push(registry, repo_name, "deep", oci.build_image([tar]))
    result = umoci_unpack(registry, repo_name, "deep", tmp_path / "layout", tmp_path / "umoci")
    assert result.returncode != 0 and "file name too long" in result.stderr
    too_long = r"layer 1 \(sha256:[0-9a-f]{64}\): entry 'level00-x+.*/file'.*File name too long"
    with pytest.raises(LayerError, match=too_long):
        _extract_and_flatten(tmp_path, [tar])
    assert list((tmp_path / "work/layers").glob("*/*")) == [], "a refused layer leaves nothing in the store"
