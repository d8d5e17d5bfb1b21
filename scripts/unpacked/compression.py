"""Open a layer blob as a stream of uncompressed tar bytes, whatever its compression.

The compression is detected from the blob's magic bytes, not trusted from the media type.
gzip is inflated with ISA-L (several times faster than zlib), zstd with the zstandard package.
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from typing import BinaryIO

import zstandard
from isal import igzip

from .errors import LayerError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def detect(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def open_decompressed(raw: BinaryIO) -> tuple[BinaryIO, str]:
    """Wrap `raw` (a binary file at offset 0) in a decompressing reader; return it and its kind."""
    head = raw.read(4)
    raw.seek(0)
    kind = detect(head)
    if kind == "gzip":
        return igzip.IGzipFile(fileobj=raw, mode="rb"), kind  # type: ignore[no-untyped-call,return-value]
    if kind == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader, 1 << 20), kind
    return raw, kind


class HashingReader(io.RawIOBase):
    """A read-only stream of the decompressed bytes, hashed (sha256) and counted on the way.

    Decompression and hashing run in two background threads (both release the GIL), a few chunks
    ahead of the reader, so they overlap with each other and with tar parsing and file creation in
    the caller. Memory stays bounded: at most `AHEAD` chunks wait for each. `limit` bounds the
    uncompressed size, so a decompression bomb fails instead of filling the disk.
    """

    CHUNK = 1 << 20
    AHEAD = 4

    def __init__(self, inner: BinaryIO, limit: int, what: str) -> None:
        self.inner = inner
        self.hasher = hashlib.sha256()
        self.count = 0
        self.limit = limit
        self.what = what
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(self.AHEAD)
        self._to_hash: queue.Queue[bytes | None] = queue.Queue(self.AHEAD)
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="decompress", daemon=True)
        self._hashing = threading.Thread(target=self._hash, name="hash", daemon=True)
        self._hashing.start()
        self._thread.start()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = self.inner.read(self.CHUNK)
                except (OSError, EOFError, zstandard.ZstdError) as err:
                    raise LayerError(f"{self.what}: corrupt or truncated compressed stream ({err})") from None
                if not data:
                    self._put(self._to_hash, None)
                    self._put(self._queue, None)
                    return
                self.count += len(data)
                if self.count > self.limit:
                    raise LayerError(f"{self.what}: uncompressed size exceeds the limit of {self.limit} bytes")
                self._put(self._to_hash, data)
                self._put(self._queue, data)
        except BaseException as err:  # handed to the reader, raised there
            self._put(self._queue, err)

    def _hash(self) -> None:
        while True:
            try:
                data = self._to_hash.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():  # the stream was given up: no end of it will come
                    return
                continue
            if data is None:
                return
            self.hasher.update(data)

    def _put(self, where: queue.Queue, item: object) -> None:  # type: ignore[type-arg]
        while not self._stop.is_set():
            try:
                where.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while not self._current:
            if self._done:
                return 0
            item = self._queue.get()
            if item is None:
                self._done = True
                return 0
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._current = memoryview(item)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def drain(self) -> None:
        """Read to the end, so the digest covers the whole stream (tar padding included)."""
        while self.read(self.CHUNK):
            pass

    def close(self) -> None:
        """Stop the background threads (also when the reader gave up half-way)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._hashing.join(timeout=5)
        super().close()

    @property
    def digest(self) -> str:
        """The sha256 of the whole decompressed stream (what is left is read first)."""
        self.drain()
        self._thread.join()
        self._hashing.join()
        return "sha256:" + self.hasher.hexdigest()
