"""Progress of long work in the job log, and the markers of running jobs.

Progress lines are checked on a fake clock (content, bounded rate), then on a real download from the
loopback registry and a real extraction, with $UNPACKED_PROGRESS_SECONDS small. Running-job markers
are checked through run_job, and after a real kill -9.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from unpacked.config import client_settings
from unpacked.errors import ConfigError, UnpackedError
from unpacked.extract import extract_layer
from unpacked.jobs import Job, run_job
from unpacked.progress import PROGRESS_SECONDS_ENV, Progress, human_bytes, progress_seconds
from unpacked.reference import parse_reference
from unpacked.registry import RegistryClient
from unpacked.running import RunningJob, prune_stale, running_jobs
from unpacked.store import Store

from support import oci
from support.registry import LocalRegistry

MiB = 1 << 20
# A real line: what, bytes done of the total with a percentage, the rate, the time left.
LINE = re.compile(
    r"^(?P<what>.+): (?P<doing>[a-z, ]+) (?P<done>[\d.]+ \w+) of (?P<total>[\d.]+ \w+) \((?P<pct>\d+)%\), "
    r"[\d.]+ MiB/s, about [\d.]+ (s|min|h) left$"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def captured(caplog: pytest.LogCaptureFixture, name: str) -> Iterator[list[logging.LogRecord]]:
    """The INFO records of logger `name`, even if the package's logger does not propagate
    (workflow.show_progress, run by other tests in this process)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    logger.propagate = False  # else the root logger's copy of caplog.handler sees it twice
    caplog.handler.setLevel(logging.INFO)
    records: list[logging.LogRecord] = []
    try:
        yield records
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        logger.propagate = True
        records += [r for r in caplog.records if r.name == name]


def progress_lines(records: list[logging.LogRecord], what: str) -> list[logging.LogRecord]:
    return [r for r in records if r.getMessage().startswith(f"{what}: ") and " MiB/s" in r.getMessage()]


def assert_bounded(lines: list[logging.LogRecord], every: float, elapsed: float) -> None:
    """No more lines than one per interval allows in the time the work took. (The spacing itself is
    checked on a fake clock above: the wall-clock time a record is stamped with can lag the
    monotonic clock the progress is kept on, by more than a few milliseconds on a loaded machine.)"""
    assert len(lines) <= elapsed / every + 1, (len(lines), elapsed)


# ------------------------------------------------------------------------------------ Progress


def test_lines_come_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    logger = logging.getLogger("test.progress")
    progress = Progress("blob x", 100 * MiB, logger, doing="downloaded", every_seconds=10, clock=clock)
    with captured(caplog, "test.progress") as records:
        for _ in range(100):  # 1 MiB every 0.5 s: 50 s in all
            clock.now += 0.5
            progress.advance(MiB)
    # Due at 10, 20, 30, 40 and 50 s: one line each, however many chunks came in between.
    assert [r.getMessage() for r in records] == [
        "blob x: downloaded 20.0 MiB of 100.0 MiB (20%), 2.0 MiB/s, about 40 s left",
        "blob x: downloaded 40.0 MiB of 100.0 MiB (40%), 2.0 MiB/s, about 30 s left",
        "blob x: downloaded 60.0 MiB of 100.0 MiB (60%), 2.0 MiB/s, about 20 s left",
        "blob x: downloaded 80.0 MiB of 100.0 MiB (80%), 2.0 MiB/s, about 10 s left",
        "blob x: downloaded 100.0 MiB of 100.0 MiB (100%), 2.0 MiB/s, about 0 s left",
    ]
    assert all(r.levelno == logging.INFO for r in records)


def test_a_burst_after_a_stall_gives_one_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress("x", None, logging.getLogger("test.progress"), every_seconds=10, clock=clock)
    with captured(caplog, "test.progress") as records:
        clock.now += 35  # a stall of three intervals: the next line is due one interval after a line
        for _ in range(50):
            progress.advance(1)
        clock.now += 9
        progress.advance(1)
        clock.now += 1
        progress.advance(1)
    assert len(records) == 2


def test_work_done_before_the_first_interval_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress("blob y", 10 * MiB, logging.getLogger("test.progress"), every_seconds=10, clock=clock)
    with captured(caplog, "test.progress") as records:
        for _ in range(10):
            clock.now += 0.99
            progress.advance(MiB)
    assert records == []


def test_unknown_total_gives_bytes_and_rate_only() -> None:
    clock = FakeClock()
    progress = Progress("layer z", None, logging.getLogger("test.progress"), doing="read", clock=clock)
    clock.now += 4
    progress.advance(3 << 30)
    assert progress.line(clock.now) == "layer z: read 3.0 GiB, 768.0 MiB/s"


def test_a_restart_counts_from_its_bytes_and_time() -> None:
    clock = FakeClock()
    progress = Progress("b", 10 * MiB, logging.getLogger("test.progress"), doing="downloaded", clock=clock)
    clock.now += 100
    progress.advance(9 * MiB)
    progress.restart()  # the registry ignored Range: the download starts again from byte 0
    clock.now += 2
    progress.advance(4 * MiB)
    assert progress.line(clock.now) == "b: downloaded 4.0 MiB of 10.0 MiB (40%), 2.0 MiB/s, about 3 s left"


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536 * MiB, "1.5 GiB"),
        (3 << 40, "3.0 TiB"),
        (5 << 50, "5.0 PiB"),
    ],
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


@pytest.mark.parametrize(("value", "seconds"), [(None, 10.0), ("", 10.0), ("0.25", 0.25), (" 30 ", 30.0), ("0", 0.0)])
def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str | None, seconds: float) -> None:
    if value is None:
        monkeypatch.delenv(PROGRESS_SECONDS_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_SECONDS_ENV, value)
    assert progress_seconds() == seconds


@pytest.mark.parametrize("value", ["-1", "ten", "nan", "inf"])
def test_a_bad_interval_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, value)
    with pytest.raises(ConfigError, match=PROGRESS_SECONDS_ENV):
        progress_seconds()


# ---------------------------------------------------------------------- real download and extraction

EVERY = 0.005  # seconds between lines in the real cases: several lines for a few MiB on any machine


def random_bytes(size: int, seed: str) -> bytes:
    """Incompressible bytes: the compressed blob is as large as the layer."""
    return random.Random(seed).randbytes(size)


def pushed_blob(registry: LocalRegistry, repo_name: str, data: bytes) -> tuple[str, RegistryClient]:
    """`data` pushed as a blob, and a client of the registry to download it."""
    digest = oci.push_blob(oci.Client(registry), repo_name, data)
    ref = parse_reference(f"{registry.host}/{repo_name}:latest")
    config = {"registries": {registry.host: {"insecure": True, "retries": 0}}}
    return digest, RegistryClient(ref, client_settings(config, registry.host))


def test_a_real_download_logs_bounded_progress(
    registry: LocalRegistry,
    repo_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = random_bytes(24 * MiB, repo_name)
    digest, client = pushed_blob(registry, repo_name, data)
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, str(EVERY))
    dest = tmp_path / "blob"
    with captured(caplog, "unpacked.registry") as records:
        started = time.monotonic()
        client.download_blob(repo_name, digest, dest, len(data))
        elapsed = time.monotonic() - started
    assert dest.read_bytes() == data
    what = f"registry {registry.host}: blob {digest} of {repo_name}"
    lines = progress_lines(records, what)
    assert lines, [r.getMessage() for r in records]
    assert_bounded(lines, EVERY, elapsed)
    matches = [LINE.match(r.getMessage()) for r in lines]
    assert all(m is not None for m in matches), [r.getMessage() for r in lines]
    percents = [int(m["pct"]) for m in matches if m is not None]
    assert percents == sorted(percents) and percents[-1] <= 100
    assert {(m["doing"], m["total"]) for m in matches if m is not None} == {("downloaded", "24.0 MiB")}


def test_a_quick_download_logs_no_progress(
    registry: LocalRegistry,
    repo_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = random_bytes(4 * MiB, repo_name)
    digest, client = pushed_blob(registry, repo_name, data)
    monkeypatch.delenv(PROGRESS_SECONDS_ENV, raising=False)  # 10 s: far more than 4 MiB on loopback take
    with captured(caplog, "unpacked.registry") as records:
        client.download_blob(repo_name, digest, tmp_path / "blob", len(data))
    assert not [r for r in records if " MiB/s" in r.getMessage()]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_a_real_extraction_logs_bounded_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, compression: oci.Compression
) -> None:
    layer = oci.TarLayer()
    files = {f"data/part{i}": random_bytes(4 * MiB, f"{compression}{i}") for i in range(6)}
    for path, content in files.items():
        layer.add_file(path, content)
    blob = oci.LayerBlob.from_tar(layer.tar_bytes(), compression)
    (tmp_path / "blob").write_bytes(blob.data)
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, str(EVERY))
    with captured(caplog, "unpacked.extract") as records:
        started = time.monotonic()
        extract_layer(tmp_path / "blob", blob.diff_id, tmp_path / "layer", f"layer {blob.digest}")
        elapsed = time.monotonic() - started
    for path, content in files.items():  # counting the reads changed nothing of what they read
        assert (tmp_path / "layer" / "rootfs" / path).read_bytes() == content
    lines = progress_lines(records, f"layer {blob.digest}")
    assert lines, [r.getMessage() for r in records]
    assert_bounded(lines, EVERY, elapsed)
    matches = [LINE.match(r.getMessage()) for r in lines]
    assert all(m is not None for m in matches), [r.getMessage() for r in lines]
    total = human_bytes(len(blob.data))  # the compressed bytes read, of the blob's size
    assert {(m["doing"], m["total"]) for m in matches if m is not None} == {("extracting, read", total)}
    assert all(int(m["pct"]) <= 100 for m in matches if m is not None)


# ---------------------------------------------------------------------------------- running jobs


def store_in(tmp_path: Path) -> Store:
    return Store(tmp_path / "work", tmp_path / "root")


def settings_for(tmp_path: Path) -> dict[str, str]:
    return {"recipe": str(tmp_path / "recipe.yaml"), "work_dir": str(tmp_path / "work")}


def test_a_running_job_is_seen_and_gone_when_it_ends(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    job = Job("fetch-blob", "sha256:" + "a" * 64, "example.org/app:1", [], [])
    seen: list[list[RunningJob]] = []
    before = datetime.now(UTC).replace(microsecond=0)
    assert run_job(settings_for(tmp_path), store, job, [("fetch-blob", lambda: seen.append(running_jobs(store)))]) == 0
    [[running]] = seen
    assert (running.action, running.key, running.image) == ("fetch-blob", job.key, "example.org/app:1")
    assert (running.pid, running.host, running.stale) == (os.getpid(), socket.gethostname(), False)
    assert before <= running.started <= datetime.now(UTC)
    assert running.marker.parent == store.running_dir
    assert not running.marker.exists()
    assert running_jobs(store) == [] and store.running_markers() == []


def test_each_step_of_a_job_sees_its_one_marker(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    job = Job("publish", "example.org/app:1", "example.org/app:1", [], [])
    seen: list[list[RunningJob]] = []
    steps = [
        ("flatten", lambda: seen.append(running_jobs(store))),
        ("publish", lambda: seen.append(running_jobs(store))),
    ]
    assert run_job(settings_for(tmp_path), store, job, steps) == 0
    assert [[(j.action, j.key) for j in jobs] for jobs in seen] == [[("publish", job.key)]] * 2
    assert running_jobs(store) == []


@pytest.mark.parametrize("error", [UnpackedError("the registry said no"), RuntimeError("a bug"), KeyboardInterrupt()])
def test_a_failing_job_leaves_no_marker(tmp_path: Path, error: BaseException) -> None:
    store = store_in(tmp_path)
    job = Job("extract-layer", "sha256:" + "b" * 64, None, [], [])
    seen: list[list[RunningJob]] = []

    def fail() -> None:
        seen.append(running_jobs(store))
        raise error

    if isinstance(error, Exception):
        assert run_job(settings_for(tmp_path), store, job, [("extract-layer", fail)]) == 1
    else:  # not a job failure: it goes through, and the marker still goes
        with pytest.raises(type(error)):
            run_job(settings_for(tmp_path), store, job, [("extract-layer", fail)])
    assert [[(j.action, j.image) for j in jobs] for jobs in seen] == [[("extract-layer", None)]]
    assert running_jobs(store) == [] and store.running_markers() == []


def test_a_marker_that_cannot_be_written_does_not_fail_the_job(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.work.mkdir()
    store.running_dir.write_text("a file where the directory should be\n")
    ran: list[bool] = []
    job = Job("fetch-blob", "sha256:" + "c" * 64, None, [], [])
    assert run_job(settings_for(tmp_path), store, job, [("fetch-blob", lambda: ran.append(True))]) == 0
    assert ran == [True]


def write_marker(store: Store, name: str, pid: int, host: str, started: datetime) -> Path:
    document = {
        "action": "fetch-blob",
        "key": name,
        "image": None,
        "pid": pid,
        "host": host,
        "started": started.isoformat(),
    }
    path = store.running_marker(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(process.stdout)


def test_a_marker_of_a_dead_process_on_this_host_is_stale(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    write_marker(store, "dead", dead_pid(), socket.gethostname(), now - timedelta(minutes=3))
    write_marker(store, "alive", os.getpid(), socket.gethostname(), now - timedelta(minutes=2))
    write_marker(store, "elsewhere", dead_pid(), "some-other-node.example.org", now - timedelta(minutes=1))
    (store.running_dir / "garbage.json").write_text("{not json")
    jobs = running_jobs(store)
    assert [(j.key, j.stale) for j in jobs] == [("dead", True), ("alive", False), ("elsewhere", False)]  # oldest first
    assert [j.key for j in prune_stale(store)] == ["dead"]
    assert [j.key for j in running_jobs(store)] == ["alive", "elsewhere"]


def test_a_job_killed_with_sigkill_leaves_a_stale_marker(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from unpacked.jobs import Job, run_job\n"
        "from unpacked.store import Store\n"
        "store = Store(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "job = Job('publish', 'example.org/app:1', 'example.org/app:1', [], [])\n"
        "run_job({}, store, job, [('publish', lambda: time.sleep(60))])\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(store.work), str(store.root)])
    try:
        deadline = time.monotonic() + 30
        while not store.running_markers() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        [running] = running_jobs(store)
        assert (running.pid, running.key, running.stale) == (process.pid, "example.org/app:1", False)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    [killed] = running_jobs(store)
    assert (killed.pid, killed.stale) == (process.pid, True)
    assert prune_stale(store) == [killed] and running_jobs(store) == []
