"""The cluster profiles on a real one-node Slurm (munged, slurmctld, slurmd; no accounting database).

For each Slurm profile, as an operator runs it (`snakemake --workflow-profile profiles/<name>`, a
relative profile path from the repository with `--directory` elsewhere): the first sync publishes
the same trees as a local run, a failing image does not stop the others, the jobs really ran as
Slurm jobs, and a tag that moves upstream rebuilds only its image. HTCondor and Kubernetes cannot
run here: their profiles are checked by a dry-run in test_profiles.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from unpacked import direct_job

from support import compare, oci
from support.registry import LocalRegistry, free_port
from support.slurm import LocalSlurm
from support.workflow import (
    REPO,
    SNAKEMAKE,
    bad_diff_id_image,
    good_image,
    published_in,
    run_workflow,
    workflow_env,
    write_config,
)

pytestmark = pytest.mark.workflow

PROFILES = ("slurm", "slurm-sbatch")
# What a tree must share with the local run's: all but the mtimes of what the build itself writes.
BUILD_INDEPENDENT = [field for field in compare.FIELDS if field != "mtime"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    with LocalSlurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def shared_base_images() -> tuple[oci.Image, oci.Image]:
    """Two images over one base layer big enough (2 MiB) for a fetch job of its own."""
    base = oci.TarLayer().add_dir("opt").add_file("opt/data", os.urandom(2 << 20)).tar_bytes()
    first = oci.TarLayer().add_dir("etc").add_file("etc/id", b"shared 1\n").tar_bytes()
    second = oci.TarLayer().add_dir("etc").add_file("etc/id", b"shared 2\n").tar_bytes()
    return oci.build_image([base, first]), oci.build_image([base, second])


@dataclass
class Recipe:
    registry: LocalRegistry
    repo: str

    def entries(self, corrupt: bool = True) -> list[str]:
        names = ["a:1", "b:1", "shared:1", "shared:2"] + (["corrupt:1"] if corrupt else [])
        return [f"http://{self.registry.host}/{self.repo}/{name}" for name in names]

    def published(self, root: Path, name: str) -> Path:
        link = root / self.registry.host / self.repo / name
        assert link.is_symlink(), f"{name} is not published under {root}"
        return link.resolve()


@pytest.fixture(scope="module")
def recipe(registry: LocalRegistry) -> Recipe:
    repo = "slurm-profiles"
    oci.push(registry, f"{repo}/a", "1", good_image("a\n"))
    oci.push(registry, f"{repo}/b", "1", good_image("b\n"))
    for tag, image in zip(("1", "2"), shared_base_images(), strict=True):
        oci.push(registry, f"{repo}/shared", tag, image)
    oci.push(registry, f"{repo}/corrupt", "1", bad_diff_id_image())
    return Recipe(registry, repo)


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory, recipe: Recipe) -> Path:
    """The reference: the same recipe synced locally (`snakemake --cores 2`)."""
    directory = tmp_path_factory.mktemp("local")
    write_config(directory, recipe.entries(), {recipe.registry.host: {"insecure": True}})
    done = run_workflow(directory)
    assert done.returncode != 0, "the corrupt image fails the local run too"
    return directory / "output"


def cluster_run(directory: Path, profile: str, slurm: LocalSlurm, *args: str) -> subprocess.CompletedProcess[str]:
    """`snakemake --workflow-profile profiles/<profile>` from the repository, as the docs say."""
    command = [str(SNAKEMAKE), "--workflow-profile", f"profiles/{profile}", "--directory", str(directory), *args]
    env = workflow_env()
    env.update(SLURM_CONF=slurm.env["SLURM_CONF"], PATH=f"{slurm.bin}:{env['PATH']}")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.parametrize("profile", PROFILES)
def test_sync_through_slurm_matches_a_local_run(
    profile: str, slurm: LocalSlurm, recipe: Recipe, local_root: Path, tmp_path: Path
) -> None:
    registries = {recipe.registry.host: {"insecure": True}}
    write_config(tmp_path, recipe.entries(), registries)
    before = set(slurm.jobs())

    first = cluster_run(tmp_path, profile, slurm)
    output = first.stdout + first.stderr
    assert first.returncode != 0, "a failing image fails the run"
    assert f"{recipe.repo}/corrupt:1" in output and "diff_id" in output, output[-4000:]
    for name in ("a:1", "b:1", "shared:1", "shared:2"):  # the failing image stopped none of them
        ours = compare.scan(recipe.published(tmp_path / "output", name))
        reference = compare.scan(recipe.published(local_root, name))
        differences = compare.compare(ours, reference, BUILD_INDEPENDENT)
        assert differences == [], f"{name}: {compare.report(differences)}"
    assert not (tmp_path / "output" / recipe.registry.host / recipe.repo / "corrupt:1").exists()
    ran = {job: text for job, text in slurm.jobs().items() if job not in before}
    # The fetch of the 2 MiB base layer and its extraction (two images share it), then one publish
    # job for the two images over it and one for the three small ones (limits.images_per_job): that
    # one fails, for the corrupt image, once it published the other two.
    states = sorted(text.split()[0] for text in ran.values())
    assert states == ["COMPLETED"] * 3 + ["FAILED"], ran

    # A tag moves upstream; the corrupt entry is dropped: only b:1 is rebuilt, and the run succeeds.
    oci.push(recipe.registry, f"{recipe.repo}/b", "1", good_image(f"b, rebuilt for {profile}\n"))
    write_config(tmp_path, recipe.entries(corrupt=False), registries)
    try:
        second = cluster_run(tmp_path, profile, slurm)
    finally:
        oci.push(recipe.registry, f"{recipe.repo}/b", "1", good_image("b\n"))
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert published_in(second.stdout + second.stderr) == [f"{recipe.registry.host}/{recipe.repo}/b:1"]
    rebuilt = recipe.published(tmp_path / "output", "b:1") / "etc/id"
    assert rebuilt.read_text() == f"b, rebuilt for {profile}\n"
    assert len(set(slurm.jobs()) - before - set(ran)) == 1, "one Slurm job for the moved tag, none else"


def slurm_status(job_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`unpacked slurm-status JOBID`, the status command of profiles/slurm-sbatch."""
    command = [str(SNAKEMAKE.with_name("unpacked")), "slurm-status", job_id]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def wait_for_state(slurm: LocalSlurm, job_id: str, state: str) -> None:
    deadline = time.monotonic() + 60
    while not slurm.jobs().get(int(job_id), "").startswith(state):
        assert time.monotonic() < deadline, f"job {job_id} never reached {state}: {slurm.jobs().get(int(job_id))}"
        time.sleep(0.2)


def test_slurm_status_reads_real_job_states(slurm: LocalSlurm, tmp_path: Path) -> None:
    def submit(*args: str) -> str:
        command = ["sbatch", "--parsable", "--output=/dev/null", *args]
        return subprocess.run(command, env=slurm.env, capture_output=True, text=True, check=True).stdout.strip()

    ok, bad = submit("--wrap=true"), submit("--wrap=exit 3")
    held = submit("--hold", "--wrap=true")  # pending until released: never runs
    wait_for_state(slurm, ok, "COMPLETED")
    wait_for_state(slurm, bad, "FAILED")
    answers = {job: slurm_status(job, slurm.env) for job in (ok, bad, held, "999999")}
    assert {job: done.stdout.strip() for job, done in answers.items()} == {
        ok: "success",
        bad: "failed",
        held: "running",
        "999999": "failed",
    }
    assert "no Slurm command knows job 999999" in answers["999999"].stderr
    subprocess.run(["scancel", held], env=slurm.env, check=True)

    # The controller does not answer (here: a config naming a port nobody listens on): the job may
    # still run, so the answer is "running", with the reason on stderr.
    dead = tmp_path / "slurm.conf"
    dead.write_text(re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={free_port()}", slurm.conf.read_text()))
    unreachable = slurm_status(ok, dict(os.environ, SLURM_CONF=str(dead)))  # not the wrappers: their config
    assert unreachable.stdout.strip() == "running", unreachable.stderr
    assert "squeue failed" in unreachable.stderr


def jobs_from_verbose_log(output: str) -> list[tuple[str, dict[str, Any]]]:
    """Each submitted job's shell command and the properties Snakemake wrote into its job script,
    from `--verbose --printshellcmds` (a `Shell command:` line, then the script's properties line)."""
    jobs, shell = [], None
    for line in output.splitlines():
        if line.startswith("Shell command: "):
            shell = line.removeprefix("Shell command: ")
        elif line.startswith("# properties = ") and shell is not None:
            jobs.append((shell, json.loads(line.removeprefix("# properties = "))))
            shell = None
    return jobs


def test_sbatch_jobs_run_their_rules_commands_without_snakemake(
    slurm: LocalSlurm, recipe: Recipe, tmp_path: Path
) -> None:
    """profiles/slurm-sbatch submits through `unpacked slurm-submit`: each job runs, as
    `unpacked cluster-job`, exactly the command its rule's shell would (rules/*.smk), with the
    rule's log, and no Snakemake starts on the node."""
    missing = f"http://{recipe.registry.host}/{recipe.repo}/no-such-image:1"  # a report_unresolved job
    # a:1 and b:1 share a publish_batch job; the shared images, over their 2 MiB base layer, are
    # made too big for one (small_image_bytes), so they have a publish_image job each.
    limits = {"small_image_bytes": 1 << 20}
    entries = [*recipe.entries(corrupt=False), missing]
    write_config(tmp_path, entries, {recipe.registry.host: {"insecure": True}}, limits=limits)
    before = set(slurm.jobs())
    done = cluster_run(tmp_path, "slurm-sbatch", slurm, "--verbose", "--printshellcmds")
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "no-such-image:1" in output, output[-4000:]
    for name in ("a:1", "b:1", "shared:1", "shared:2"):
        recipe.published(tmp_path / "output", name)

    jobs = jobs_from_verbose_log(output)
    assert sorted({job["rule"] for _, job in jobs}) == sorted(direct_job.COMMANDS), "every rule ran on Slurm"
    for shell, job in jobs:
        arguments = direct_job.command_of(job)
        assert arguments is not None, job
        assert shlex.split(shell) == ["unpacked", *arguments, "2>", job["log"][0]], job["rule"]
    assert "no-such-image:1" in (tmp_path / jobs_by_rule(jobs)["report_unresolved"]["log"][0]).read_text()

    submitted = [job for job in slurm.jobs() if job not in before]
    assert len(submitted) == len(jobs)
    for job_id in submitted:
        script = subprocess.run(
            ["scontrol", "write", "batch_script", str(job_id), "-"],
            env=slurm.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "-m unpacked.cli cluster-job " in script and "-m snakemake" not in script, script
    for shell, job in jobs:  # ran as cluster-job, not through the fallback to Snakemake's script
        first_line = (tmp_path / job["log"][0]).read_text().splitlines()[0]
        assert first_line == f"unpacked cluster-job: {job['rule']}: {shell.split(' 2> ')[0]}", first_line


def jobs_by_rule(jobs: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {job["rule"]: job for _, job in jobs}
