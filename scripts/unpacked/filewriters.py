"""Create small regular files of a layer on a few threads, while the tar stream is read on.

Creating an inode is the dearest step of extraction: on an ext4 disk of a VM it measured about
140 µs of kernel time per `open(O_CREAT)`, more than parsing the tar header and writing the data
together. The system calls release the GIL, so a couple of threads creating files side by side
overlap with each other and with tar parsing (bench/unpack.py). The caller keeps the ordering
rules: it hands over only files that no later entry can depend on before `drain()` is called.
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


class FileWriters:
    """A small pool creating files in the background; the first error is raised by `drain()`.

    `name_error` turns an OSError of one file into the exception to raise (it knows the entry).
    """

    def __init__(self, threads: int, name_error: Callable[[str, OSError], BaseException]) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="create-files") if threads > 0 else None
        self._pending: deque[tuple[Future[None], str, int]] = deque()
        self._bytes = 0
        self._name_error = name_error

    @property
    def enabled(self) -> bool:
        return self._pool is not None

    def submit(self, name: str, path: str, data: bytes, mode: int, owner: tuple[int, int] | None, mtime: float) -> None:
        assert self._pool is not None
        while self._pending and self._full(len(data)):
            self._finish_oldest()
        future = self._pool.submit(write_new_file, path, data, mode, owner, mtime)
        self._pending.append((future, name, len(data)))
        self._bytes += len(data)

    def _full(self, more_bytes: int) -> bool:
        return len(self._pending) >= MAX_PENDING_FILES or self._bytes + more_bytes > MAX_PENDING_BYTES

    def _finish_oldest(self) -> None:
        future, name, size = self._pending.popleft()
        self._bytes -= size
        try:
            future.result()
        except OSError as err:
            raise self._name_error(name, err) from err

    def drain(self) -> None:
        """Wait until every file handed over exists; raise the first failure, in entry order."""
        while self._pending:
            self._finish_oldest()

    def close(self) -> OSError | None:
        """Stop: files not started are dropped, those in flight waited for (nothing is created after
        this returns); the first of their failures, in entry order, is returned, not raised."""
        if self._pool is None:
            return None
        for future, _, _ in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        first: OSError | None = None
        for future, _, _ in self._pending:
            error = None if future.cancelled() else future.exception()
            if isinstance(error, OSError):
                first = error
                break
        self._pending.clear()
        self._bytes = 0
        return first
