"""`unpacked gc` killed with SIGKILL in the middle of a removal never leaves a half-removed product
under its name: when the image comes back, what is published is whole.

The removal of a big flat image (or extracted layer) is interrupted for real: the test watches the
tree and sends SIGKILL as soon as the removal has visibly started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support import oci
from support.registry import LocalRegistry
from support.workflow import run_workflow, write_config

pytestmark = pytest.mark.workflow
FILES = 30000


def big_image(text: str) -> oci.Image:
    layer = oci.TarLayer().add_dir("etc").add_file("etc/id", text.encode()).add_dir("files")
    for number in range(FILES):
        layer.add_file(f"files/{number}", b"")
    return oci.build_image([layer.tar_bytes()])


def small_image(text: str) -> oci.Image:
    return oci.build_image([oci.TarLayer().add_dir("etc").add_file("etc/id", text.encode()).tar_bytes()])


def count(directory: Path) -> int:
    try:
        return len(os.listdir(directory))
    except FileNotFoundError:
        return -1


def kill_gc_when(run: Path, started: Callable[[], bool]) -> None:
    """Run `unpacked gc --grace-days 0` and SIGKILL it as soon as `started()` is true."""
    command = [
        sys.executable,
        "-m",
        "unpacked.cli",
        "gc",
        "--grace-days",
        "0",
        "--settings",
        "work/state/settings.json",
    ]
    gc = subprocess.Popen(command, cwd=run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not started():
            assert gc.poll() is None, "gc finished before the removal could be interrupted"
            assert time.monotonic() < deadline, "the removal never started"
            time.sleep(0.002)
        gc.send_signal(signal.SIGKILL)
    finally:
        gc.wait(timeout=30)


def sync(run: Path) -> None:
    done = run_workflow(run)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def moved(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> tuple[Path, Path, oci.Image]:
    """A tag that pointed to a big image and now points to a small one: the big one is garbage."""
    run = tmp_path / "run"
    big = big_image("big\n")
    oci.push(registry, repo_name, "1", big)
    write_config(run, [f"http://{registry.host}/{repo_name}:1"], {registry.host: {"insecure": True}})
    sync(run)
    link = run / "output" / registry.host / f"{repo_name}:1"
    assert count(link / "files") == FILES
    oci.push(registry, repo_name, "1", small_image("small\n"))
    sync(run)
    return run, link, big


def assert_in_trash(run: Path) -> None:
    """The removal was interrupted in the trash, where the next collection finishes it."""
    assert max(count(run / "work/trash"), count(run / "output/.trash")) > 0, "the kill came too late"


def assert_whole_when_back(run: Path, link: Path, big: oci.Image, registry: LocalRegistry, repo: str) -> None:
    oci.push(registry, repo, "1", big)
    sync(run)
    assert (link / "etc/id").read_text() == "big\n"
    assert count(link / "files") == FILES, "the image that came back must be whole"
    again = subprocess.run(
        [sys.executable, "-m", "unpacked.cli", "gc", "--grace-days", "0", "--settings", "work/state/settings.json"],
        cwd=run,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    for trash in (run / "work/trash", run / "output/.trash"):
        assert count(trash) <= 0, f"{trash} still holds what the killed collection was removing"


def test_gc_killed_while_removing_a_flat_image(
    moved: tuple[Path, Path, oci.Image], registry: LocalRegistry, repo_name: str
) -> None:
    run, link, big = moved
    flat = run / "output/.flat" / big.config_digest.split(":")[1][:2] / big.config_digest.split(":")[1]
    marker = run / "work/flats" / f"{flat.name}.json"
    assert flat.is_dir() and marker.exists()
    kill_gc_when(run, lambda: count(flat / "files") < FILES)
    # Whole under its name, or not under its name at all; never marked as built while partial.
    assert count(flat / "files") in (FILES, -1), "a half-removed flat image is left under its final name"
    assert not marker.exists() or count(flat / "files") == FILES
    assert_in_trash(run)
    assert_whole_when_back(run, link, big, registry, repo_name)


def test_gc_killed_while_removing_an_extracted_layer(
    moved: tuple[Path, Path, oci.Image], registry: LocalRegistry, repo_name: str
) -> None:
    run, link, big = moved
    hexd = big.layers[0].digest.split(":")[1]
    layer = run / "work/layers" / hexd[:2] / hexd
    assert (layer / "layer.json").exists() and count(layer / "rootfs/files") == FILES
    kill_gc_when(run, lambda: count(layer / "rootfs/files") < FILES)
    assert count(layer / "rootfs/files") in (FILES, -1), "a half-removed layer is left under its final name"
    assert not (layer / "layer.json").exists() or count(layer / "rootfs/files") == FILES
    assert_in_trash(run)
    assert_whole_when_back(run, link, big, registry, repo_name)
