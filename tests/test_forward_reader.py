"""The stream tarfile reads layers through: seekable forward only, as tarfile's stream mode was."""

from __future__ import annotations

import io
import tarfile

import pytest

from unpacked.extract import ForwardReader


def test_reads_and_seeks_forward_counting_the_position() -> None:
    reader = ForwardReader(io.BytesIO(bytes(range(100)) * 30000))
    assert reader.read(10) == bytes(range(10))
    assert reader.tell() == 10
    # Forward over more than one internal step (1 MiB), to the byte asked for.
    assert reader.seek(2_000_000) == 2_000_000
    assert reader.read(2) == bytes([2_000_000 % 100, 2_000_001 % 100])


def test_seeking_backwards_is_refused_as_in_stream_mode() -> None:
    reader = ForwardReader(io.BytesIO(b"x" * 100))
    reader.read(50)
    with pytest.raises(tarfile.StreamError, match="backwards"):
        reader.seek(10)
    assert reader.seek(50) == 50  # where it already is: allowed, nothing read


def test_seeking_past_the_end_stops_at_the_end() -> None:
    reader = ForwardReader(io.BytesIO(b"x" * 100))
    assert reader.seek(1000) == 100
    assert reader.read(1) == b""
