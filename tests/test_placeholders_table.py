"""placeholders.py by table: what counts as a placeholder, and that only placeholders are ever removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from unpacked.placeholders import drop_placeholders, failed_inputs, is_placeholder, leave_placeholders
from unpacked.store import Store

MAGIC = b'{"unpacked_placeholder": '

# (what is at the path: bytes, "dir", or None for nothing, is it a placeholder?)
CASES: list[tuple[bytes | str | None, bool]] = [
    (None, False),
    ("dir", False),
    (b"", False),
    (b'{"source_digest": "sha256:00"}\n', False),  # a real marker
    (b"\x1f\x8b\x08\x00", False),  # a gzip blob
    (MAGIC + b'1, "reason": "x"}\n', True),
    (MAGIC + b"1}" + b" " * (64 << 10), False),  # too big to be one: real content, whatever it starts with
    (b" " + MAGIC + b"1}", False),  # the key must come first
]


@pytest.mark.parametrize(("content", "expected"), CASES)
def test_is_placeholder(tmp_path: Path, content: bytes | str | None, expected: bool) -> None:
    path = tmp_path / "out"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    assert is_placeholder(path) is expected


def test_left_placeholders_are_found_then_dropped_and_real_outputs_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    real, missing = tmp_path / "work/real.json", tmp_path / "work/deep/missing.json"
    real.parent.mkdir(parents=True)
    real.write_text('{"real": 1}\n')
    leave_placeholders(store, [real, missing], "fetch-blob: not found")
    assert (real.read_text(), is_placeholder(missing)) == ('{"real": 1}\n', True)
    assert failed_inputs([real, missing]) == [missing]
    assert (drop_placeholders(store), missing.exists(), real.exists()) == (1, False, True)
    assert drop_placeholders(store) == 0, "each placeholder is dropped once"


def test_a_real_output_written_over_a_placeholder_is_never_dropped(tmp_path: Path) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    path = tmp_path / "work/out.json"
    leave_placeholders(store, [path], "flatten: disk full")
    path.write_text('{"real": 1}\n')  # a later job produced the real output
    assert (drop_placeholders(store), path.read_text()) == (0, '{"real": 1}\n')
