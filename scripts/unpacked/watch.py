"""`unpacked watch`: run the sync again and again, as a service would, one run at a time.

Each run is the command an operator types (`snakemake --cores N ...`), in the same directory, as a
child process: a run that fails, or crashes, is logged and the next one comes anyway. Between runs it
sleeps the interval, give or take a random jitter (many watchers never hit a registry in step); after
failed runs it waits longer, doubling up to a limit, so a registry that is down or rate-limiting is
not hammered; the first good run brings the interval back. SIGTERM or SIGINT stop it cleanly: while
it sleeps, at once; during a run, once that run has finished (the tree is never left mid-run by it).
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger(__name__)
STOP_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class WatchSettings:
    interval: float  # seconds between the end of one run and the start of the next
    jitter: float  # fraction of the interval, either way
    max_backoff: float  # longest wait after failed runs
    runs: int = 0  # stop after this many runs (0: never)


def next_wait(settings: WatchSettings, failures_in_a_row: int, rng: random.Random) -> float:
    """Seconds to sleep before the next run: the interval, doubled per failure up to the cap, jittered."""
    base: float = settings.interval * 2.0 ** min(failures_in_a_row, 30)
    base = min(base, max(settings.max_backoff, settings.interval))
    spread = base * settings.jitter
    return max(0.0, base + rng.uniform(-spread, spread))


class Watcher:
    def __init__(self, command: Sequence[str], settings: WatchSettings, rng: random.Random | None = None) -> None:
        self.command = list(command)
        self.settings = settings
        self.rng = rng or random.Random()
        # A plain flag: a signal handler must not take a lock the interrupted code may hold.
        self._stop = False
        self._running: subprocess.Popen[bytes] | None = None

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        name = signal.Signals(signum).name
        if self._running is not None and self._running.poll() is None:
            log.info("watch: %s received: stopping after the current run", name)
        else:
            log.info("watch: %s received: stopping", name)
        self._stop = True

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking within a fraction of a second of a stop request."""
        deadline = time.monotonic() + seconds
        while not self._stop and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, STOP_POLL_SECONDS))

    def run_once(self, number: int) -> int | None:
        """Run the sync once: its exit status, or None if a stop came before it started."""
        if self._stop:
            return None
        started = time.monotonic()
        log.info("watch: run %d: %s", number, " ".join(self.command))
        try:
            # Its own process group: a terminal's Ctrl-C reaches the watcher only, which lets the run finish.
            self._running = subprocess.Popen(self.command, start_new_session=True)
            code = self._running.wait()
            if code < 0:  # killed by a signal: the shell's convention, 128 + its number
                code = 128 - code
        except OSError as err:
            log.error("watch: run %d could not start: %s", number, err)
            code = 127
        finally:
            self._running = None
        elapsed = time.monotonic() - started
        if code == 0:
            log.info("watch: run %d succeeded in %.1f s", number, elapsed)
        else:
            log.warning(
                "watch: run %d failed (exit status %d) after %.1f s (its output is above)", number, code, elapsed
            )
        return code

    def loop(self) -> int:
        """Run until stopped (or `runs` runs); the exit status of the last run."""
        failures = 0
        number = 0
        code = 0
        while not self._stop:
            result = self.run_once(number + 1)
            if result is None:
                break
            number, code = number + 1, result
            failures = 0 if code == 0 else failures + 1
            if self._stop or (self.settings.runs and number >= self.settings.runs):
                break
            wait = next_wait(self.settings, failures, self.rng)
            why = f" ({failures} failed run(s) in a row: backing off)" if failures else ""
            log.info("watch: next run in %.1f s%s", wait, why)
            self._sleep(wait)
        log.info("watch: stopped after %d run(s)", number)
        return code


def watch(command: Sequence[str], settings: WatchSettings) -> int:
    watcher = Watcher(command, settings)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, watcher.request_stop)
    return watcher.loop()
