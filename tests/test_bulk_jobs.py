"""Fewer jobs per image (issue 9, P6), and what must hold anyway.

Small layers are fetched while resolving (`limits.prefetch_layer_bytes`); a blob that fails there is
left to its fetch_blob job. A layer only one flat image uses is extracted by that image's publish
job; a shared layer has its own job. Tags of one image build their shared flat image once.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from unpacked import resolve
from unpacked.config import validate_config
from unpacked.recipe import parse_recipe
from unpacked.resolve import Resolver
from unpacked.safefs import held_lock
from unpacked.state import FlatMarker, ResolvedImage
from unpacked.store import Store, store_for
from unpacked.sync import build_flat, fetch_blob

from support import oci
from support.proxy import Fault, FaultProxy
from support.registry import LocalRegistry
from support.unpack import MemorySource, resolved
from support.workflow import Workdir, good_image, published_in, rules_run


@pytest.mark.workflow
def test_a_small_layer_that_fails_while_resolving_is_left_to_its_job(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    status = 404  # not retried: the job's attempt is the second
    image = good_image("prefetch\n")
    oci.push(registry, f"{repo_name}/app", "1", image)
    layer = image.layers[0].digest
    with FaultProxy(registry.url) as proxy:
        proxy.add(Fault(path=rf"/blobs/{layer}", method="GET", status=status, times=1))
        workdir = Workdir(tmp_path / "run", {proxy.host: {"insecure": True}})
        workdir.configure([f"http://{proxy.host}/{repo_name}/app:1"])
        done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"layer {layer} not fetched while resolving (its job retries" in output
    assert rules_run(output) == ["all", "fetch_blob", "publish_image"], output
    assert (workdir.root / proxy.host / repo_name / "app:1" / "etc/id").read_text() == "prefetch\n"
    gets = [seen.status for seen in proxy.seen if seen.method == "GET" and layer in seen.path]
    assert gets == [status, 200], gets


@pytest.mark.workflow
def test_prefetch_off_gives_every_layer_its_fetch_job(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    oci.push(registry, f"{repo_name}/app", "1", good_image("one\n"))
    workdir.configure([f"http://{registry.host}/{repo_name}/app:1"], limits={"prefetch_layer_bytes": 0})
    preview = workdir.run("-n")
    assert rules_run(preview.stdout) == ["all", "fetch_blob", "publish_image"], preview.stdout
    done = workdir.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert rules_run(done.stdout + done.stderr) == ["all", "fetch_blob", "publish_image"]


@pytest.mark.workflow
def test_a_layer_two_images_share_has_one_job_before_both(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    base = oci.TarLayer().add_dir("etc").add_file("etc/base", b"base\n").tar_bytes()
    for tag in ("a", "b"):
        top = oci.TarLayer().add_file("etc/id", f"{tag}\n".encode()).tar_bytes()
        oci.push(registry, f"{repo_name}/app", tag, oci.build_image([base, top]))
    workdir.configure([f"http://{registry.host}/{repo_name}/app:a", f"http://{registry.host}/{repo_name}/app:b"])
    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # Small images waiting for the same job share a publish job (tests/test_publish_batch_jobs.py).
    assert rules_run(output) == ["all", "extract_layer", "publish_batch"], output
    for tag in ("a", "b"):
        flat = workdir.root / registry.host / repo_name / f"app:{tag}"
        assert (flat / "etc/base").read_text() == "base\n" and (flat / "etc/id").read_text() == f"{tag}\n"
    again = workdir.run("-n")
    assert again.returncode == 0 and rules_run(again.stdout) == [], again.stdout + again.stderr


def _build(store: Store, image: ResolvedImage, go: Any, results: multiprocessing.Queue) -> None:
    go.wait()
    results.put(build_flat(store, image))


def test_tags_of_one_image_build_their_flat_image_once(tmp_path: Path) -> None:
    """Two publish jobs for tags of one image wait on the flat's lock: one builds, the other keeps it."""
    image = oci.build_image([oci.TarLayer().add_dir("etc").add_file("etc/id", b"same\n").tar_bytes()])
    store = Store(tmp_path / "work", tmp_path / "root")
    source = MemorySource({**image.blobs, image.digest: image.manifest})
    tags = [resolved(image, f"registry.example.org/test/image:{tag}") for tag in ("1", "latest")]
    for digest in [image.config_digest, *(layer.digest for layer in image.layers)]:
        fetch_blob(store, source, tags[0], digest)
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue = context.Queue()
    go = context.Event()
    # Started before the lock is taken: a forked child must not inherit the lock's file descriptor.
    jobs = [context.Process(target=_build, args=(store, tag, go, results), daemon=True) for tag in tags]
    for job in jobs:
        job.start()
    with held_lock(store.flat_lock(image.config_digest)):
        go.set()
        time.sleep(1)
        assert all(job.is_alive() for job in jobs), "both wait for the lock"
        assert not store.built_flat(image.config_digest).exists()
    markers: list[FlatMarker] = [results.get(timeout=60) for _ in jobs]
    for job in jobs:
        job.join(timeout=60)
        assert job.exitcode == 0
    assert sorted(marker.kept for marker in markers) == [False, True], markers
    built, kept = sorted(markers, key=lambda marker: marker.kept)
    assert kept.files == built.files and built.files, "the second tag's marker keeps the file count"
    assert (store.built_flat(image.config_digest) / "etc/id").read_text() == "same\n"
    assert not [p for p in store.built_flat(image.config_digest).parent.iterdir() if p.name.startswith(".")]


def lying_layer_image() -> oci.Image:
    """One layer whose uncompressed digest is not the diff_id its config says."""
    honest = oci.LayerBlob.from_tar(oci.TarLayer().add_file("etc/id", b"lie\n").tar_bytes(), "gzip", "oci")
    return oci.build_image([oci.LayerBlob(honest.data, honest.media_type, oci.sha256(b"something else"))])


@pytest.mark.workflow
def test_tags_of_one_image_publish_in_one_job(workdir: Workdir, registry: LocalRegistry, repo_name: str) -> None:
    """One publish job per flat image, for all of its names; later runs publish only what changed."""
    image = good_image("both\n")
    for tag in ("1", "latest"):
        oci.push(registry, f"{repo_name}/app", tag, image)
    workdir.configure([f"http://{registry.host}/{repo_name}/app:*"])
    name = f"{registry.host}/{repo_name}/app"
    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert rules_run(output) == ["all", "publish_image"], output
    assert published_in(output) == [f"{name}:1", f"{name}:latest"], output
    links = {tag: workdir.root / registry.host / repo_name / f"app:{tag}" for tag in ("1", "2", "latest")}
    flats = {links[tag].resolve() for tag in ("1", "latest")}
    assert len(flats) == 1 and (flats.pop() / "etc/id").read_text() == "both\n"
    logs = [path.read_text() for path in (workdir.directory / "work/logs/publish_image").rglob("*.log")]
    assert len(logs) == 1 and "already built; kept" not in logs[0], logs  # built once, by the one job

    # A new tag of the same image: the job runs again, for that name alone.
    before = {tag: os.stat(links[tag], follow_symlinks=False).st_ino for tag in ("1", "latest")}
    oci.push(registry, f"{repo_name}/app", "2", image)
    preview = workdir.run("-n")
    assert published_in(preview.stdout) == [f"{name}:2"], preview.stdout
    again = workdir.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert published_in(again.stdout + again.stderr) == [f"{name}:2"]
    assert links["2"].resolve() == links["1"].resolve()
    after = {tag: os.stat(links[tag], follow_symlinks=False).st_ino for tag in ("1", "latest")}
    assert after == before, "the names already published are left as they are"

    # A link removed by hand: the next run publishes that name again, and only it.
    links["latest"].unlink()
    repair = workdir.run()
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert published_in(repair.stdout + repair.stderr) == [f"{name}:latest"]
    assert links["latest"].resolve() == links["1"].resolve()
    nothing = workdir.run("-n")
    assert rules_run(nothing.stdout) == [], nothing.stdout

    # A tag leaves the image: the job of its new image runs, none for the image it left.
    oci.push(registry, f"{repo_name}/app", "latest", good_image("moved\n"))
    moved = workdir.run()
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert rules_run(moved.stdout + moved.stderr) == ["all", "publish_image"], moved.stdout + moved.stderr
    assert published_in(moved.stdout + moved.stderr) == [f"{name}:latest"]
    assert (links["latest"] / "etc/id").read_text() == "moved\n"

    # Work directories of the version with one publish job per name have neither the job outputs nor
    # the names files: nothing runs (checked by hand against that version's own work directory too).
    shutil.rmtree(workdir.directory / "work/published_flats")
    shutil.rmtree(workdir.directory / "work/state/flats")
    upgraded = workdir.run("-n")
    assert upgraded.returncode == 0 and rules_run(upgraded.stdout) == [], upgraded.stdout
    assert len(list((workdir.directory / "work/published_flats").glob("*.json"))) == 2


@pytest.mark.workflow
def test_a_layer_extracted_by_a_publish_job_fails_as_that_layer(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    image = lying_layer_image()
    for tag in ("1", "latest"):
        oci.push(registry, f"{repo_name}/app", tag, image)
    workdir.configure([f"http://{registry.host}/{repo_name}/app:*"])
    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    summary = output[output.find("image(s) failed") - 2 :]
    assert summary.startswith("2 image(s) failed:"), summary
    layer = image.layers[0].digest
    for tag in ("1", "latest"):
        # Once per tag, named as the layer's extraction, as its own job would have failed.
        assert summary.count(f"{repo_name}/app:{tag}\n") == 1, summary
    assert summary.count(f"extract-layer: layer {layer}: ") == 2 and "diff_id" in summary, summary
    assert not (workdir.root / registry.host / repo_name).exists(), "nothing published"


def resolve_into(tmp_path: Path, registry: LocalRegistry, *entries: str) -> Store:
    """Resolve `entries` (what the Snakefile does before the DAG); the store."""
    config = validate_config({"registries": {registry.host: {"insecure": True}}, "work_dir": str(tmp_path / "work")})
    store = store_for(config)
    result = Resolver(config, store).run(parse_recipe(list(entries)))
    assert result.failures == []
    return store


def test_small_layers_of_changed_images_are_fetched_while_resolving(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    small = good_image("small\n")
    oci.push(registry, f"{repo_name}/app", "1", small)
    store = resolve_into(tmp_path, registry, f"http://{registry.host}/{repo_name}/app:1")
    assert store.blob(small.layers[0].digest).is_file()


def test_no_small_layer_is_fetched_past_the_prefetch_time(
    tmp_path: Path, registry: LocalRegistry, repo_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = good_image("late\n")
    oci.push(registry, f"{repo_name}/app", "1", small)
    monkeypatch.setattr(resolve, "PREFETCH_SECONDS", -1)  # already past: its job fetches it
    store = resolve_into(tmp_path, registry, f"http://{registry.host}/{repo_name}/app:1")
    assert not store.blob(small.layers[0].digest).exists()
    assert store.blob(small.config_digest).is_file(), "the config is fetched whatever the time"


@pytest.mark.workflow
def test_a_name_that_cannot_be_published_stops_no_other_name_of_its_image(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    image = good_image("three tags\n")
    for tag in ("1", "2", "3"):
        oci.push(registry, f"{repo_name}/app", tag, image)
    workdir.configure([f"http://{registry.host}/{repo_name}/app:*"])
    blocked = workdir.root / registry.host / repo_name / "app:2"
    blocked.mkdir(parents=True)  # a real directory where the link must go: never replaced
    (blocked / "keep").write_text("an operator's file\n")
    preview = workdir.run("-n", "--printshellcmds")
    assert preview.returncode == 0, preview.stderr
    commands = [line for line in preview.stdout.splitlines() if " publish --settings " in line]
    assert len(commands) == 1 and "app:" not in commands[0], "one job; its command does not grow with the names"

    done = workdir.run()
    logs = [path.read_text() for path in (workdir.directory / "work/logs/publish_image").rglob("*.log")]
    output = done.stdout + done.stderr + "".join(logs)
    assert done.returncode != 0, output
    relative = blocked.relative_to(workdir.directory)  # as the job names it, from the workflow directory
    assert f"{relative} is a real directory, not a link we published; remove it by hand" in output
    for tag in ("1", "3"):
        assert (workdir.root / registry.host / repo_name / f"app:{tag}" / "etc/id").read_text() == "three tags\n"
    assert (blocked / "keep").read_text() == "an operator's file\n" and not blocked.is_symlink()
    assert not list((workdir.directory / "work/published_flats").glob("*.json")), "the job is not done"

    # A sync of one tag (the push webhook's `only`) publishes that tag, not its stale sibling.
    oci.push(registry, f"{repo_name}/app", "4", image)
    one = workdir.run("--config", f"only={registry.host}/{repo_name}/app:4")
    assert one.returncode == 0, one.stdout + one.stderr
    assert published_in(one.stdout + one.stderr) == [f"{registry.host}/{repo_name}/app:4"]
    assert (workdir.root / registry.host / repo_name / "app:4" / "etc/id").read_text() == "three tags\n"
    assert not blocked.is_symlink()

    shutil.rmtree(blocked)
    again = workdir.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert published_in(again.stdout + again.stderr) == [f"{registry.host}/{repo_name}/app:2"]
    assert (blocked / "etc/id").read_text() == "three tags\n"
