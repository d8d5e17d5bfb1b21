"""A full disk at each stage: the error names the path being written and says what to do.

Each stage's destination is made a full filesystem for real: a one-page tmpfs, already filled,
mounted over it in a private mount namespace (nothing changes outside the namespace). The stage's
own command (what the workflow's job runs) then fails with ENOSPC, which Python reports without any
file name; the message must still say where, and nothing partial may be left under a final name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import oci
from support.registry import LocalRegistry
from support.workflow import REPO, SNAKEMAKE, run_workflow, workflow_env, write_config

pytestmark = pytest.mark.workflow
FULL = "No space left on device"
ADVICE = "the filesystem is full: free space"


def full_filesystem_at(directory: Path, command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `command` with a full filesystem mounted at `directory` (which must exist)."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare not found: apt-get install -y util-linux"
    assert os.geteuid() == 0, "mounting a small filesystem needs root: run the test suite as root"
    script = 'mount -t tmpfs -o size=4k tmpfs "$1" && head -c 4096 /dev/zero > "$1/.filler" && shift && exec "$@"'
    namespace = [unshare, "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", str(directory)]
    return subprocess.run(
        [*namespace, *command], cwd=cwd, capture_output=True, text=True, timeout=300, env=workflow_env(), check=False
    )


class Synced:
    """A workflow directory that synced one image of two layers, one of them 256 KiB of noise."""

    def __init__(self, directory: Path, registry: LocalRegistry, repo: str) -> None:
        noise = os.urandom(256 << 10)
        self.image = oci.build_image(
            [
                oci.TarLayer().add_dir("etc").add_file("etc/id", b"id\n").tar_bytes(),
                oci.TarLayer().add_dir("data").add_file("data/noise", noise).tar_bytes(),
            ]
        )
        oci.push(registry, repo, "1", self.image)
        self.directory = directory
        self.name = f"{registry.host}/{repo}:1"
        write_config(directory, [f"http://{self.name}"], {registry.host: {"insecure": True}})
        done = run_workflow(directory)
        assert done.returncode == 0, done.stdout + done.stderr
        self.settings = directory / "work/state/settings.json"
        self.layer = self.image.layers[1].digest
        self.hex = self.layer.split(":")[1]
        self.config_hex = self.image.config_digest.split(":")[1]

    def job(self, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "unpacked.cli", args[0], "--settings", str(self.settings), *args[1:]]
        return full_filesystem_at(directory, command, self.directory)


@pytest.fixture
def synced(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> Synced:
    return Synced(tmp_path / "run", registry, repo_name)


def assert_named(done: subprocess.CompletedProcess[str], path: Path) -> None:
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert f"cannot write {path}" in line and FULL in line and ADVICE in line, done.stderr


def test_fetch_names_the_blob(synced: Synced) -> None:
    blob = synced.directory / "work/blobs/sha256" / synced.hex
    blob.unlink()
    done = synced.job(blob.parent, "fetch-blob", "--image", synced.name, "--digest", synced.layer)
    assert_named(done, Path("work/blobs/sha256") / synced.hex)
    assert not blob.exists()


def test_extract_names_the_layer(synced: Synced) -> None:
    layer = synced.directory / "work/layers" / synced.hex[:2] / synced.hex
    shutil.rmtree(layer)
    diff_id = synced.image.layers[1].diff_id
    done = synced.job(layer.parent, "extract-layer", "--digest", synced.layer, "--diff-id", diff_id)
    assert_named(done, Path("work/layers") / synced.hex[:2] / synced.hex)
    assert "LayerError" not in done.stderr and "refused" not in done.stderr, "a full disk is not the layer's fault"
    assert not layer.exists()


def test_flatten_names_the_flat_image(synced: Synced) -> None:
    flat = synced.directory / "output/.flat" / synced.config_hex[:2] / synced.config_hex
    shutil.rmtree(flat)
    done = synced.job(flat.parent, "flatten", "--image", synced.name)
    assert_named(done, Path("output/.flat") / synced.config_hex[:2] / synced.config_hex)
    assert not flat.exists()


def test_publish_names_the_metadata(synced: Synced) -> None:
    meta = synced.directory / "output/.metadata"
    link = synced.directory / "output" / synced.name
    link.unlink()
    os.symlink("../../../elsewhere", link)  # so that a publish that went on would change it
    shutil.rmtree(meta)
    meta.mkdir()
    marker = synced.directory / "work/published" / f"{synced.name}.json"
    marker.unlink()
    done = synced.job(meta, "publish", "--flat", synced.image.config_digest)
    assert done.returncode == 1, done.stderr
    assert "cannot write output/.metadata/" in done.stderr and FULL in done.stderr and ADVICE in done.stderr
    assert os.readlink(link) == "../../../elsewhere", "metadata first: the link is not touched"
    assert not marker.exists()


def test_resolution_names_the_state_file(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, repo_name, "1", oci.build_image([oci.TarLayer().add_file("id", b"1\n").tar_bytes()]))
    run = tmp_path / "run"
    write_config(run, [f"http://{registry.host}/{repo_name}:1"], {registry.host: {"insecure": True}})
    images = run / "work/state/images"
    images.mkdir(parents=True)
    snakemake = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--workflow-profile"]
    done = full_filesystem_at(images, [*snakemake, str(REPO / "profiles/default"), "--cores", "1"], run)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert f"cannot write work/state/images/{registry.host}/{repo_name}:1.json" in output, output
    assert FULL in output and ADVICE in output
