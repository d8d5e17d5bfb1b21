"""`unpacked watch`: the sync again and again, as a service, with real Snakemake runs and signals.

A failing run does not stop it and makes it back off; a good run brings the interval back; a tag
moved upstream reaches the tree at the next run; SIGTERM stops it at once between runs, and after
the run it interrupts, never in the middle.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time

import pytest

from unpacked.watch import WatchSettings, next_wait

from support import oci
from support.registry import LocalRegistry
from support.workflow import REPO, SNAKEMAKE, Workdir, good_image, snakemake_command, workflow_env


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 10.0), (1, 20.0), (2, 40.0), (3, 60.0), (40, 60.0)],
)
def test_waits_double_after_each_failed_run_up_to_the_cap(failures: int, expected: float) -> None:
    settings = WatchSettings(interval=10, jitter=0, max_backoff=60)
    assert next_wait(settings, failures, random.Random(1)) == expected


def test_jitter_spreads_the_wait_either_way_within_its_fraction() -> None:
    settings = WatchSettings(interval=100, jitter=0.2, max_backoff=1000)
    waits = [next_wait(settings, 0, random.Random(seed)) for seed in range(200)]
    assert 80 <= min(waits) < 90 and 110 < max(waits) <= 120


def test_refuses_nonsense_settings() -> None:
    command = [str(SNAKEMAKE.with_name("unpacked")), "watch", "--interval", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "--interval must be positive" in done.stderr


class Watch:
    """`unpacked watch` started in a workflow directory; its whole output goes to a file."""

    def __init__(self, workdir: Workdir, *options: str) -> None:
        self.log = workdir.directory / "watch.log"
        # The sync command a user gives it: Snakemake with the repository's Snakefile and profile.
        sync = snakemake_command(workdir.directory)
        command = [str(SNAKEMAKE.with_name("unpacked")), "watch", *options, "--", *sync]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=REPO, env=workflow_env(), stdout=out, stderr=out)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text())
            if found:
                return found
            assert self.process.poll() is None, f"watch exited ({self.process.returncode}):\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.text()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()


@pytest.mark.workflow
def test_watch_survives_failures_backs_off_and_picks_up_changes(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    good, missing = (f"http://{registry.host}/{repo_name}/{name}" for name in ("good:1", "missing:1"))
    oci.push(registry, f"{repo_name}/good", "1", good_image("first\n"))
    workdir.configure([good, missing])
    watch = Watch(workdir, "--interval", "1", "--jitter", "0", "--max-backoff", "4")
    try:
        watch.wait_for(r"run 1 failed \(exit status 1\)")
        watch.wait_for(r"next run in 2\.0 s \(1 failed run\(s\) in a row")
        watch.wait_for(r"next run in 4\.0 s \(2 failed run\(s\) in a row")
        published = workdir.root / registry.host / repo_name / "good:1"
        assert (published / "etc/id").read_text() == "first\n", "the good image is published by the failing runs"

        workdir.configure([good])  # the operator fixes the recipe: the next run succeeds, no more backoff
        succeeded = int(watch.wait_for(r"run (\d+) succeeded").group(1))
        watch.wait_for(rf"run {succeeded} succeeded in [\d.]+ s\n.*next run in 1\.0 s\n")

        oci.push(registry, f"{repo_name}/good", "1", good_image("moved upstream\n"))
        deadline = time.monotonic() + 60
        while (published / "etc/id").read_text() != "moved upstream\n":
            assert time.monotonic() < deadline, watch.text()[-3000:]
            time.sleep(0.2)
    finally:
        watch.stop()


def watch_one_image(workdir: Workdir, registry: LocalRegistry, repo_name: str, text: str) -> Watch:
    """A recipe of one image holding `text`, watched with a 600 s interval."""
    oci.push(registry, f"{repo_name}/image", "1", good_image(text))
    workdir.configure([f"http://{registry.host}/{repo_name}/image:1"])
    return Watch(workdir, "--interval", "600")


@pytest.mark.workflow
def test_sigterm_between_runs_stops_at_once(workdir: Workdir, registry: LocalRegistry, repo_name: str) -> None:
    watch = watch_one_image(workdir, registry, repo_name, "idle\n")
    try:
        watch.wait_for(r"next run in")
        started = time.monotonic()
        watch.process.send_signal(signal.SIGTERM)
        assert watch.process.wait(timeout=30) == 0, "the last run's status"
        assert time.monotonic() - started < 5, "not after the 600 s interval"
    finally:
        watch.stop()
    assert "SIGTERM received: stopping\n" in watch.text()


@pytest.mark.workflow
def test_sigterm_during_a_run_lets_the_run_finish(workdir: Workdir, registry: LocalRegistry, repo_name: str) -> None:
    watch = watch_one_image(workdir, registry, repo_name, "whole\n")
    try:
        watch.wait_for(r"unpacked: resolved")  # Snakemake's own output: the run is under way
        watch.process.send_signal(signal.SIGTERM)
        assert watch.process.wait(timeout=300) == 0, watch.text()[-3000:]
    finally:
        watch.stop()
    text = watch.text()
    assert "SIGTERM received: stopping after the current run" in text
    assert re.search(r"run 1 succeeded in [\d.]+ s\n(.*\n)?.*stopped after 1 run\(s\)", text), text[-3000:]
    assert (workdir.root / registry.host / repo_name / "image:1" / "etc/id").read_text() == "whole\n"
