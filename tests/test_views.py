"""The views of the service on real syncs (docker-registry, real runs): `unpacked status`, the run
history, `snakemake --report`, the index page in the root and the metrics file.

One recipe: a:1 and b:1 sync, bad:1 has a layer whose content does not match its diff_id, and
missing:1 does not exist. b:1 then moves upstream. Each view must say exactly what happened.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import oci
from support.registry import LocalRegistry
from support.workflow import REPO, SNAKEMAKE, bad_diff_id_image, good_image, run_workflow, workflow_env, write_config

pytestmark = pytest.mark.workflow

UNPACKED = str(SNAKEMAKE.with_name("unpacked"))


def unpacked(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [UNPACKED, *args, "--settings", "work/state/settings.json"]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=300, check=False)


def status(directory: Path, *args: str) -> list[dict[str, Any]]:
    done = unpacked(directory, "status", "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def history(directory: Path) -> list[dict[str, Any]]:
    done = unpacked(directory, "history", "--json", "-n", "100")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@dataclass
class Synced:
    directory: Path
    registry: LocalRegistry
    digests: dict[str, str]  # tag -> manifest digest pushed first
    moved_b: str  # b:1's manifest digest after it moved

    def name(self, tag: str) -> str:
        return f"{self.registry.host}/views/{tag}"


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    """Three real runs: the first sync, a dry-run after b:1 moved, then the sync of the move."""
    top = tmp_path_factory.mktemp("views")
    with LocalRegistry(workdir=top / "registry") as registry:
        digests = {
            "a:1": oci.push(registry, "views/a", "1", good_image("a\n")),
            "b:1": oci.push(registry, "views/b", "1", good_image("b\n")),
            "bad:1": oci.push(registry, "views/bad", "1", bad_diff_id_image()),
        }
        directory = top / "w"
        entries = [f"http://{registry.host}/views/{tag}" for tag in ("a:1", "b:1", "bad:1", "missing:1")]
        write_config(directory, entries, {registry.host: {"insecure": True}})
        first = run_workflow(directory)
        assert first.returncode != 0, "bad:1 and missing:1 fail the run"
        moved = oci.push(registry, "views/b", "1", good_image("b, moved\n"))
        yield Synced(directory, registry, digests, moved)


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


def test_status_after_a_first_sync_with_failures(synced: Synced) -> None:
    rows = by_name(status(synced.directory))
    assert sorted(rows) == sorted(synced.name(tag) for tag in ("a:1", "b:1", "bad:1", "missing:1"))
    a = rows[synced.name("a:1")]
    assert (a["state"], a["manifest_digest"], a["error"]) == ("ok", synced.digests["a:1"], "")
    assert a["files"] == 1 and a["layers"] == 1 and a["size_bytes"] > 0 and a["platform"] == "linux/amd64"
    assert a["last_synced"] and a["last_synced"] == a["last_changed"] and a["age_seconds"] < 600
    bad = rows[synced.name("bad:1")]
    assert bad["state"] == "failed" and "diff_id" in bad["error"] and bad["last_synced"] == ""
    missing = rows[synced.name("missing:1")]
    assert missing["state"] == "failed" and "not found" in missing["error"] and missing["manifest_digest"] == ""

    failed = status(synced.directory, "--failed")
    assert sorted(row["name"] for row in failed) == [synced.name("bad:1"), synced.name("missing:1")]
    assert [row["name"] for row in status(synced.directory, "*/views/a:*")] == [synced.name("a:1")]
    never_synced = {row["name"] for row in status(synced.directory, "--stale", "1h")}
    assert never_synced == {synced.name("bad:1"), synced.name("missing:1")}, "synced names are not stale"

    table = unpacked(synced.directory, "status")
    assert table.returncode == 0
    assert re.search(
        rf"{re.escape(synced.name('a:1'))}\s+linux/amd64\s+ok\s+{synced.digests['a:1'][7:19]}", table.stdout
    )
    markdown = unpacked(synced.directory, "status", "--format", "markdown").stdout
    assert markdown.startswith("| name | platform | state |") and synced.name("bad:1") in markdown
    csv = unpacked(synced.directory, "status", "--format", "csv").stdout.splitlines()
    assert csv[0].startswith("name,registry,repository,tag,platform,manifest_digest") and len(csv) == 5
    bad_age = unpacked(synced.directory, "status", "--stale", "two days")
    assert bad_age.returncode == 1 and "--stale" in bad_age.stderr and "is not an age" in bad_age.stderr


def test_history_of_the_first_sync_lists_exactly_its_changes(synced: Synced) -> None:
    first = history(synced.directory)[0]
    assert first["kind"] == "sync" and first["status"] == "failed" and first["start"] <= first["end"]
    changed = {change["name"]: change for change in first["changed"]}
    assert sorted(changed) == [synced.name("a:1"), synced.name("b:1")]
    assert changed[synced.name("a:1")]["old"] is None
    assert changed[synced.name("a:1")]["new"]["digest"] == synced.digests["a:1"]
    failures = {failure.get("reference") or failure["names"][0]: failure for failure in first["failures"]}
    assert f"http://{synced.registry.host}/views/missing:1" in failures
    assert synced.name("bad:1") in failures and "diff_id" in failures[synced.name("bad:1")]["error"]
    assert first["counts"]["changed"] == 2 and first["counts"]["failures"] == 2
    assert set(first["stage_seconds"]) == {"flatten", "publish"}, (
        "small layers: fetched while resolving, extracted inline"
    )


def test_a_move_upstream_shows_in_status_then_in_history(synced: Synced) -> None:
    dry = run_workflow(synced.directory, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    runs_before = len(history(synced.directory))
    assert runs_before == 1 and not (synced.directory / "work" / "history" / "current.json").exists(), (
        "a dry-run writes no history"
    )
    b = by_name(status(synced.directory))[synced.name("b:1")]
    assert b["state"] == "changed upstream" and b["manifest_digest"] == synced.moved_b
    # The page says what users get now: the link's target, the older image.
    assert unpacked(synced.directory, "views").returncode == 0
    page = json.loads((synced.directory / "output/.metadata/index.json").read_text())
    [shown] = [image for image in page["images"] if image["name"] == synced.name("b:1")]
    link = synced.directory / "output" / synced.name("b:1")
    assert shown["state"] == "changed upstream" and shown["points_to"] == os.readlink(link)

    second = run_workflow(synced.directory)
    assert second.returncode != 0
    lines = history(synced.directory)
    assert len(lines) == runs_before + 1
    [change] = lines[-1]["changed"]
    assert change["name"] == synced.name("b:1")
    assert (change["old"]["digest"], change["new"]["digest"]) == (synced.digests["b:1"], synced.moved_b)
    rows = by_name(status(synced.directory))
    assert rows[synced.name("b:1")]["state"] == "ok" and rows[synced.name("b:1")]["manifest_digest"] == synced.moved_b
    assert rows[synced.name("a:1")]["last_changed"] < rows[synced.name("b:1")]["last_changed"]


def test_a_run_with_nothing_to_do_is_recorded_too(synced: Synced, tmp_path: Path) -> None:
    entries = [f"http://{synced.registry.host}/views/a:1"]
    write_config(tmp_path, entries, {synced.registry.host: {"insecure": True}})
    assert run_workflow(tmp_path).returncode == 0
    idle = run_workflow(tmp_path)
    assert idle.returncode == 0 and "Nothing to be done" in idle.stdout + idle.stderr
    lines = history(tmp_path)
    assert [line["status"] for line in lines] == ["ok", "ok"]
    assert lines[1]["changed"] == [] and lines[1]["counts"]["images"] == 1
    assert (lines[0]["jobs_ran"], lines[1]["jobs_ran"]) == (True, False)


def test_a_run_killed_outright_is_recorded_as_interrupted_by_the_next(synced: Synced, tmp_path: Path) -> None:
    entries = [f"http://{synced.registry.host}/views/a:1"]
    write_config(tmp_path, entries, {synced.registry.host: {"insecure": True}})
    journal = tmp_path / "work/history/current.json"  # what a run killed with kill -9 leaves
    journal.parent.mkdir(parents=True)
    journal.write_text(
        json.dumps({"kind": "sync", "start": "2026-12-01T00:00:00Z", "who": "x@y", "pending": {"n": {}}})
    )
    assert run_workflow(tmp_path).returncode == 0
    first, second = history(tmp_path)
    assert (first["status"], first["start"], first["end"], first["counts"]) == (
        "interrupted",
        "2026-12-01T00:00:00Z",
        None,
        {"pending": 1},
    )
    assert second["status"] == "ok" and [change["name"] for change in second["changed"]] == [synced.name("a:1")]


def test_a_run_that_stops_before_any_job_is_recorded_as_failed(synced: Synced, tmp_path: Path) -> None:
    """Snakemake refuses to run (the locks a killed run left): no job, and no "Nothing to be done"."""
    entries = [f"http://{synced.registry.host}/views/a:1"]
    write_config(tmp_path, entries, {synced.registry.host: {"insecure": True}})
    locks = tmp_path / ".snakemake/locks"
    locks.mkdir(parents=True)
    state = json.loads((synced.directory / "work/state/images" / f"{synced.name('a:1')}.json").read_text())
    config_hex = state["config_digest"].split(":")[1]
    (locks / "0.output.lock").write_text(f"work/published_flats/{config_hex}.json\n")
    stopped = run_workflow(tmp_path)
    assert stopped.returncode != 0 and "LockException" in stopped.stdout + stopped.stderr
    [line] = history(tmp_path)
    assert (line["status"], line["jobs_ran"], line["changed"]) == ("failed", False, [])
    assert line["failures"] == [
        {"step": "snakemake", "error": "the run stopped before any job ran: see Snakemake's log"}
    ]


def test_index_page_lists_every_name_with_its_times(synced: Synced) -> None:
    root = synced.directory / "output" / ".metadata"
    index = json.loads((root / "index.json").read_text())
    images = {image["name"]: image for image in index["images"]}
    assert sorted(images) == sorted(synced.name(tag) for tag in ("a:1", "b:1", "bad:1", "missing:1"))
    a = images[synced.name("a:1")]
    assert a["points_to"].startswith("../../.flat/") and a["last_synced"] and a["last_changed"]
    assert (synced.directory / "output" / synced.name("a:1")).resolve().name == a["points_to"].rsplit("/", 1)[1]
    assert images[synced.name("bad:1")]["state"] == "failed" and "diff_id" in images[synced.name("bad:1")]["error"]
    assert index["last_run"]["status"] == "failed" and index["last_successful_run"] is None
    page = (root / "index.html").read_text()
    for name, image in images.items():
        assert name in page
        if image["last_synced"]:
            assert image["last_synced"] in page


def test_metrics_file_counts_the_states(synced: Synced) -> None:
    rows = status(synced.directory)
    metrics = (synced.directory / "work" / "unpacked.prom").read_text()
    for state in ("ok", "failed"):
        count = sum(1 for row in rows if row["state"] == state)
        assert f'unpacked_images{{state="{state}"}} {count}\n' in metrics
    assert re.search(r"^unpacked_last_run_timestamp_seconds [1-9]\d{9}$", metrics, re.MULTILINE)
    assert "unpacked_last_successful_run_timestamp_seconds 0\n" in metrics


def embedded(report: str, filename: str) -> bytes:
    """A file Snakemake's report embeds as a base64 data URL."""
    match = re.search(rf"filename={re.escape(filename)};base64,([A-Za-z0-9+/=]+)", report)
    assert match, f"{filename} is not in the report"
    return base64.b64decode(match.group(1))


def test_snakemake_report_shows_the_table_and_the_plots(synced: Synced, tmp_path: Path) -> None:
    runs_before = len(history(synced.directory))
    report = tmp_path / "report.html"
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--report", str(report)]
    done = subprocess.run(
        command, cwd=synced.directory, env=workflow_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    table = embedded(text, "status.html").decode()
    for tag in ("a:1", "b:1", "bad:1", "missing:1"):
        assert synced.name(tag) in table
    for plot in ("age.svg", "sizes.svg", "runs.svg", "stages.svg"):
        svg = embedded(text, plot)
        assert b"<svg" in svg and len(svg) > 5000, plot
    # The plots have data: the bars are drawn as paths in the SVG, one per image or run.
    assert embedded(text, "sizes.svg").count(b'id="patch_') >= 3
    assert len(history(synced.directory)) == runs_before, "a report is not a sync: no history line"


# `unpacked views` whose rename of index.json waits: the new page is written, not yet in place.
SLOW_RENAME = """
import os, sys, time
from unpacked.cli import main
real_replace = os.replace
def slow_replace(source, target, **kwargs):
    if str(target).endswith("index.json"):
        time.sleep(60)
    return real_replace(source, target, **kwargs)
os.replace = slow_replace
main(["views", "--settings", "work/state/settings.json"])
"""


def test_index_page_survives_kill_9_mid_write(synced: Synced) -> None:
    """Killed between writing the new page and renaming it into place: users still read the old
    page, whole. Then a write that is not killed replaces it."""
    index = synced.directory / "output" / ".metadata" / "index.json"
    page = index.with_name("index.html")
    old_index, old_page = index.read_bytes(), page.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", SLOW_RENAME], cwd=synced.directory)
    deadline = time.monotonic() + 60
    while not list(index.parent.glob(".index.json.*")):  # the new page, written under its temporary name
        assert writer.poll() is None and time.monotonic() < deadline, "the writer never reached the rename"
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert index.read_bytes() == old_index and page.read_bytes() == old_page
    assert len(json.loads(index.read_text())["images"]) == 4

    done = unpacked(synced.directory, "views")
    assert done.returncode == 0, done.stderr
    assert json.loads(index.read_text())["generated"] != json.loads(old_index)["generated"]
    assert page.read_text().rstrip().endswith("</html>")


def test_no_page_is_made_in_a_root_that_looks_unmounted(tmp_path: Path) -> None:
    """A root without .metadata/ may be an empty mount point: the page must not make it look used."""
    from unpacked.publish import DirectoryPublisher
    from unpacked.state import Resolution
    from unpacked.status import table
    from unpacked.store import Store
    from unpacked.views import write_index

    store = Store(tmp_path / "work", tmp_path / "mnt")
    store.root.mkdir()
    assert write_index(store, DirectoryPublisher(store), table(store, Resolution()), [], always=True) is False
    assert list(store.root.iterdir()) == []


def test_running_jobs_are_listed(synced: Synced) -> None:
    from unpacked.running import marked_running
    from unpacked.store import Store

    store = Store(synced.directory / "work", synced.directory / "output")
    with marked_running(store, "fetch-blob", "sha256:" + "1" * 64, synced.name("a:1")):
        shown = unpacked(synced.directory, "status", "--running").stdout
    assert "fetch-blob" in shown and synced.name("a:1") in shown
    assert unpacked(synced.directory, "status", "--running").stdout.strip() == "no jobs running"
