"""Progress of long work (a blob download, a layer extraction) in the job's log, at a bounded rate.

    progress = Progress("layer sha256:ab..", total=blob_size, logger=log, doing="extracting, read")
    progress.advance(len(chunk))    # per chunk: one clock read and a compare, no formatting

logs, at most once per $UNPACKED_PROGRESS_SECONDS (default 10 s) and never for work done sooner:

    layer sha256:ab..: extracting, read 1.2 GiB of 3.4 GiB (35%), 48.3 MiB/s, about 47 s left
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

PROGRESS_SECONDS_ENV = "UNPACKED_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 10.0
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def progress_seconds() -> float:
    """The interval between progress lines: $UNPACKED_PROGRESS_SECONDS, else 10 s."""
    text = os.environ.get(PROGRESS_SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_PROGRESS_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{PROGRESS_SECONDS_ENV}={text!r}: expected a number of seconds (0 or more)")
    return value


def human_bytes(count: float) -> str:
    """`512 B`, `1.2 GiB`: binary units, one decimal."""
    for unit in _UNITS[:-1]:
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} {_UNITS[-1]}"


def human_duration(seconds: float) -> str:
    """`47 s`, `12 min`, `1.5 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts the bytes of one piece of work and logs how far it is, at most once per interval."""

    def __init__(
        self,
        what: str,
        total: int | None,
        logger: logging.Logger,
        *,
        doing: str = "done",
        every_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`what` names the work in the line (as the caller's errors do); `total` is its size in bytes
        (None: unknown, no percentage nor ETA); `every_seconds` defaults to progress_seconds()."""
        self.what = what
        self.total = total if total is not None and total > 0 else None
        self.logger = logger
        self.doing = doing
        self.every = progress_seconds() if every_seconds is None else every_seconds
        self.clock = clock
        self.done = 0
        self._done_at_start = 0  # the rate counts the bytes since the start (or the last restart)
        self.started = clock()
        self._next_line = self.started + self.every

    def advance(self, nbytes: int) -> None:
        """`nbytes` more are done. The hot path: nothing is formatted unless a line is due."""
        self.done += nbytes
        now = self.clock()
        if now < self._next_line:
            return
        self._next_line = now + self.every
        self.logger.info("%s", self.line(now))

    def restart(self, done: int = 0) -> None:
        """The work went back to `done` bytes (a download starting again, a stream rewound): the rate
        is measured from here on. The next line stays where it was due, so the rate stays bounded."""
        self.done = done
        self.started = self.clock()
        self._done_at_start = done

    def line(self, now: float) -> str:
        """What an operator reads: bytes done (of the total), rate, and the time left when known."""
        elapsed = now - self.started
        rate = (self.done - self._done_at_start) / elapsed if elapsed > 0 else 0.0
        text = f"{self.what}: {self.doing} {human_bytes(self.done)}"
        if self.total is not None:
            text += f" of {human_bytes(self.total)} ({100 * self.done // self.total}%)"
        text += f", {rate / (1 << 20):.1f} MiB/s"
        if self.total is not None and rate > 0:
            text += f", about {human_duration(max(self.total - self.done, 0) / rate)} left"
        return text


class ProgressReader(io.RawIOBase):
    """A binary file whose reads advance a Progress (e.g. the compressed bytes an extraction consumed)."""

    def __init__(self, raw: io.BufferedIOBase, progress: Progress) -> None:
        self._raw = raw
        self._progress = progress

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def read(self, size: int | None = -1) -> bytes:
        # Straight to the file: RawIOBase.read would go through readinto and copy the bytes once more.
        data = self._raw.read(-1 if size is None else size)
        self._progress.advance(len(data))
        return data

    def readinto(self, buffer: WriteableBuffer) -> int:
        count = self._raw.readinto(buffer)
        self._progress.advance(count)
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self._raw.seek(offset, whence)
        self._progress.restart(position)  # a rewind (reading the magic bytes) is not progress
        return position

    def tell(self) -> int:
        return self._raw.tell()
