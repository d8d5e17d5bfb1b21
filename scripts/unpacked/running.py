"""Which jobs are running now: a job keeps a marker in `<work>/running/` while it runs (jobs.py).

    running_jobs(store)    every marker, oldest first, each with whether it is stale
    prune_stale(store)     remove the stale markers

A job killed with SIGKILL leaves its marker behind: a marker of this host whose process is gone is
`stale`. Markers of other hosts (cluster jobs sharing the work directory) are never judged stale: their
processes cannot be seen from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .fsutil import json_bytes
from .safefs import write_atomic
from .store import Store

log = logging.getLogger(__name__)
# What of a host name may stand in a file name.
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RunningJob:
    action: str  # the job's command: fetch-blob, extract-layer, publish
    key: str  # what it is for: a digest or a published name
    image: str | None  # the image it is for, when the job knows it
    pid: int
    host: str
    started: datetime  # UTC
    stale: bool  # on this host, and its process is gone (killed without a chance to clean up)
    marker: Path


@contextlib.contextmanager
def marked_running(store: Store, action: str, key: str, image: str | None) -> Iterator[None]:
    """Keep a marker of this job in `<work>/running/` for as long as the block runs."""
    marker = _write_marker(store, action, key, image)
    try:
        yield
    finally:
        if marker is not None:
            try:
                marker.unlink(missing_ok=True)
            except OSError as err:  # the job's own outcome matters more than its marker
                log.warning("could not remove the running-job marker %s: %s", marker, err.strerror or err)


def _write_marker(store: Store, action: str, key: str, image: str | None) -> Path | None:
    """Write the marker (atomically: a reader sees all of it or nothing); None if it could not be."""
    host, pid = socket.gethostname(), os.getpid()
    # Unique across the hosts sharing the work directory, and across jobs run by one process (tests).
    marker = store.running_marker(f"{action}-{_UNSAFE_IN_NAME.sub('_', host)}-{pid}-{secrets.token_hex(4)}")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    document = {"action": action, "key": key, "image": image, "pid": pid, "host": host, "started": started}
    try:
        write_atomic(marker, json_bytes(document))
    except Exception as err:  # a marker is for operators to look at: never a reason for the job to fail
        log.warning("could not write the running-job marker %s: %s", marker, err)
        return None
    return marker


def running_jobs(store: Store) -> list[RunningJob]:
    """The jobs whose markers are in `<work>/running/`, oldest first."""
    found = [job for job in map(_read_marker, store.running_markers()) if job is not None]
    return sorted(found, key=lambda job: (job.started, job.marker.name))


def prune_stale(store: Store) -> list[RunningJob]:
    """Remove the markers of jobs that died on this host without removing them; the jobs removed."""
    stale = [job for job in running_jobs(store) if job.stale]
    for job in stale:
        job.marker.unlink(missing_ok=True)
    return stale


def _read_marker(marker: Path) -> RunningJob | None:
    try:
        document = json.loads(marker.read_bytes())
        host, pid = str(document["host"]), int(document["pid"])
        image = document.get("image")
        started = datetime.fromisoformat(document["started"]).astimezone(UTC)
        return RunningJob(
            action=str(document["action"]),
            key=str(document["key"]),
            image=None if image is None else str(image),
            pid=pid,
            host=host,
            started=started,
            stale=host == socket.gethostname() and not _process_exists(pid),
            marker=marker,
        )
    except FileNotFoundError:  # the job ended between the listing and the read
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s: not a running-job marker (%s); ignored", marker, err)
        return None


def _process_exists(pid: int) -> bool:
    if pid <= 0:  # 0 and negative numbers name process groups, never one job
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
