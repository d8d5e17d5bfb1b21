"""Several platforms: DUCC's `.multiarch/<arch>[:<variant>]/<registry>/<repo>:<tag>` links.

The workflow runs as `snakemake --cores 2` against a real registry on 127.0.0.1: a three-platform
index (with an attestation), a tag without arm64, and a single-platform image. Resolver-level tests
cover nested indexes, variant matching and the single-platform default (no `.multiarch` at all).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unpacked.config import validate_config
from unpacked.recipe import parse_recipe
from unpacked.resolve import Resolver
from unpacked.state import Notice, Resolution
from unpacked.store import store_for

from support import oci
from support.registry import LocalRegistry
from support.workflow import parse_jobs, run_workflow, workflow_env

PLATFORMS = ["linux/amd64", "linux/arm64", "linux/ppc64le"]
AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64_V8 = {"os": "linux", "architecture": "arm64", "variant": "v8"}
ARM64 = {"os": "linux", "architecture": "arm64"}
PPC64LE = {"os": "linux", "architecture": "ppc64le"}
S390X = {"os": "linux", "architecture": "s390x"}
ATTESTATION = {"os": "unknown", "architecture": "unknown"}


def arch_image(marker: str, architecture: str, variant: str | None = None) -> oci.Image:
    layer = oci.TarLayer().add_dir("etc").add_file("etc/arch", f"{marker} {architecture}\n".encode()).tar_bytes()
    return oci.build_image([layer], architecture=architecture, variant=variant)


@dataclass
class Run:
    directory: Path
    registry: LocalRegistry
    images: dict[str, oci.Image]
    # The first sync: its dry run's jobs, its jobs and its output.
    first_preview: list[tuple[str, str]] = field(default_factory=list)
    first_done: list[tuple[str, str]] = field(default_factory=list)
    first_output: str = ""

    @property
    def root(self) -> Path:
        return self.directory / "output"

    def snakemake(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_workflow(self.directory, *args, env=workflow_env(DOCKER_CONFIG=str(self.directory)))

    def jobs(self, *args: str) -> tuple[list[tuple[str, str]], str]:
        done = self.snakemake(*args)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-6000:]
        return parse_jobs(output), output

    def name(self, repo_tag: str) -> str:
        return f"{self.registry.host}/{repo_tag}"

    def target(self, link: Path) -> Path:
        assert link.is_symlink(), f"{link} is not published"
        return (link.parent / os.readlink(link)).resolve()


@pytest.fixture(scope="module")
def unsynced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The registry, its images and the workflow directory, before any run."""
    top = tmp_path_factory.mktemp("multiarch")
    with LocalRegistry(workdir=top / "registry") as registry:
        images = {
            "multi-amd64": arch_image("multi", "amd64"),
            "multi-arm64": arch_image("multi", "arm64", "v8"),
            "multi-ppc64le": arch_image("multi", "ppc64le"),
            "noarm-amd64": arch_image("noarm", "amd64"),
            "noarm-s390x": arch_image("noarm", "s390x"),
        }
        attestation = oci.build_image([oci.TarLayer().add_file("sbom", b"{}").tar_bytes()], architecture="unknown")
        multi = oci.build_index(
            [
                (images["multi-arm64"], ARM64_V8),
                (attestation, ATTESTATION),
                (images["multi-amd64"], AMD64),
                (images["multi-ppc64le"], PPC64LE),
            ]
        )
        oci.push(registry, "demo/multi", "latest", multi)
        noarm = oci.build_index([(images["noarm-s390x"], S390X), (images["noarm-amd64"], AMD64)], media="docker")
        oci.push(registry, "demo/noarm", "1.0", noarm)
        directory = top / "run"
        (directory / "config").mkdir(parents=True)
        recipe = [f"http://{registry.host}/demo/multi:latest", f"http://{registry.host}/demo/noarm:1.0"]
        (directory / "config" / "recipe.yaml").write_text(json.dumps(recipe))
        settings = {"platforms": PLATFORMS, "registries": {registry.host: {"insecure": True}}}
        (directory / "config" / "config.yaml").write_text(json.dumps(settings))
        yield Run(directory, registry, images)


@pytest.fixture(scope="module")
def run(unsynced: Run) -> Run:
    """The first sync, done before whichever test of this file needs it first, even alone."""
    unsynced.first_preview, _ = unsynced.jobs("-n")
    unsynced.first_done, unsynced.first_output = unsynced.jobs()
    return unsynced


@pytest.mark.workflow
def test_first_sync_publishes_every_platform(run: Run) -> None:
    preview, done = run.first_preview, run.first_done
    assert sorted(preview) == sorted(done), "the dry-run must show exactly the work the run does"
    multi = run.name("demo/multi:latest")
    # Main link: the first configured platform the index offers.
    assert (run.target(run.root / multi) / "etc/arch").read_text() == "multi amd64\n"
    # DUCC's directory names: architecture, and `:variant` when the index gives one; no OS.
    expected = {"amd64": "multi amd64\n", "arm64:v8": "multi arm64\n", "ppc64le": "multi ppc64le\n"}
    assert sorted(p.name for p in (run.root / ".multiarch").iterdir()) == sorted(expected)
    for directory, content in expected.items():
        link = run.root / ".multiarch" / directory / multi
        depth = 2 + multi.count("/")
        assert os.readlink(link).startswith("../" * depth + ".flat/"), os.readlink(link)
        assert (run.target(link) / "etc/arch").read_text() == content
    # amd64 is one flat image, shared by the main link and its .multiarch link.
    assert run.target(run.root / ".multiarch/amd64" / multi) == run.target(run.root / multi)
    flats = {p.name for p in (run.root / ".flat").glob("*/*")}
    wanted = {run.images[k].config_digest.split(":")[1] for k in run.images if k != "noarm-s390x"}
    assert flats == wanted, "each wanted platform flattened once; s390x and the attestation never"
    # Per-platform metadata where DUCC keeps it.
    record = json.loads((run.root / ".metadata/.multiarch/arm64:v8" / multi / "record.json").read_text())
    assert record["platform"] == "linux/arm64"
    assert record["manifest_digest"] == run.images["multi-arm64"].digest
    assert record["config_digest"] == run.images["multi-arm64"].config_digest


@pytest.mark.workflow
def test_tag_without_a_platform_is_reported_not_fatal(run: Run) -> None:
    noarm = run.name("demo/noarm:1.0")
    assert (run.target(run.root / noarm) / "etc/arch").read_text() == "noarm amd64\n"
    assert (run.target(run.root / ".multiarch/amd64" / noarm) / "etc/arch").read_text() == "noarm amd64\n"
    assert not (run.root / ".multiarch/arm64:v8" / noarm).exists()
    for directory in (run.root / ".multiarch").iterdir():
        if directory.name != "amd64":
            assert not (directory / noarm).exists(), directory
    # The end-of-run summary names the tag and what it lacks; the run itself succeeded (jobs() checks).
    summary = run.first_output[run.first_output.index("steps (100%) done") :]
    assert "1 image(s) lack some wanted platform(s)" in summary
    assert f"http://{noarm}: no linux/arm64, linux/ppc64le" in summary
    # A run with nothing to do has no end-of-run summary; resolution still says it.
    done = run.snakemake()
    assert done.returncode == 0
    assert f"http://{noarm}: no image for platform(s) linux/arm64, linux/ppc64le" in done.stderr
    resolved = json.loads((run.directory / "work/state/resolved.json").read_text())
    assert resolved["failures"] == []
    assert resolved["notices"] == [
        {"reference": f"http://{noarm}", "missing_platforms": ["linux/arm64", "linux/ppc64le"]}
    ]


@pytest.mark.workflow
def test_noop_rerun_runs_no_job(run: Run) -> None:
    states = sorted((run.directory / "work/state").rglob("*.json"))
    assert any(".multiarch" in str(p) for p in states)
    before = {p: p.stat().st_mtime_ns for p in states}
    log_before = run.registry.log
    preview, _ = run.jobs("-n")
    assert preview == []
    done, output = run.jobs()
    assert done == []
    assert "Nothing to be done" in output
    assert {p: p.stat().st_mtime_ns for p in states} == before, "unchanged state files are not rewritten"
    new = run.registry.log[len(log_before) :]
    assert new.count('"GET /v2/') == 0, "no manifest or blob fetched for unchanged tags"
    assert new.count('"HEAD /v2/') == 4, "one HEAD per tag per run (two runs, two tags)"


@pytest.mark.workflow
def test_moved_platform_rebuilds_that_platform_alone(run: Run) -> None:
    multi = run.name("demo/multi:latest")
    arm = arch_image("multi again", "arm64", "v8")
    amd, ppc = run.images["multi-amd64"], run.images["multi-ppc64le"]
    index = oci.build_index([(arm, ARM64_V8), (amd, AMD64), (ppc, PPC64LE)])
    oci.push(run.registry, "demo/multi", "latest", index)
    flats_before = {path.name for path in run.root.glob(".flat/*/*")}
    preview, _ = run.jobs("-n")
    done, _ = run.jobs()
    assert sorted(preview) == sorted(done)
    flats_built = {path.name for path in run.root.glob(".flat/*/*")} - flats_before
    assert flats_built == {arm.config_digest.split(":")[1]}, done
    # Every name of the tag gets its new source digest recorded; only arm64 points elsewhere.
    assert (run.target(run.root / ".multiarch/arm64:v8" / multi) / "etc/arch").read_text() == "multi again arm64\n"
    assert (run.target(run.root / multi) / "etc/arch").read_text() == "multi amd64\n"
    preview, _ = run.jobs("-n")
    assert preview == []


# -------------------------------------------------------------------------------------------------
# Resolver level
# -------------------------------------------------------------------------------------------------


def resolve(reg: LocalRegistry, tmp_path: Path, platforms: list[str], *entries: str) -> Resolution:
    config: dict[str, Any] = validate_config(
        {
            "registries": {reg.host: {"insecure": True, "retries": 0}},
            "work_dir": str(tmp_path / "work"),
            "output_root": str(tmp_path / "output"),
            "platforms": platforms,
        }
    )
    return Resolver(config, store_for(config)).run(parse_recipe([f"{reg.host}/{e}" for e in entries]))


def test_one_platform_makes_no_multiarch_names(registry: LocalRegistry, tmp_path: Path, repo_name: str) -> None:
    index = oci.build_index([(arch_image(repo_name, "amd64"), AMD64), (arch_image(repo_name, "arm64"), ARM64)])
    oci.push(registry, repo_name, "v1", index)
    result = resolve(registry, tmp_path, ["linux/amd64"], f"{repo_name}:v1")
    assert list(result.images) == [f"{registry.host}/{repo_name}:v1"]
    assert result.images[f"{registry.host}/{repo_name}:v1"].multiarch is None
    assert result.notices == []


def test_nested_index_and_arm64_variant_normalisation(registry: LocalRegistry, tmp_path: Path, repo_name: str) -> None:
    amd, arm = arch_image(repo_name, "amd64"), arch_image(repo_name, "arm64")
    inner = oci.build_index([(arm, ARM64)])  # arm64 without a variant: v8 by the OCI rule
    outer = oci.build_index([(inner, ARM64), (amd, AMD64)])
    oci.push(registry, repo_name, "nested", outer)
    result = resolve(registry, tmp_path, ["linux/arm64/v8", "linux/amd64"], f"{repo_name}:nested")
    name = f"{registry.host}/{repo_name}:nested"
    assert result.failures == [] and result.notices == []
    assert result.images[name].manifest_digest == arm.digest, "first configured platform is the main link"
    assert sorted(n for n in result.images if n != name) == [f".multiarch/amd64/{name}", f".multiarch/arm64/{name}"]
    assert result.images[f".multiarch/arm64/{name}"].platform == "linux/arm64/v8"
    assert result.images[f".multiarch/amd64/{name}"].manifest_digest == amd.digest


def test_single_platform_image_with_several_platforms(registry: LocalRegistry, tmp_path: Path, repo_name: str) -> None:
    img = arch_image(repo_name, "arm64", "v8")
    oci.push(registry, repo_name, "arm", img)
    result = resolve(registry, tmp_path, ["linux/amd64", "linux/arm64"], f"{repo_name}:arm")
    name = f"{registry.host}/{repo_name}:arm"
    assert sorted(result.images) == sorted([name, f".multiarch/arm64:v8/{name}"])
    assert result.images[name].platform == "linux/arm64/v8"
    assert result.notices == [Notice(f"https://{name}", ("linux/amd64",))]


def test_no_wanted_platform_at_all_is_a_failure(registry: LocalRegistry, tmp_path: Path, repo_name: str) -> None:
    index = oci.build_index([(arch_image(repo_name, "s390x"), S390X), (arch_image(repo_name, "unknown"), ATTESTATION)])
    oci.push(registry, repo_name, "v1", index)
    result = resolve(registry, tmp_path, ["linux/amd64", "linux/arm64"], f"{repo_name}:v1")
    assert result.images == {}
    assert len(result.failures) == 1
    message = result.failures[0].error
    assert "no image for platform(s) linux/amd64, linux/arm64; the index offers linux/s390x" in message


def test_hostile_variant_never_becomes_a_path(registry: LocalRegistry, tmp_path: Path, repo_name: str) -> None:
    img = arch_image(repo_name, "arm64")
    index = oci.build_index([(img, {"os": "linux", "architecture": "arm64", "variant": "../../../x"})])
    oci.push(registry, repo_name, "v1", index)
    result = resolve(registry, tmp_path, ["linux/arm64", "linux/amd64"], f"{repo_name}:v1")
    assert result.images == {}
    assert "cannot name a .multiarch directory" in result.failures[0].error
    assert not (tmp_path / "work/state/images/.multiarch").exists()
