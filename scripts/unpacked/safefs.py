"""Atomic, confined writes: the one place that writes files and directories into place.

Two rules hold for everything here:
- a file is never opened for writing where it is seen: it is written under a temporary name in the
  same directory (`O_CREAT | O_EXCL | O_NOFOLLOW`) and renamed over its name. Readers see the old
  content or the new, never a partial file, and an existing inode (maybe a hard link shared with other
  images) is replaced, never modified. On failure the temporary file is removed.
- a directory is built privately next to its final place (`staged_dir`) and renamed into place whole.

Two ways in. Path-based (`write_atomic`, `write_if_changed`, `replace_symlink`, `staged_dir`) for
trees we own: the parents of the path are followed as they are. Directory-fd based (`put_file`,
`own_dir`, `open_dir`, ...) for trees whose content is hostile (image trees): every component is
opened with `O_NOFOLLOW` relative to its parent's fd, so a symlink in the image never leads out of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import write_failure
from .fsutil import remove_tree

DIR_MODE = 0o755

# Real directories only: with O_NOFOLLOW a symlink gives ELOOP, a file ENOTDIR.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_EXCL | O_NOFOLLOW: never reuse, or write through, whatever an attacker put at the temporary name.
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# --------------------------------------------------------------------------- the one file writer


def _write_new(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Write `data` with `mode` (umask ignored) under a temporary name in `dir_fd`, rename it to `name`."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, _NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


# --------------------------------------------------------------------------- trees we own (paths)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename.

    Missing parents are created. A symlink at `path` is replaced, never written through. An OSError
    becomes a StoreError that names `path` (ENOSPC names no file).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_PATH: writing into a directory needs no read permission on it, so neither does this.
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        with opened(dir_fd):
            _write_new(dir_fd, path.name, data, mode)
    except OSError as err:
        raise write_failure(path, err) from err


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically write `data` unless `path` already holds exactly it; return True if written.

    Keeping the mtime of unchanged files is what lets Snakemake skip unchanged images.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, data)
    return True


def replace_symlink(link: Path, target: str, tmp: Path) -> None:
    """Make `link` a symlink to `target` in one step: created at `tmp` (same directory), renamed over.

    The caller names `tmp` (it knows which leftovers its garbage collection removes); whatever a
    killed run left there is removed first.
    """
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


_LIBC = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (renameat2 RENAME_EXCHANGE): a reader sees one or the
    other, never neither. False where the kernel or filesystem cannot (nothing changed then)."""
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def replace_dir(staging: Path, final: Path) -> None:
    """Move a finished directory into place. An older `final` is exchanged with it in one step where
    the filesystem allows (else moved aside first), then removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(final):
        os.rename(staging, final)
        return
    if exchange(staging, final):
        remove_tree(staging)  # now the old tree; a kill leaves a `.tmp-` name, removed by the next build
        return
    aside = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.rename(final, aside)
    os.rename(staging, final)
    remove_tree(aside)


def fresh_staging(dest: Path) -> Path:
    """A new private directory to build `dest` in, next to it; leftovers of killed builds are removed.

    Only one job builds a given digest at a time (Snakemake locks a layer's or blob's outputs; the
    tags of one flat image build it under its lock, `Store.flat_lock`), so any older staging
    directory of the same `dest` belongs to a build that was interrupted.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{dest.name}.tmp-*", f".{dest.name}.old-*"):  # killed builds, killed swaps
        for stale in dest.parent.glob(pattern):
            remove_tree(stale)
    staging = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    os.mkdir(staging, 0o700)
    return staging


@contextlib.contextmanager
def staged_dir(dest: Path, *, swap: bool = True) -> Iterator[Path]:
    """Build the directory `dest` in a private staging directory (yielded), then put it in place.

    On success the staging directory gets mode 0755 and replaces `dest` (`replace_dir`); with
    `swap=False` it is plainly renamed, for a `dest` the caller knows is absent (or an empty
    directory). On any failure, including a kill signal turned exception, nothing is left behind.
    """
    staging = fresh_staging(dest)
    try:
        yield staging
        os.chmod(staging, 0o755)
        if swap:
            replace_dir(staging, dest)
        else:
            os.rename(staging, dest)
    except BaseException:
        remove_tree(staging)
        raise


@contextlib.contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if absent) for the block: other processes wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, also by a killed process
        yield


# --------------------------------------------------------------------------- hostile trees (dir fds)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of `name` under `dir_fd`; None if nothing is there."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    """Close `fd` on leaving the block."""
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir(dir_fd: int, name: str) -> int | None:
    """Open the real directory `name` under `dir_fd`; None if it is missing, a symlink or a file."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def make_dir(dir_fd: int, name: str) -> None:
    """Create directory `name` with mode 0755 whatever the umask; an existing entry is left alone."""
    try:
        os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
    except FileExistsError:
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    with opened(fd):
        os.fchmod(fd, DIR_MODE)


def make_free_dirs(root_fd: int, relpath: str) -> None:
    """Create the directories of `relpath` where nothing exists; stop at the first non-directory.

    A symlink (or file) anywhere on the path means the tree has something there of its own: we must
    not create directories through it.
    """
    fd = os.dup(root_fd)
    try:
        for name in relpath.split("/"):
            if lstat_at(fd, name) is None:
                make_dir(fd, name)
            child = open_dir(fd, name)
            if child is None:
                return
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def own_dir(dir_fd: int, name: str) -> int:
    """Open `name` as a real directory we can write into and return its fd.

    For directories that are ours to shape, whatever the tree has there: a symlink or any other
    non-directory is removed (never followed) and a real directory made instead.
    """
    st = lstat_at(dir_fd, name)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        st = None
    if st is None:
        make_dir(dir_fd, name)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    st = os.fstat(fd)
    if st.st_mode & 0o700 != 0o700:
        # A directory is never hard-linked: changing its mode touches this tree only.
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
    return fd


def holds(dir_fd: int, name: str, st: os.stat_result, data: bytes, mode: int) -> bool:
    """Whether the regular file `name` (lstat `st`) already has exactly `data` and `mode`."""
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
        return False
    if st.st_size != len(data):
        return False
    # O_NONBLOCK: a FIFO swapped in since the lstat must not hang us; O_NOFOLLOW: nor a symlink.
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(len(data) + 1) == data


def put_file(dir_fd: int, name: str, data: bytes, mode: int) -> bool:
    """Make `name` under `dir_fd` a regular file with `data` and `mode`; True if it was written.

    A file that already holds exactly that is left alone (its mtime too). Otherwise the new file
    replaces whatever is there, a hard link shared with other images or a symlink included, and is
    never written into. A directory in the way is removed first.
    """
    st = lstat_at(dir_fd, name)
    if st is not None:
        if holds(dir_fd, name, st, data, mode):
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
    _write_new(dir_fd, name, data, mode)
    return True
