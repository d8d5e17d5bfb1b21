"""Small filesystem helpers: atomic writes, crash-safe removal of trees we own.

Every product is created under a temporary name and renamed into place, and removed the other way
round: renamed out of the way into a trash directory, then deleted there (`discard`). So a kill at
any moment leaves a product whole under its name or not there at all, never half there.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ENVIRONMENT_ERRNOS, StoreError, write_failure


def json_bytes(document: object) -> bytes:
    """The one way state and metadata JSON is written: sorted keys, so equal content is equal bytes."""
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename.

    Readers see the old content or the new, never a partial file. A symlink at `path` is replaced,
    never written through.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(err, OSError):
            raise write_failure(path, err) from err
        raise


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


def make_removable(path: Path) -> None:
    """Give the owner rwx on every directory under `path`, so that it can be deleted.

    Images contain directories of mode 000 or 555; we must always be able to remove what we wrote.
    """
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode) and (st.st_mode & 0o700) != 0o700:
                os.chmod(full, st.st_mode | 0o700)


def remove_tree(path: Path) -> None:
    """Remove a file, symlink or directory tree we own, whatever the modes inside it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    os.chmod(path, st.st_mode | 0o700)
    make_removable(path)
    shutil.rmtree(path)


def discard(path: Path, trash: Path) -> None:
    """Remove `path` crash-safely: rename it into `trash` (a directory on the same filesystem), then
    delete it there. Its marker, if it has one, must be removed first by the caller.

    Killed half-way, `path` is either still whole under its name or gone from it; what is left in
    the trash is finished by `empty_trash`.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink()  # one call: already all or nothing
        return
    trash.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(dir=trash, prefix="del-"))
    try:
        os.rename(path, holder / path.name)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        # The trash is on another filesystem (a store directory mounted apart): step aside in the
        # same directory; such `.old-` names are removed by the next build or collection there.
        os.rmdir(holder)
        holder = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.rename(path, holder)
    remove_tree(holder)


def empty_trash(trash: Path) -> int:
    """Finish the removals a killed run left in `trash`; the number of entries removed."""
    try:
        names = os.listdir(trash)
    except FileNotFoundError:
        return 0
    for name in names:
        remove_tree(trash / name)
    return len(names)


@contextlib.contextmanager
def naming_failures(path: Path) -> Iterator[None]:
    """Name `path` in a failure of the machine (full disk, read-only, I/O error) while writing it:
    ENOSPC comes without any file name. Other errors are left as they are."""
    try:
        yield
    except StoreError:
        raise
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        raise write_failure(path, err) from err


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

    Only one job builds a given digest at a time (Snakemake locks outputs), so any older staging
    directory of the same `dest` belongs to a build that was interrupted.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{dest.name}.tmp-*", f".{dest.name}.old-*"):  # killed builds, killed swaps
        for stale in dest.parent.glob(pattern):
            remove_tree(stale)
    staging = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    os.mkdir(staging, 0o700)
    return staging


def copy_tree(source: Path, dest: Path) -> None:
    """Copy an image tree into an existing empty directory `dest`, keeping what an image needs.

    Hard-link groups stay groups, symlinks are copied as links, FIFOs recreated, owners (as root),
    modes (setuid and mode 000 included) and mtimes kept; directory modes last, so that read-only
    directories can be filled. Source directories and files their owner may not read (mode 000 when
    not root; we built them, so we own them) are opened up for the copy only.
    """
    linked: dict[tuple[int, int], str] = {}
    directories: list[tuple[str, os.stat_result]] = []
    opened: list[tuple[str, int]] = []  # source directories to give their mode back
    try:
        for dirpath, dirnames, filenames in os.walk(source):
            target_dir = os.path.normpath(os.path.join(dest, os.path.relpath(dirpath, source)))
            for name in dirnames:
                src, dst = os.path.join(dirpath, name), os.path.join(target_dir, name)
                st = os.lstat(src)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), dst)
                    continue
                os.mkdir(dst, 0o700)
                directories.append((dst, st))
                if st.st_mode & 0o500 != 0o500:
                    opened.append((src, stat.S_IMODE(st.st_mode)))
                    os.chmod(src, st.st_mode | 0o500)
            for name in filenames:
                src, dst = os.path.join(dirpath, name), os.path.join(target_dir, name)
                st = os.lstat(src)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), dst)
                elif stat.S_ISFIFO(st.st_mode):
                    os.mkfifo(dst)
                    copy_metadata(dst, st)
                elif (st.st_dev, st.st_ino) in linked:
                    os.link(linked[(st.st_dev, st.st_ino)], dst)
                else:
                    _copy_file(src, dst, st)
                    linked[(st.st_dev, st.st_ino)] = dst
        for dirpath, st in reversed(directories):  # deepest first
            copy_metadata(dirpath, st)
    finally:
        for src, mode in reversed(opened):
            os.chmod(src, mode)


def _copy_file(src: str, dst: str, st: os.stat_result) -> None:
    unreadable = not os.access(src, os.R_OK)
    if unreadable:
        os.chmod(src, stat.S_IMODE(st.st_mode) | 0o400)
    try:
        shutil.copyfile(src, dst, follow_symlinks=False)
    finally:
        if unreadable:
            os.chmod(src, stat.S_IMODE(st.st_mode))
    copy_metadata(dst, st)


def copy_metadata(path: str, st: os.stat_result, mode: int | None = None) -> None:
    """Give `path` the owner (as root), mode (`mode` if given) and mtime of `st`; links not followed."""
    if os.geteuid() == 0:
        os.lchown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode) if mode is None else mode)  # after chown: it clears setuid
    os.utime(path, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)
