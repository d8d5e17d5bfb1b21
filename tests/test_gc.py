"""Garbage collection and pruning of the published tree and the work store, on real syncs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import oci
from support.registry import LocalRegistry
from support.workflow import parse_jobs, run_workflow, write_config

pytestmark = pytest.mark.workflow


def image(text: str, mode_000_dir: bool = False) -> oci.Image:
    layer = oci.TarLayer().add_dir("etc").add_file("etc/id", text.encode())
    if mode_000_dir:
        layer.add_dir("secret", mode=0o000).add_file("secret/key", b"k", mode=0o000)
    return oci.build_image([layer.tar_bytes()])


def configure(directory: Path, registry: LocalRegistry, entries: list[str]) -> None:
    recipe = [f"http://{registry.host}/{e}" for e in entries]
    write_config(directory, recipe, {registry.host: {"insecure": True}})


def gc(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "unpacked.cli", "gc", "--settings", "work/state/settings.json", *args]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=120, check=False)


def sync(directory: Path) -> None:
    done = run_workflow(directory)
    assert done.returncode == 0, done.stdout + done.stderr


def test_moved_tag_old_flat_collected_after_grace(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    run = tmp_path / "run"
    oci.push(registry, f"{repo_name}/app", "1", image("old\n", mode_000_dir=True))
    oci.push(registry, f"{repo_name}/other", "1", image("other\n"))
    configure(run, registry, [f"{repo_name}/app:1", f"{repo_name}/other:1"])
    sync(run)
    link = run / "output" / registry.host / repo_name / "app:1"
    old_flat = link.resolve()
    oci.push(registry, f"{repo_name}/app", "1", image("new\n"))
    sync(run)
    assert old_flat.is_dir() and link.resolve() != old_flat

    kept = gc(run, "--grace-days", "7")  # the old image is younger than the grace period
    assert kept.returncode == 0, kept.stderr
    assert old_flat.is_dir()

    preview = gc(run, "--grace-days", "0", "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert f"would remove {old_flat}" in preview.stdout or str(old_flat.relative_to(run)) in preview.stdout
    assert old_flat.is_dir(), "a dry run removes nothing"

    logs = run / "work/logs/publish_image"
    assert (logs / f"{old_flat.name}.log").is_file() and (logs / f"{link.resolve().name}.log").is_file()
    done = gc(run, "--grace-days", "0")
    assert done.returncode == 0, done.stderr
    assert not old_flat.exists(), "the unreferenced image is gone, mode-000 directory and all"
    assert not (logs / f"{old_flat.name}.log").exists(), "its log went with it"
    assert (logs / f"{link.resolve().name}.log").is_file(), "the logs of what stays stay"
    assert (link / "etc/id").read_text() == "new\n"
    assert (run / "output" / registry.host / repo_name / "other:1/etc/id").read_text() == "other\n"
    # The old image's own layer is no longer used by any resolved image: collected too.
    layers = {p.name for p in (run / "work/layers").glob("*/*")}
    states = [json.loads(p.read_text()) for p in (run / "work/state/images").rglob("*.json")]
    assert layers == {layer["digest"].split(":")[1] for s in states for layer in s["layers"]}
    # Nothing left to do for the workflow after collection.
    assert parse_jobs(run_workflow(run, "-n").stdout) == []
    # Each collection (not the dry run) is a line of the run history, with what it removed.
    lines = [
        json.loads(text) for path in (run / "work/history").glob("*.jsonl") for text in path.read_text().splitlines()
    ]
    collections = [line for line in lines if line["kind"] == "gc"]
    assert [line["counts"]["flats"] for line in collections] == [0, 1]
    assert [line["kind"] for line in lines] == ["sync", "sync", "gc", "gc"]


def test_prune_unpublishes_dropped_entries_with_a_guard(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    run = tmp_path / "run"
    names = [f"{repo_name}/app:{n}" for n in range(5)]
    for number, name in enumerate(names):
        repo, tag = name.rsplit(":", 1)
        oci.push(registry, repo, tag, image(f"{number}\n"))
    configure(run, registry, names)
    sync(run)
    root = run / "output" / registry.host

    # A recipe that lost most of its entries (a bad edit): the guard refuses.
    configure(run, registry, names[:1])
    sync(run)
    refused = gc(run, "--prune")
    assert refused.returncode != 0
    assert "prune would remove 4 of 5 published links" in refused.stderr
    assert all((root / name).is_symlink() for name in names)

    # One entry dropped: within the guard.
    configure(run, registry, names[:4])
    sync(run)
    done = gc(run, "--prune", "--grace-days", "0")
    assert done.returncode == 0, done.stderr
    assert not os.path.lexists(root / names[4])
    assert not (run / "output/.metadata" / registry.host / names[4]).exists()
    assert all((root / name).is_symlink() for name in names[:4])
    # Its flat goes at the next collection, and adding the entry back publishes it again.
    gc(run, "--grace-days", "0")
    assert len(list((run / "output/.flat").glob("*/*"))) == 4
    configure(run, registry, names)
    sync(run)
    assert (root / names[4] / "etc/id").read_text() == "4\n"


def test_failed_resolution_is_never_pruned(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    run = tmp_path / "run"
    oci.push(registry, f"{repo_name}/app", "1", image("x\n"))
    configure(run, registry, [f"{repo_name}/app:1"])
    sync(run)
    oci.delete_tag(registry, f"{repo_name}/app", "1")  # upstream gone: resolution fails
    assert run_workflow(run).returncode != 0
    done = gc(run, "--prune", "--grace-days", "0", "--force")
    assert done.returncode == 0, done.stderr
    link = run / "output" / registry.host / repo_name / "app:1"
    assert (link / "etc/id").read_text() == "x\n", "still in the recipe: kept, and its image too"


def test_leftovers_of_killed_jobs_are_collected_and_aliased_flats_kept(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    run = tmp_path / "run"
    oci.push(registry, f"{repo_name}/app", "1", image("old\n"))
    configure(run, registry, [f"{repo_name}/app:1"])
    sync(run)
    link = run / "output" / registry.host / repo_name / "app:1"
    old_flat = link.resolve()
    alias = run / "output/aliases/app-old"  # an operator's own link to the old image
    alias.parent.mkdir()
    os.symlink(os.path.relpath(old_flat, alias.parent), alias)
    oci.push(registry, f"{repo_name}/app", "1", image("new\n"))
    sync(run)
    # What killed jobs leave: a flat's staging directory, a blob's partial download, a temporary link.
    staging = old_flat.with_name(f".{old_flat.name}.tmp-12345")
    staging.mkdir()
    (staging / "half").write_text("x")
    part = next((run / "work/blobs/sha256").iterdir()).with_name(f".{'a' * 64}.xyz.part")
    part.write_text("partial")
    temp_link = link.with_name(".app:1.link-4242")
    os.symlink("nowhere", temp_link)
    # A log of the version with one publish job per name, named by the name.
    old_log = run / "work/logs/publish_image" / registry.host / repo_name / "app:1.log"
    old_log.parent.mkdir(parents=True)
    old_log.write_text("published\n")

    done = gc(run, "--grace-days", "0")
    assert done.returncode == 0, done.stderr
    assert not staging.exists() and not part.exists() and not os.path.lexists(temp_link)
    assert not (run / "work/logs/publish_image" / registry.host).exists(), "old logs and their directories go"
    assert old_flat.is_dir() and (alias / "etc/id").read_text() == "old\n", "a flat some link points to stays"
    assert (link / "etc/id").read_text() == "new\n"


def test_batches_of_earlier_runs_are_collected_after_grace(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    """A run's batches of small images (their files, outputs and logs) are only that run's plan:
    collected once older than the grace period, with nothing to redo."""
    run = tmp_path / "run"
    for name in ("a", "b"):
        oci.push(registry, f"{repo_name}/{name}", "1", image(f"{name}\n"))
    configure(run, registry, [f"{repo_name}/a:1", f"{repo_name}/b:1"])
    sync(run)
    kinds = ("work/state/batches", "work/published_batches", "work/logs/publish_batch")
    made = [path for kind in kinds for path in (run / kind).iterdir()]
    assert len(made) == 3, made  # the two images shared one job

    kept = gc(run, "--grace-days", "7")
    assert kept.returncode == 0, kept.stderr
    assert all(path.exists() for path in made), "younger than the grace period"
    done = gc(run, "--grace-days", "0")
    assert done.returncode == 0, done.stderr
    assert not any(path.exists() for path in made), done.stderr
    for name in ("a", "b"):
        assert (run / "output" / registry.host / repo_name / f"{name}:1" / "etc/id").read_text() == f"{name}\n"
    again = run_workflow(run, "-n")
    assert again.returncode == 0 and parse_jobs(again.stdout) == [], again.stdout + again.stderr
