"""Create small regular files of a layer on a few threads, while the tar stream is read on.

Creating an inode is the dearest step of extraction: on an ext4 disk of a VM it measured about
140 µs of kernel time per `open(O_CREAT)`, more than parsing the tar header and writing the data
together. The system calls release the GIL, so a couple of threads creating files side by side
overlap with each other and with tar parsing (bench/unpack.py). Files go to the threads in batches
of up to 32 (1 MiB): one hand-over per file cost more than it saved (docs/benchmarks.md). The caller
keeps the ordering rules: it hands over only files that no later entry can depend on before
`drain()` is called, which hands over the batch being filled and waits for every file.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

# Bounds on what is read ahead of the disk: memory stays small whatever the layer.
MAX_PENDING_FILES = 512
MAX_PENDING_BYTES = 16 << 20
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_new_file(path: str, data: bytes, mode: int, owner: tuple[int, int] | None, mtime: float) -> None:
    """Create `path` (which must not exist) holding `data`, with its owner, mode and mtime."""
    fd = os.open(path, CREATE_FLAGS, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, stat.S_IMODE(mode))  # after chown, which clears setuid bits
        os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)


# Files handed to a thread at a time: one hand-over (a queue put, a future, its wake-up) per batch,
# not per file.
BATCH_FILES = 32
BATCH_BYTES = 1 << 20

NewFile = tuple[str, str, bytes, int, "tuple[int, int] | None", float]  # entry name, path, data, mode, owner, mtime


class _BatchError(Exception):
    """Which file of a batch failed, and how."""

    def __init__(self, name: str, error: OSError) -> None:
        super().__init__(name)
        self.name, self.error = name, error


def write_new_files(batch: list[NewFile]) -> None:
    """Create each file of `batch` in order; the first failure stops the batch and names its entry."""
    for name, path, data, mode, owner, mtime in batch:
        try:
            write_new_file(path, data, mode, owner, mtime)
        except OSError as err:
            raise _BatchError(name, err) from err


class FileWriters:
    """A small pool creating files in the background; the first error is raised by `drain()`.

    `name_error` turns an OSError of one file into the exception to raise (it knows the entry).
    """

    def __init__(self, threads: int, name_error: Callable[[str, OSError], BaseException]) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="create-files") if threads > 0 else None
        self._pending: deque[tuple[Future[None], int]] = deque()
        self._batch: list[NewFile] = []
        self._batch_bytes = 0
        self._bytes = 0
        self._name_error = name_error

    @property
    def enabled(self) -> bool:
        return self._pool is not None

    def submit(self, name: str, path: str, data: bytes, mode: int, owner: tuple[int, int] | None, mtime: float) -> None:
        assert self._pool is not None
        self._batch.append((name, path, data, mode, owner, mtime))
        self._batch_bytes += len(data)
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the files collected so far to a thread."""
        if not self._batch:
            return
        assert self._pool is not None
        while self._pending and self._full(self._batch_bytes):
            self._finish_oldest()
        self._pending.append((self._pool.submit(write_new_files, self._batch), self._batch_bytes))
        self._bytes += self._batch_bytes
        self._batch, self._batch_bytes = [], 0

    def _full(self, more_bytes: int) -> bool:
        return len(self._pending) * BATCH_FILES >= MAX_PENDING_FILES or self._bytes + more_bytes > MAX_PENDING_BYTES

    def _finish_oldest(self) -> None:
        future, size = self._pending.popleft()
        self._bytes -= size
        try:
            future.result()
        except _BatchError as err:
            raise self._name_error(err.name, err.error) from err.error

    def drain(self) -> None:
        """Wait until every file handed over exists; raise the first failure, in entry order."""
        self._hand_over()
        while self._pending:
            self._finish_oldest()

    def close(self) -> OSError | None:
        """Stop: files not started are dropped, those in flight waited for (nothing is created after
        this returns); the first of their failures, in entry order, is returned, not raised."""
        if self._pool is None:
            return None
        self._batch, self._batch_bytes = [], 0  # never handed over: never created
        for future, _ in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        first: OSError | None = None
        for future, _ in self._pending:
            error = None if future.cancelled() else future.exception()
            if isinstance(error, _BatchError):
                first = error.error
                break
        self._pending.clear()
        self._bytes = 0
        return first
