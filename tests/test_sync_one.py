"""`unpacked sync-one REF`: sync one tag of the recipe, leave every other image as it is.

What the push webhook runs. Against a real registry: two images both move upstream; syncing one
rebuilds that one only (the other keeps its old version, and its state), a tag the recipe does not
ask for is refused with nothing changed, and the next full sync picks up the other image.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support import oci
from support.registry import LocalRegistry
from support.workflow import REPO, SNAKEMAKE, Workdir, good_image, published_in, workflow_env

pytestmark = pytest.mark.workflow


def sync_one(workdir: Workdir, *refs: str) -> subprocess.CompletedProcess[str]:
    snakefile = ["--snakefile", str(REPO / "Snakefile"), "--workflow-profile", str(REPO / "profiles" / "default")]
    command = [str(SNAKEMAKE.with_name("unpacked")), "sync-one", *refs, "--", *snakefile]
    return subprocess.run(
        command, cwd=workdir.directory, env=workflow_env(), capture_output=True, text=True, timeout=600, check=False
    )


def content(workdir: Workdir, registry: LocalRegistry, repo: str, name: str) -> str:
    return (workdir.root / registry.host / repo / name / "etc/id").read_text()


def test_sync_one_rebuilds_that_tag_only(workdir: Workdir, registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, f"{repo_name}/a", "1", good_image("a, first\n"))
    oci.push(registry, f"{repo_name}/b", "1", good_image("b, first\n"))
    workdir.configure([f"http://{registry.host}/{repo_name}/a:1", f"http://{registry.host}/{repo_name}/b:*"])
    assert workdir.run().returncode == 0
    resolved = workdir.directory / "work/state/resolved.json"
    names_before = json.loads(resolved.read_text())["images"]

    oci.push(registry, f"{repo_name}/a", "1", good_image("a, moved\n"))
    oci.push(registry, f"{repo_name}/b", "1", good_image("b, moved\n"))
    done = sync_one(workdir, f"{registry.host}/{repo_name}/b:1")  # asked for by the glob entry
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert published_in(output) == [f"{registry.host}/{repo_name}/b:1"]
    assert content(workdir, registry, repo_name, "b:1") == "b, moved\n"
    assert content(workdir, registry, repo_name, "a:1") == "a, first\n", "the other image is left as it is"
    assert json.loads(resolved.read_text())["images"] == names_before, "the other image's state is kept"

    # A tag no entry asks for: refused before anything is resolved or written.
    refused = sync_one(workdir, f"{registry.host}/{repo_name}/c:1")
    assert refused.returncode != 0
    assert f"{registry.host}/{repo_name}/c:1: no entry of recipe" in refused.stdout + refused.stderr
    assert content(workdir, registry, repo_name, "a:1") == "a, first\n"

    # The next whole sync brings the other image, and does not rebuild the one already synced.
    full = workdir.run()
    assert full.returncode == 0, full.stderr[-3000:]
    assert published_in(full.stdout + full.stderr) == [f"{registry.host}/{repo_name}/a:1"]
    assert content(workdir, registry, repo_name, "a:1") == "a, moved\n"


def test_sync_one_needs_a_tag(workdir: Workdir) -> None:
    unpacked = str(SNAKEMAKE.with_name("unpacked"))
    for refs, message in (([], "name at least one tag"), (["no-registry:1"], "no registry host")):
        done = subprocess.run(
            [unpacked, "sync-one", *refs], cwd=workdir.directory, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1 and message in done.stderr, done.stderr
    assert not Path(workdir.directory / "work").exists(), "refused before Snakemake starts"
