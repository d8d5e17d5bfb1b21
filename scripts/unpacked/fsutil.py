"""Small filesystem helpers: atomic writes and removal of trees we own."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path


def json_bytes(document: object) -> bytes:
    """The one way state and metadata JSON is written: sorted keys, so equal content is equal bytes."""
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename.

    Readers see the old content or the new, never a partial file. A symlink at `path` is replaced,
    never written through.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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


def replace_dir(staging: Path, final: Path) -> None:
    """Move a finished directory into place; an older `final` is moved aside first, then removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(final):
        aside = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, aside)
        os.rename(staging, final)
        remove_tree(aside)
    else:
        os.rename(staging, final)


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
