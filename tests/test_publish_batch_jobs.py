"""Small distinct images share publish jobs (`limits.images_per_job`, `small_image_bytes`; issue 9).

A job's process costs more than a small image, so up to `images_per_job` of them are built and
published by one job, each as its own job would: its own inputs, output and failure record. What
must hold anyway: the dry-run names exactly what changes, one image that fails stops no other, and
the next run publishes what is left, alone.
"""

from __future__ import annotations

import re

import pytest

from support import oci
from support.registry import LocalRegistry
from support.workflow import Workdir, bad_diff_id_image, good_image, published_in, rules_run

BATCH_JOB = re.compile(r"Job \d+: publish_batch (sha256:[0-9a-f]{64}): (\d+) images: ")


def push_apps(registry: LocalRegistry, repo: str, count: int) -> list[str]:
    """`count` small distinct images, apps a0, a1, ...; their recipe entries."""
    for number in range(count):
        oci.push(registry, f"{repo}/a{number}", "1", good_image(f"app {number}\n"))
    return [f"http://{registry.host}/{repo}/a{number}:1" for number in range(count)]


def name(registry: LocalRegistry, repo: str, number: int) -> str:
    return f"{registry.host}/{repo}/a{number}:1"


@pytest.mark.workflow
def test_small_images_share_publish_jobs_as_the_dry_run_says(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    workdir.configure(push_apps(registry, repo_name, 5), limits={"images_per_job": 2})
    preview = workdir.run("-n")
    assert preview.returncode == 0, preview.stderr
    # Five images, two per job: two batches, and the one left over keeps a job of its own.
    assert rules_run(preview.stdout) == ["all", "publish_batch", "publish_batch", "publish_image"], preview.stdout
    everyone = sorted(name(registry, repo_name, number) for number in range(5))
    assert published_in(preview.stdout) == everyone
    batches = BATCH_JOB.findall(preview.stdout)
    assert [count for _, count in batches] == ["2", "2"], preview.stdout

    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert sorted(BATCH_JOB.findall(output)) == sorted(batches), "the run formed the jobs the dry-run showed"
    for number in range(5):
        link = workdir.root / registry.host / repo_name / f"a{number}:1"
        assert (link / "etc/id").read_text() == f"app {number}\n"
    flats = list((workdir.directory / "work/published_flats").glob("*.json"))
    assert len(flats) == 5, "each image of a batch has its own job output, as its own job would write"

    again = workdir.run("-n")
    assert again.returncode == 0 and rules_run(again.stdout) == [], again.stdout + again.stderr


@pytest.mark.workflow
@pytest.mark.parametrize("limits", [{"images_per_job": 1}, {"small_image_bytes": 100}], ids=["one-per-job", "big"])
def test_images_that_are_not_batched_keep_a_job_each(
    workdir: Workdir, registry: LocalRegistry, repo_name: str, limits: dict[str, int]
) -> None:
    workdir.configure(push_apps(registry, repo_name, 3), limits=limits)
    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert rules_run(output) == ["all", "publish_image", "publish_image", "publish_image"], output
    assert not (workdir.directory / "work/state/batches").exists()


@pytest.mark.workflow
def test_an_image_that_fails_in_a_batch_stops_no_other_and_is_retried_alone(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    entries = push_apps(registry, repo_name, 2)
    oci.push(registry, f"{repo_name}/corrupt", "1", bad_diff_id_image())
    entries.append(f"http://{registry.host}/{repo_name}/corrupt:1")
    oci.push(registry, f"{repo_name}/blocked", "1", good_image("blocked\n"))
    entries.append(f"http://{registry.host}/{repo_name}/blocked:1")
    workdir.configure(entries, limits={"images_per_job": 10})
    blocked = workdir.root / registry.host / repo_name / "blocked:1"
    blocked.mkdir(parents=True)  # a real directory where the link must go: never replaced
    (blocked / "keep").write_text("an operator's file\n")

    done = workdir.run()
    logs = [path.read_text() for path in (workdir.directory / "work/logs/publish_batch").glob("*.log")]
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert rules_run(output) == ["publish_batch"], output  # not "all": the run failed
    assert len(logs) == 1
    assert "uncompressed content has digest" in logs[0] and "config says diff_id" in logs[0], logs[0]
    assert "is a real directory, not a link we published; remove it by hand" in logs[0], logs[0]
    for number in range(2):  # the good images of the batch are published all the same
        assert (workdir.root / registry.host / repo_name / f"a{number}:1" / "etc/id").read_text() == f"app {number}\n"
    assert not (workdir.root / registry.host / repo_name / "corrupt:1").exists()
    assert (blocked / "keep").read_text() == "an operator's file\n" and not blocked.is_symlink()
    assert not list((workdir.directory / "work/published_batches").glob("*.json")), "the batch is not done"
    # Each image also has its own log, where a job of its own would have written it.
    own = [path.read_text() for path in (workdir.directory / "work/logs/publish_image").glob("*.log")]
    assert len(own) == 4, own
    assert all(re.search(r"image \d of 4 of publish_batch sha256:[0-9a-f]{64}", text) for text in own), own
    assert sum("config says diff_id" in text for text in own) == 1
    assert sum("is a real directory, not a link we published" in text for text in own) == 1
    # The run's summary names each image that failed, as for images with jobs of their own.
    assert f"{registry.host}/{repo_name}/corrupt:1" in output and f"{registry.host}/{repo_name}/blocked:1" in output

    # Next run: only the two that failed, in a batch of their own.
    again = workdir.run("-n")
    assert again.returncode == 0, again.stderr
    failed = [f"{registry.host}/{repo_name}/blocked:1", f"{registry.host}/{repo_name}/corrupt:1"]
    assert published_in(again.stdout) == failed, again.stdout
    assert rules_run(again.stdout) == ["all", "publish_batch"], again.stdout

    workdir.configure(entries[:2] + entries[3:], limits={"images_per_job": 10})  # the corrupt image dropped
    blocked.joinpath("keep").unlink()
    blocked.rmdir()
    last = workdir.run()
    assert last.returncode == 0, last.stdout + last.stderr
    assert published_in(last.stdout + last.stderr) == [f"{registry.host}/{repo_name}/blocked:1"]
    assert (blocked / "etc/id").read_text() == "blocked\n"
