"""Every shipped profile: complete on its own, no job groups, and accepted by Snakemake.

A profile passed as `--workflow-profile` replaces profiles/default; so each must repeat the default
profile's keys, or a cluster run would silently lose keep-going, the mtime-only rerun triggers or the
download cap. The dry-run parses every key with the executor plugin installed: it is the check for
HTCondor and Kubernetes, which cannot run here (Slurm runs for real in test_slurm.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from support import oci
from support.registry import LocalRegistry
from support.workflow import (
    REPO,
    SNAKEMAKE,
    good_image,
    published_in,
    workflow_env,
    write_config,
)

PROFILES = sorted(path.parent.name for path in (REPO / "profiles").glob("*/config.yaml"))
CLUSTER_PROFILES = [name for name in PROFILES if name != "default"]


def profile(name: str) -> dict[str, object]:
    loaded = yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def resource_names(entries: object) -> set[str]:
    assert isinstance(entries, list)
    return {str(entry).split("=", 1)[0] for entry in entries}


def test_the_cluster_profiles_are_the_ones_documented() -> None:
    assert CLUSTER_PROFILES == ["htcondor", "kubernetes", "slurm", "slurm-sbatch"]
    usage = (REPO / "docs" / "usage.md").read_text()
    for name in CLUSTER_PROFILES:
        assert f"--workflow-profile profiles/{name}" in usage, f"docs/usage.md does not show profiles/{name}"


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_a_cluster_profile_repeats_every_key_of_the_default_one(name: str) -> None:
    default, cluster = profile("default"), profile(name)
    for key, value in default.items():
        assert key in cluster, f"profiles/{name} lacks {key!r}: as --workflow-profile it replaces profiles/default"
        if key == "default-resources":
            assert resource_names(value) <= resource_names(cluster[key]), f"profiles/{name}: {cluster[key]}"
        elif key != "printshellcmds":
            assert cluster[key] == value, f"profiles/{name}: {key} is {cluster[key]!r}, the default {value!r}"
    assert "executor" in cluster and "jobs" in cluster
    # A group spanning two images lets one failing image stop the others, on every rerun.
    assert not {"groups", "group-components"} & set(cluster), f"profiles/{name} groups jobs"


@pytest.mark.workflow
@pytest.mark.parametrize("name", PROFILES)
def test_snakemake_accepts_the_profile_in_a_dry_run(name: str, registry: LocalRegistry, tmp_path: Path) -> None:
    oci.push(registry, "profiles/image", "1", good_image("dry run\n"))
    write_config(tmp_path, [f"http://{registry.host}/profiles/image:1"], {registry.host: {"insecure": True}})
    command = [str(SNAKEMAKE), "--workflow-profile", f"profiles/{name}", "--directory", str(tmp_path), "-n"]
    if name == "kubernetes":  # the shared volume's mount path is the workflow directory (docs/usage.md)
        command += ["--default-storage-prefix", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, env=workflow_env(), capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"Using workflow specific profile profiles/{name}" in output
    assert published_in(output) == [f"{registry.host}/profiles/image:1"], output[-3000:]
    assert not (tmp_path / "output").exists(), "a dry-run publishes nothing"
