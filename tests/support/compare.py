"""Compare two unpacked image trees path by path, for differential tests.

`scan` records, for every path below a root (the root itself as ""): its type, permission bits
(setuid/setgid/sticky included), owner, size and sha256 of a regular file's content, a symlink's
target, a device's numbers, extended attributes, mtime, and hard-link grouping: the set of paths of
the SAME tree that share the inode (links from outside the tree, such as our layer store, do not
count). `compare` lists every difference in a readable form.

The walk goes through directory file descriptors, one component at a time, so it works for paths
longer than PATH_MAX and never follows a symlink. Directories and files the caller may not read
(mode 000 when not root) are opened with owner read/search added for the moment of reading, then
their mode is restored; the recorded mode is the one found.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

IS_ROOT = os.geteuid() == 0

# Every attribute `compare` can report, besides "missing" (a path only one tree has).
FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "target", "device", "xattrs", "mtime", "links")


@dataclass(frozen=True)
class Entry:
    type: str  # dir, file, symlink, fifo, char, block, socket
    mode: int  # S_IMODE: permission bits with setuid/setgid/sticky
    uid: int
    gid: int
    mtime: int  # seconds
    size: int | None = None  # regular files only
    sha256: str | None = None  # regular files only
    target: str | None = None  # symlinks only
    device: tuple[int, int] | None = None  # char/block devices only
    xattrs: tuple[tuple[str, bytes], ...] = ()
    links: tuple[str, ...] | None = None  # regular files with more than one path in the tree

    def describe(self) -> str:
        what = f"{self.type} {self.mode:04o} {self.uid}:{self.gid}"
        if self.type == "file":
            what += f" {self.size} B sha256:{(self.sha256 or '')[:12]}"
        elif self.type == "symlink":
            what += f" -> {self.target!r}"
        elif self.device is not None:
            what += f" {self.device[0]},{self.device[1]}"
        return what


@dataclass(frozen=True)
class Difference:
    path: str
    field: str  # "missing" or one of FIELDS
    ours: object
    theirs: object

    def __str__(self) -> str:
        path = self.path or "/"
        if self.field == "missing":
            side = "ours only" if self.theirs is None else "reference only"
            entry = self.ours if self.theirs is None else self.theirs
            assert isinstance(entry, Entry)
            return f"{path!r}: {side}: {entry.describe()}"
        ours, theirs = self.ours, self.theirs
        if self.field == "mode":
            ours, theirs = f"{ours:04o}", f"{theirs:04o}"
        return f"{path!r}: {self.field}: ours {ours!r}, reference {theirs!r}"


_TYPES = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFSOCK: "socket",
}


def scan(root: str | os.PathLike[str], xattr_ignore: Iterable[str] = ()) -> dict[str, Entry]:
    """Every path under `root` (relative, "" for the root itself) with its Entry."""
    ignore = set(xattr_ignore)
    entries: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], list[str]] = defaultdict(list)
    parent_fd = os.open(os.path.dirname(os.path.abspath(root)) or "/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        name = os.path.basename(os.path.abspath(root))
        st = os.lstat(name, dir_fd=parent_fd)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(root)
        entries[""] = _entry(parent_fd, name, st, ignore)
        with _opened_dir(parent_fd, name, st) as fd:
            _walk(fd, "", entries, inodes, ignore)
    finally:
        os.close(parent_fd)
    for paths in inodes.values():
        if len(paths) > 1:
            group = tuple(sorted(paths))
            for path in paths:
                entries[path] = replace(entries[path], links=group)
    return entries


def _walk(
    dir_fd: int,
    rel: str,
    entries: dict[str, Entry],
    inodes: dict[tuple[int, int], list[str]],
    ignore: set[str],
) -> None:
    for name in sorted(os.listdir(dir_fd)):
        path = f"{rel}/{name}" if rel else name
        st = os.lstat(name, dir_fd=dir_fd)
        entries[path] = _entry(dir_fd, name, st, ignore)
        if stat.S_ISREG(st.st_mode):
            inodes[(st.st_dev, st.st_ino)].append(path)
        elif stat.S_ISDIR(st.st_mode):
            with _opened_dir(dir_fd, name, st) as fd:
                _walk(fd, path, entries, inodes, ignore)


class _opened_dir:
    """A directory fd, with owner read/search added while it is open if it is needed (non-root)."""

    def __init__(self, dir_fd: int, name: str, st: os.stat_result) -> None:
        self.dir_fd, self.name, self.mode = dir_fd, name, stat.S_IMODE(st.st_mode)
        self.changed = False

    def __enter__(self) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            self.fd = os.open(self.name, flags, dir_fd=self.dir_fd)
        except PermissionError:
            os.chmod(self.name, self.mode | 0o500, dir_fd=self.dir_fd)
            self.changed = True
            self.fd = os.open(self.name, flags, dir_fd=self.dir_fd)
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        if self.changed:
            os.chmod(self.name, self.mode, dir_fd=self.dir_fd)


def _entry(dir_fd: int, name: str, st: os.stat_result, ignore: set[str]) -> Entry:
    kind = _TYPES[stat.S_IFMT(st.st_mode)]
    entry = Entry(
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime=int(st.st_mtime),
        xattrs=_xattrs(dir_fd, name, ignore),
    )
    if kind == "file":
        return replace(entry, size=st.st_size, sha256=_sha256(dir_fd, name, st))
    if kind == "symlink":
        return replace(entry, target=os.readlink(name, dir_fd=dir_fd))
    if kind in ("char", "block"):
        return replace(entry, device=(os.major(st.st_rdev), os.minor(st.st_rdev)))
    return entry


def _sha256(dir_fd: int, name: str, st: os.stat_result) -> str:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    mode = stat.S_IMODE(st.st_mode)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:  # mode 000 and not root: read it with owner read added for a moment
        os.chmod(name, mode | 0o400, dir_fd=dir_fd)
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        finally:
            os.chmod(name, mode, dir_fd=dir_fd)
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _xattrs(dir_fd: int, name: str, ignore: set[str]) -> tuple[tuple[str, bytes], ...]:
    # listxattr/getxattr take no dir_fd: name the entry through /proc, which keeps the path short.
    path = f"/proc/self/fd/{dir_fd}/{name}"
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EPERM):
            return ()
        raise
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names if n not in ignore))


def compare(
    ours: Mapping[str, Entry],
    theirs: Mapping[str, Entry],
    fields: Iterable[str] = FIELDS,
) -> list[Difference]:
    """Differences between two scans, path by path; a type mismatch hides the other fields."""
    fields = set(fields)
    unknown = fields - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    found: list[Difference] = []
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a is None or b is None:
            found.append(Difference(path, "missing", a, b))
            continue
        if a.type != b.type:
            found.append(Difference(path, "type", a.type, b.type))
            continue
        for name in FIELDS[1:]:
            if name in fields and getattr(a, name) != getattr(b, name):
                found.append(Difference(path, name, getattr(a, name), getattr(b, name)))
    return found


def report(differences: Iterable[Difference], limit: int = 60) -> str:
    """A readable list, one difference per line (the first `limit`)."""
    lines = [str(d) for d in differences]
    more = len(lines) - limit
    return "\n".join(lines[:limit] + ([f"... and {more} more"] if more > 0 else []))
