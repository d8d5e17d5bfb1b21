"""errors.py by table: what a failed write says, and what an operator can do about it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from unpacked.errors import StoreError, write_failure

FULL = "the filesystem is full: free space (or run `unpacked gc`), then run again"

# (the OSError, what the StoreError says about writing /w/x)
WRITE_FAILURES = [
    (OSError(errno.ENOSPC, "No space left on device"), f"cannot write /w/x: No space left on device; {FULL}"),
    (
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        "cannot write /w/x: Disk quota exceeded; the disk quota is exceeded: free space, then run again",
    ),
    (
        OSError(errno.EROFS, "Read-only file system"),
        "cannot write /w/x: Read-only file system; the filesystem is read-only",
    ),
    (
        OSError(errno.EACCES, "Permission denied"),
        "cannot write /w/x: Permission denied; permission denied: check the owner and modes of the directory",
    ),
    (OSError(errno.EIO, "Input/output error"), "cannot write /w/x: Input/output error"),  # no advice to give
    (OSError(errno.ENOSPC, "full", "/w/x/.tmp1"), f"cannot write /w/x (/w/x/.tmp1): full; {FULL}"),  # other file
    (OSError(errno.ENOSPC, "full", "/w/x"), f"cannot write /w/x: full; {FULL}"),  # the same file: named once
    (OSError("no errno"), "cannot write /w/x: no errno"),
]


@pytest.mark.parametrize(("error", "message"), WRITE_FAILURES)
def test_write_failure(error: OSError, message: str) -> None:
    failure = write_failure(Path("/w/x"), error)
    assert isinstance(failure, StoreError) and str(failure) == message
