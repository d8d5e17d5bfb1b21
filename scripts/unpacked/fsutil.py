"""Small filesystem helpers: crash-safe removal and copying of trees we own.

Every product is created under a temporary name and renamed into place (`safefs`), and removed the
other way round: renamed out of the way into a trash directory, then deleted there (`discard`). So a
kill at any moment leaves a product whole under its name or not there at all, never half there.
"""

from __future__ import annotations

import contextlib
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
