"""errors.py and fsutil.py's pure parts by table: what a failed write says, how state JSON is written."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from unpacked.errors import StoreError, write_failure
from unpacked.fsutil import json_bytes, write_if_changed

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


# (document, the bytes written: sorted keys, one-space indent, a final newline, ASCII)
JSON = [
    ({}, b"{}\n"),
    ([], b"[]\n"),
    ("x", b'"x"\n'),
    ({"b": 1, "a": 2}, b'{\n "a": 2,\n "b": 1\n}\n'),
    ({"a": [1, 2]}, b'{\n "a": [\n  1,\n  2\n ]\n}\n'),
    ({"\u00e9": None}, b'{\n "\\u00e9": null\n}\n'),
    ({"z": {"y": 1, "x": 2}}, b'{\n "z": {\n  "x": 2,\n  "y": 1\n }\n}\n'),  # nested keys sorted too
]


@pytest.mark.parametrize(("document", "data"), JSON)
def test_json_bytes(document: object, data: bytes) -> None:
    assert json_bytes(document) == data


# (content on disk or None, content to write, written?)
CHANGES: list[tuple[bytes | None, bytes, bool]] = [
    (None, b"x", True),
    (b"x", b"x", False),  # equal bytes: the file (and its mtime) is left alone
    (b"x", b"y", True),
    (b"x", b"x\n", True),
    (b"", b"", False),
]


@pytest.mark.parametrize(("before", "after", "written"), CHANGES)
def test_write_if_changed(tmp_path: Path, before: bytes | None, after: bytes, written: bool) -> None:
    path = tmp_path / "deep" / "state.json"
    if before is not None:
        path.parent.mkdir()
        path.write_bytes(before)
    assert write_if_changed(path, after) is written and path.read_bytes() == after
