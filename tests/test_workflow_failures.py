"""Failures in a whole-workflow run: isolated per image, summarised, ignorable, nothing half-written."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from support import oci
from support.lint_workflow import unexpected_lints
from support.proxy import Fault, FaultProxy
from support.registry import LocalRegistry
from support.tokenserver import TokenServer
from support.workflow import (
    SNAKEMAKE,
    Workdir,
    bad_diff_id_image,
    good_image,
    parse_jobs,
    published_in,
    snakemake_command,
    tree,
)

pytestmark = pytest.mark.workflow


def test_failing_images_do_not_stop_the_others(workdir: Workdir, registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, f"{repo_name}/good", "1", good_image("good\n"))
    oci.push(registry, f"{repo_name}/corrupt", "1", bad_diff_id_image())
    workdir.configure(
        [
            f"http://{registry.host}/{repo_name}/good:1",
            f"http://{registry.host}/{repo_name}/corrupt:1",
            f"http://{registry.host}/{repo_name}/missing:1",
        ]
    )
    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    good = workdir.root / registry.host / repo_name / "good:1"
    assert (good / "etc/id").read_text() == "good\n", "the good image is published despite the others"
    assert not (workdir.root / registry.host / repo_name / "corrupt:1").exists()
    assert not (workdir.root / registry.host / repo_name / "missing:1").exists()
    # The summary names each failed input and what went wrong.
    assert "2 image(s) failed" in output, output
    assert f"{repo_name}/missing:1" in output and "not found" in output
    assert f"{repo_name}/corrupt:1" in output and "diff_id" in output
    # Nothing half-written: no staging directories left in the root or the layer store.
    leftovers = [p for p in tree(workdir.root) + tree(workdir.directory / "work/layers") if ".tmp-" in p]
    assert leftovers == []


def test_ignored_failures_do_not_fail_the_run(workdir: Workdir, registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, f"{repo_name}/good", "1", good_image("good\n"))
    oci.push(registry, f"{repo_name}/corrupt", "1", bad_diff_id_image())
    recipe = {
        "version": 1,
        "input": [
            f"http://{registry.host}/{repo_name}/good:1",
            f"http://{registry.host}/{repo_name}/corrupt:1",
            f"http://{registry.host}/{repo_name}/missing:1",
        ],
        "ignoreErrors": [f"{registry.host}/{repo_name}/corrupt:*", f"http://{registry.host}/{repo_name}/missing:*"],
    }
    workdir.configure(recipe)
    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "ignored: matches ignoreErrors" in output
    assert (workdir.root / registry.host / repo_name / "good:1").is_symlink()
    assert not (workdir.root / registry.host / repo_name / "corrupt:1").exists()
    # The corrupt image's jobs left placeholders: a dry-run drops them and shows those jobs again
    # (and only them), and keeps the failure for `unpacked summary`.
    preview = workdir.run("-n")
    assert preview.returncode == 0, preview.stderr
    names = published_in(preview.stdout)
    assert names == [f"{registry.host}/{repo_name}/corrupt:1"], "the corrupt image only, not the good one"
    after = summary(workdir)
    assert f"{repo_name}/corrupt:1 (ignored: matches ignoreErrors)" in after.stderr and "diff_id" in after.stderr
    again = workdir.run()
    assert again.returncode == 0, again.stderr
    assert "diff_id" in again.stdout + again.stderr, "the failure is found again, not hidden by a placeholder"
    # Without the ignore list the same failures fail the run.
    recipe["ignoreErrors"] = []
    workdir.configure(recipe)
    assert workdir.run().returncode != 0


def summary(workdir: Workdir) -> subprocess.CompletedProcess[str]:
    """`unpacked summary` as an operator runs it after a sync."""
    command = [str(SNAKEMAKE.with_name("unpacked")), "summary"]
    return subprocess.run(command, cwd=workdir.directory, capture_output=True, text=True, check=False, timeout=60)


def test_exit_status_is_the_jobs(workdir: Workdir, registry: LocalRegistry, repo_name: str) -> None:
    """All good: 0. A failed image: non-zero, and a dry-run afterwards keeps the failure records."""
    oci.push(registry, f"{repo_name}/good", "1", good_image("good\n"))
    workdir.configure([f"http://{registry.host}/{repo_name}/good:1"])
    assert workdir.run().returncode == 0
    oci.push(registry, f"{repo_name}/corrupt", "1", bad_diff_id_image())
    workdir.configure([f"http://{registry.host}/{repo_name}/good:1", f"http://{registry.host}/{repo_name}/corrupt:1"])
    done = workdir.run()
    assert done.returncode == 1, done.stderr
    assert "1 image(s) failed" in done.stderr
    assert workdir.run("-n").returncode == 0
    after = summary(workdir)
    assert after.returncode == 1
    assert f"{repo_name}/corrupt:1" in after.stderr and "diff_id" in after.stderr, after.stderr
    assert "not published yet" not in after.stderr, "a dry-run must not erase the last run's records"


@pytest.mark.parametrize("command", [("--lint",), ("--list-rules",), ("--unlock",)])
def test_commands_without_a_dag_contact_no_registry_and_write_nothing(
    workdir: Workdir, command: tuple[str, ...]
) -> None:
    with socket.socket() as listener:  # a port that accepts connections and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        host = f"127.0.0.1:{listener.getsockname()[1]}"
        workdir.configure([f"http://{host}/some/image:1"])
        (workdir.directory / "work/state").mkdir(parents=True)
        with (workdir.directory / "work/state/run.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # as a running sync holds it
            done = workdir.run(*command)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    output = done.stdout + done.stderr
    if command == ("--lint",):
        assert unexpected_lints(output) == [] and "Lints for rule" in output, output
    else:
        assert done.returncode == 0, output
    assert sorted(p.name for p in (workdir.directory / "work").rglob("*")) == ["run.lock", "state"]
    assert not workdir.root.exists()


def test_unresolvable_entry_fails_even_when_nothing_else_runs(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    oci.push(registry, f"{repo_name}/good", "1", good_image("good\n"))
    workdir.configure([f"http://{registry.host}/{repo_name}/good:1"])
    assert workdir.run().returncode == 0
    workdir.configure([f"http://{registry.host}/{repo_name}/good:1", f"http://{registry.host}/{repo_name}/gone:1"])
    preview = workdir.run("-n")
    assert "rule report_unresolved:" in preview.stdout, preview.stdout
    done = workdir.run()
    assert done.returncode != 0
    assert f"{repo_name}/gone:1" in done.stdout + done.stderr


def test_previous_version_stays_when_update_is_corrupt(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    oci.push(registry, f"{repo_name}/app", "stable", good_image("v1\n"))
    workdir.configure([f"http://{registry.host}/{repo_name}/app:stable"])
    assert workdir.run().returncode == 0
    link = workdir.root / registry.host / repo_name / "app:stable"
    before = os.readlink(link)
    oci.push(registry, f"{repo_name}/app", "stable", bad_diff_id_image())
    done = workdir.run()
    assert done.returncode != 0
    assert os.readlink(link) == before, "a failed update leaves the published version in place"
    assert (link / "etc/id").read_text() == "v1\n"
    record = json.loads((workdir.root / ".metadata" / registry.host / repo_name / "app:stable/record.json").read_text())
    assert record["config_digest"].split(":")[1] == Path(before).name, "metadata still describes what is served"


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("input: [unclosed", "not valid YAML"),
        ("", "the file is empty"),
        ("{version: 1, inputs: []}", "unknown key(s) inputs"),
        ("- 'https://Registry.example/UPPER/case:1'", "entry 1"),
        ("- 'http://127.0.0.1:1/ok/repo'", "no tag or digest"),
        ("- 'https://example.org/repo@sha256:../../etc'", "invalid digest"),
    ],
)
def test_broken_recipe_is_a_clear_error_and_writes_nothing(workdir: Workdir, recipe: str, message: str) -> None:
    workdir.configure(recipe)
    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert message in output, output
    assert "recipe config/recipe.yaml" in output
    assert not workdir.root.exists(), "nothing may be written to the output root"


def test_wrong_password_is_reported_without_the_secret(tmp_path: Path, repo_name: str) -> None:
    with (
        TokenServer(tmp_path / "tokens", users={"bob": "right-password"}, allow_anonymous_pull=False) as tokens,
        LocalRegistry("token", token_server=tokens, workdir=tmp_path / "registry") as private,
    ):
        docker = tmp_path / "docker"
        docker.mkdir()
        auth = base64.b64encode(b"bob:wrong-password-123").decode()
        (docker / "config.json").write_text(json.dumps({"auths": {private.host: {"auth": auth}}}))
        workdir = Workdir(tmp_path / "run", {private.host: {"insecure": True}})
        workdir.env["DOCKER_CONFIG"] = str(docker)
        workdir.configure([f"http://{private.host}/{repo_name}/app:1"])
        done = workdir.run()
        output = done.stdout + done.stderr
        assert done.returncode != 0
        assert "token server refused user 'bob'" in output, output
        assert "wrong-password-123" not in output
        leaked = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and b"wrong-password-123" in p.read_bytes()]
        assert leaked == []


def start_big_sync(workdir: Workdir, registry: LocalRegistry, repo: str, files: int) -> subprocess.Popen[bytes]:
    """Push an image of `files` incompressible 2 MB files and start syncing it in the background."""
    big = oci.TarLayer()
    for number in range(files):
        big.add_file(f"data/blob{number}", os.urandom(2 << 20))
    oci.push(registry, repo, "1", oci.build_image([big.tar_bytes()]))
    workdir.configure([f"http://{registry.host}/{repo}:1"])
    return start_sync(workdir)


def start_sync(workdir: Workdir) -> subprocess.Popen[bytes]:
    """Start syncing `workdir` in the background, in a session of its own (to kill it whole)."""
    return subprocess.Popen(
        snakemake_command(workdir.directory),
        env=workdir.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_kill_9_during_extraction_then_rerun_completes(
    workdir: Workdir, registry: LocalRegistry, repo_name: str
) -> None:
    # A layer large enough that extraction is still running when we kill the whole workflow.
    process = start_big_sync(workdir, registry, f"{repo_name}/big", files=40)
    layers = workdir.directory / "work" / "layers"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(".tmp-" in p.name for p in layers.glob("*/*")):
            break  # extraction is under way
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before extraction could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.5)  # let the killed job's children go
    assert not (workdir.root / registry.host / repo_name / "big:1").exists()
    assert not [p for p in tree(workdir.root) if ".tmp-" in p], "nothing half-written under the root"

    # What the README tells operators to do after a kill -9: unlock, then run again.
    assert workdir.run("--unlock").returncode == 0
    done = workdir.run()
    assert done.returncode == 0, done.stdout + done.stderr
    flat = workdir.root / registry.host / repo_name / "big:1"
    assert len(list((flat / "data").iterdir())) == 40
    assert parse_jobs(workdir.run("-n").stdout) == [], "nothing left to do"
    assert not [p for p in tree(workdir.root) + tree(layers) if ".tmp-" in p]


def test_second_run_on_the_same_work_directory_waits_its_turn(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    image = good_image("app\n")
    oci.push(registry, f"{repo_name}/app", "1", image)
    with FaultProxy(registry.url) as proxy:
        # The layer download (while resolving: it is small) is held for 20 s: far longer than the
        # second invocation takes to parse.
        proxy.add(Fault(path=rf"/blobs/{image.layers[0].digest}", method="GET", delay=20.0))
        workdir = Workdir(tmp_path / "run", {proxy.host: {"insecure": True}})
        workdir.configure([f"http://{proxy.host}/{repo_name}/app:1"])
        first = start_sync(workdir)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (workdir.directory / "work/state/run.lock").exists():
                time.sleep(0.01)  # the first run holds the lock: it is resolving
            assert first.poll() is None, "the first run ended too early for this test"
            second = workdir.run("-n")
            assert first.poll() is None, "the first run ended while the second was checked"
            assert second.returncode != 0
            assert "is in use by a running sync (pid" in second.stdout + second.stderr
        finally:
            first.wait(timeout=300)
        assert first.returncode == 0
        assert workdir.run("-n").returncode == 0, "free again once the first run has finished"
