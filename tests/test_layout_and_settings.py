"""The layout a sync may write, and the settings its jobs read: refused when unsafe, never changed mid-run.

A work directory inside the output root would publish blobs and state to users and let garbage
collection reach into extracted layers; a second invocation with other settings must neither write
anything before the run lock refuses it nor change what the running sync's jobs read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import oci
from support.proxy import Fault, FaultProxy
from support.registry import LocalRegistry
from support.workflow import run_workflow, snakemake_command, workflow_env, write_config

pytestmark = pytest.mark.workflow


def image(text: str) -> oci.Image:
    return oci.build_image([oci.TarLayer().add_dir("etc").add_file("etc/id", text.encode()).tar_bytes()])


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


@pytest.mark.parametrize(
    ("work_dir", "output_root", "message"),
    [
        ("output/work", "output", "overlap"),
        ("tree", "tree", "overlap"),
        ("work", "work/published", "overlap"),
        ("work", "", "overlap"),
        ("work", ".", "overlap"),
        (".", "output", "overlap"),
        ("{outside}", ".", "contains the workflow directory"),
    ],
)
def test_overlapping_layouts_are_refused_before_anything_is_written(
    tmp_path: Path, registry: LocalRegistry, repo_name: str, work_dir: str, output_root: str, message: str
) -> None:
    oci.push(registry, repo_name, "1", image("x\n"))
    run, outside = tmp_path / "run", tmp_path / "outside-work"
    work_dir = work_dir.format(outside=outside)
    recipe = [f"http://{registry.host}/{repo_name}:1"]
    write_config(run, recipe, {registry.host: {"insecure": True}}, work_dir=work_dir, output_root=output_root)
    before = files_under(run)
    done = run_workflow(run)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert message in output and "output_root" in output, output
    written = [p for p in files_under(run) if p not in before and not p.startswith(".snakemake")]
    assert written == [], f"nothing may be written for a refused layout: {written}"
    assert not outside.exists()


def test_gc_only_considers_names_the_layout_defines(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, f"{repo_name}/app", "1", image("app\n"))
    run = tmp_path / "run"
    write_config(run, [f"http://{registry.host}/{repo_name}/app:1"], {registry.host: {"insecure": True}})
    assert run_workflow(run).returncode == 0
    root = run / "output"
    # Links an operator (or another tool) put into the root: none of them is a name we publish.
    foreign = {
        "notes": "/etc",  # not a registry/repository:tag
        f"{registry.host}/{repo_name}/readme": "../../../.flat",  # no tag
        f"{registry.host}/{repo_name}/app:latest-copy": "/srv/images/app",  # a name, but not into .flat
        f"{registry.host}/{repo_name}/tools/bin/sh": "busybox",  # inside a directory tree of someone's
        ".cache/x:1": "../.flat/aa/" + "a" * 64,  # under a dot directory
    }
    for name, target in foreign.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / name)
    done = subprocess.run(
        [sys.executable, "-m", "unpacked.cli", "gc", "--settings", "work/state/settings.json", "--prune"],
        cwd=run,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"links": 0' in done.stdout, done.stdout
    for name, target in foreign.items():
        assert os.readlink(root / name) == target, f"{name} is not ours and must stay"
    assert (root / registry.host / repo_name / "app:1/etc/id").read_text() == "app\n"


def test_a_second_invocation_cannot_change_a_running_sync(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    """While a sync runs, `snakemake -n --config output_root=X` is refused and changes nothing: the
    running sync still publishes into its own root, and X is never created."""
    names = [f"{repo_name}/app{n}" for n in range(3)]
    for number, name in enumerate(names):
        oci.push(registry, name, "1", image(f"{number}\n"))
    with FaultProxy(registry.url) as proxy:
        proxy.add(Fault(path=r"/blobs/", method="GET", delay=2.0))  # every download is slow
        run = tmp_path / "run"
        # Layers fetched by jobs, not while resolving: the sync must still be running its jobs.
        entries = [f"http://{proxy.host}/{n}:1" for n in names]
        write_config(run, entries, {proxy.host: {"insecure": True}}, limits={"prefetch_layer_bytes": 0})
        log = tmp_path / "running.log"
        with log.open("w") as sink:  # the child keeps its own copy of the descriptor
            running = subprocess.Popen(
                snakemake_command(run, "--cores", "1"),
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=workflow_env(),
            )
        try:
            # Snakemake prints its job stats once the DAG is built: the main process has written all
            # of its state by then (resolved.json alone comes before the realms are saved).
            deadline = time.monotonic() + 60
            while "Job stats:" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "Job stats:" in log.read_text(), "the first sync never got past resolution"
            settings_before = (run / "work/state/settings.json").read_bytes()
            state_before = {p: p.read_bytes() for p in (run / "work/state").rglob("*.json")}

            second = run_workflow(run, "-n", "--config", "output_root=elsewhere")
            assert second.returncode != 0
            assert "is in use by a running sync" in second.stdout + second.stderr
            assert (run / "work/state/settings.json").read_bytes() == settings_before
            assert {p: p.read_bytes() for p in (run / "work/state").rglob("*.json")} == state_before
        finally:
            running.wait(timeout=300)
    output = log.read_text()
    assert running.returncode == 0, output
    assert not (run / "elsewhere").exists(), "the refused invocation's root must never be created"
    for number, name in enumerate(names):
        assert (run / "output" / proxy.host / f"{name}:1" / "etc/id").read_text() == f"{number}\n"


def test_jobs_read_settings_named_by_their_digest(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    """The settings file a job is given never changes: other settings get another file."""
    oci.push(registry, repo_name, "1", image("x\n"))
    run = tmp_path / "run"
    write_config(run, [f"http://{registry.host}/{repo_name}:1"], {registry.host: {"insecure": True}})
    done = run_workflow(run, "--printshellcmds")
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    used = {part for line in printed.splitlines() for part in line.split() if "/state/settings/" in part}
    assert len(used) == 1, printed
    first = run / used.pop()
    content = first.read_bytes()
    assert json.loads(content)["output_root"] == "output"
    write_config(
        run, [f"http://{registry.host}/{repo_name}:1"], {registry.host: {"insecure": True}}, output_root="other"
    )
    assert run_workflow(run).returncode == 0
    assert first.read_bytes() == content, "a later run with other settings must not rewrite this one's"
    assert len(list((run / "work/state/settings").glob("*.json"))) == 2


@pytest.mark.parametrize("how", ["file", "command line"])
def test_offline_must_be_a_boolean(tmp_path: Path, registry: LocalRegistry, repo_name: str, how: str) -> None:
    oci.push(registry, repo_name, "1", image("x\n"))
    run = tmp_path / "run"
    extra = {"offline": "maybe"} if how == "file" else {}
    write_config(run, [f"http://{registry.host}/{repo_name}:1"], {registry.host: {"insecure": True}}, **extra)
    args = ["--config", "offline=maybe"] if how == "command line" else []
    done = run_workflow(run, *args)
    assert done.returncode != 0
    assert "offline: expected true or false, got 'maybe'" in done.stdout + done.stderr
    assert not (run / "output").exists() and not (run / "work/state/images").exists()


def test_offline_without_a_resolution_is_refused(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, repo_name, "1", image("x\n"))
    run = tmp_path / "run"
    write_config(run, [f"http://{registry.host}/{repo_name}:1"], {registry.host: {"insecure": True}}, offline=True)
    done = run_workflow(run)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "holds no resolution yet" in output and "run once without offline=true" in output, output
    assert "all images in sync" not in output
    assert not (run / "output").exists()
    # Resolved once online, the same offline run works from the saved state.
    write_config(run, [f"http://{registry.host}/{repo_name}:1"], {registry.host: {"insecure": True}})
    assert run_workflow(run).returncode == 0
    assert run_workflow(run, "--config", "offline=true").returncode == 0


@pytest.mark.parametrize("word", ["1", "yes", "True"])
def test_offline_words_on_the_command_line(tmp_path: Path, registry: LocalRegistry, repo_name: str, word: str) -> None:
    oci.push(registry, repo_name, "1", image("x\n"))
    run = tmp_path / "run"
    write_config(run, [f"http://{registry.host}/{repo_name}:1"], {registry.host: {"insecure": True}})
    assert run_workflow(run).returncode == 0
    done = run_workflow(run, "--config", f"offline={word}")
    assert done.returncode == 0, done.stdout + done.stderr
