"""compression.HashingReader: decompression and hashing on threads of their own, stopped with it."""

from __future__ import annotations

import hashlib
import io

import pytest
from isal import igzip

from unpacked.compression import HashingReader, open_decompressed
from unpacked.errors import LayerError

DATA = bytes(range(256)) * 40000  # 10 MB: more chunks than the reader reads ahead


def reader(data: bytes = DATA, limit: int = 1 << 30) -> HashingReader:
    stream, kind = open_decompressed(io.BytesIO(igzip.compress(data)))
    assert kind == "gzip"
    return HashingReader(stream, limit, "test layer")


def test_the_digest_covers_every_byte_in_order() -> None:
    hashing = reader()
    first = hashing.read(1000)
    assert first == DATA[:1000]
    assert hashing.digest == "sha256:" + hashlib.sha256(DATA).hexdigest()  # the rest read first
    assert hashing.count == len(DATA)
    hashing.close()


def test_closing_half_way_stops_both_threads() -> None:
    hashing = reader()
    hashing.read(1 << 20)
    hashing.close()
    assert not hashing._thread.is_alive() and not hashing._hashing.is_alive()


def test_a_stream_past_the_limit_fails_and_its_threads_stop() -> None:
    hashing = reader(limit=3 << 20)
    with pytest.raises(LayerError, match="uncompressed size exceeds the limit of 3145728 bytes"):
        while hashing.read(1 << 20):
            pass
    hashing.close()
    assert not hashing._thread.is_alive() and not hashing._hashing.is_alive()
