"""fsutil.json_bytes and safefs.write_if_changed by table: how state JSON is written, and written only when it
changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from unpacked.fsutil import json_bytes
from unpacked.safefs import write_if_changed

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
