"""The whole workflow, run as `snakemake --cores 2` against real registries on 127.0.0.1.

One recipe covers several repositories, a glob tag, a multi-layer image with whiteouts, an opaque
directory and hard links, a multi-arch index and a token-authenticated registry. The tests share one
sync, which the `sync` fixture runs first (so any test also runs alone): a command inside the image,
a no-op rerun, then one tag moving upstream.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import oci
from support.registry import LocalRegistry
from support.tokenserver import TokenServer
from support.umoci_images import make_busybox_rootfs
from support.workflow import parse_jobs, published_by, run_workflow, workflow_env

pytestmark = pytest.mark.workflow


@dataclass
class Sync:
    """A workflow directory with its config, and the registries its recipe points at."""

    directory: Path
    registry: LocalRegistry
    private: LocalRegistry
    base_layer: bytes
    env: dict[str, str]
    # Jobs of the first sync: shown by its dry run, and run.
    first_preview: list[tuple[str, str]] = field(default_factory=list)
    first_done: list[tuple[str, str]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.directory / "output"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = run_workflow(self.directory, *args, env=self.env)
        if check and done.returncode != 0:
            raise AssertionError(f"snakemake failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-6000:]}")
        return done

    def jobs(self, *args: str) -> list[tuple[str, str]]:
        """(rule, wildcards) of every job Snakemake schedules (or, with -n, would schedule)."""
        done = self.run(*args)
        return parse_jobs(done.stdout + done.stderr)

    def flat(self, name: str) -> Path:
        link = self.root / name
        assert link.is_symlink(), f"{name} is not published"
        return (link.parent / os.readlink(link)).resolve()


def blob_gets(registry_log: str) -> list[str]:
    """The digests of the blobs a registry's access log shows downloaded (GET), sorted."""
    return sorted(re.findall(r'"GET /v2/[^ "]+/blobs/(sha256:[0-9a-f]{64})', registry_log))


def bwrap(flat: Path, *command: str) -> subprocess.CompletedProcess[str]:
    binary = "/usr/bin/bwrap"
    assert os.path.exists(binary), "bubblewrap is needed: apt-get install -y bubblewrap"
    return subprocess.run(
        [binary, "--ro-bind", str(flat), "/", "--proc", "/proc", "--dev", "/dev", "--unshare-all",
         "--die-with-parent", "--clearenv", "--setenv", "HOME", "/root", *command],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def build_images(sync: Sync, busybox: Path) -> None:
    base = sync.base_layer
    # A multi-layer image: whiteouts, an opaque directory, hard links within and across layers,
    # a directory replaced by a file.
    first = (
        oci.TarLayer()
        .add_dir("etc/app")
        .add_file("etc/app/conf", b"version=1\n")
        .add_file("etc/motd", b"welcome\n")
        .add_hardlink("etc/motd-link", "etc/motd")
        .add_dir("data/old")
        .add_file("data/old/a", b"a\n")
        .add_file("data/old/b", b"b\n")
        .add_dir("opt/keep")
        .add_file("opt/keep/x", b"x\n")
        .tar_bytes()
    )
    second = (
        oci.TarLayer()
        .add_whiteout("etc/motd")
        .add_dir("opt/keep")
        .add_file("opt/keep/y", b"y\n")
        .add_opaque("opt/keep")  # listed after the new file: still only hides lower children
        .add_file("etc/app/conf", b"version=2\n")
        .add_dir("usr/share")
        .add_hardlink("usr/share/conf-link", "etc/app/conf")
        .add_hardlink("bin/sh-again", "bin/busybox")  # target in a lower layer
        .tar_bytes()
    )
    third = oci.TarLayer().add_file("data/old", b"now a file\n").tar_bytes()
    config = {
        "Env": ["PATH=/bin", "GREETING=hello world", 'QUOTED=a "b" $c'],
        "Entrypoint": ["/bin/echo", "entry"],
        "Cmd": ["from-cmd"],
    }
    multi = oci.build_image([base, first, second, third], config=config)
    oci.push(sync.registry, "demo/multi", "1.0", multi)

    for tag in ("1.0", "1.1", "2.0"):
        top = oci.TarLayer().add_file("etc/tag", f"{tag}\n".encode()).tar_bytes()
        oci.push(sync.registry, "demo/tags", tag, oci.build_image([base, top]))

    def arch_image(arch: str) -> oci.Image:
        return oci.build_image(
            [base, oci.TarLayer().add_file("etc/arch", f"{arch}\n".encode()).tar_bytes()], architecture=arch
        )

    attestation = oci.build_image([oci.TarLayer().add_file("sbom.json", b"{}").tar_bytes()], architecture="unknown")
    index = oci.build_index(
        [
            (arch_image("arm64"), {"os": "linux", "architecture": "arm64", "variant": "v8"}),
            (arch_image("amd64"), {"os": "linux", "architecture": "amd64"}),
            (attestation, {"os": "unknown", "architecture": "unknown"}),
        ]
    )
    oci.push(sync.registry, "demo/multiarch", "latest", index)

    private = oci.build_image([base, oci.TarLayer().add_file("etc/secret", b"private\n").tar_bytes()])
    oci.push(sync.private, "team/private", "1.0", private)


@pytest.fixture(scope="module")
def unsynced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sync]:
    """The registries, their images and the workflow directory, before any run."""
    top = tmp_path_factory.mktemp("workflow")
    busybox = make_busybox_rootfs(top / "busybox")
    with (
        LocalRegistry(workdir=top / "registry") as registry,
        TokenServer(top / "tokens", users={"alice": "s3cret-pass"}, allow_anonymous_pull=False) as tokens,
        LocalRegistry("token", token_server=tokens, workdir=top / "private") as private,
    ):
        directory = top / "run"
        (directory / "config").mkdir(parents=True)
        docker_config = top / "docker"
        docker_config.mkdir()
        auth = base64.b64encode(b"alice:s3cret-pass").decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {private.host: {"auth": auth}}}))
        env = workflow_env(DOCKER_CONFIG=str(docker_config))
        sync = Sync(directory, registry, private, oci.tree_layer(busybox), env)
        build_images(sync, busybox)
        recipe = {
            "version": 1,
            "input": [
                f"http://{registry.host}/demo/multi:1.0",
                f"http://{registry.host}/demo/tags:1.*",
                f"{registry.host}/demo/multiarch:latest",
                f"http://{private.host}/team/private:1.0",
                f"http://{registry.host}/demo/multi:1.0",  # duplicate: merged
            ],
        }
        (directory / "config" / "recipe.yaml").write_text(json.dumps(recipe))
        settings = {
            "recipe": "config/recipe.yaml",
            "output_root": "output",
            "work_dir": "work",
            "registries": {registry.host: {"insecure": True}, private.host: {"insecure": True}},
        }
        (directory / "config" / "config.yaml").write_text(json.dumps(settings))
        yield sync


@pytest.fixture(scope="module")
def sync(unsynced: Sync) -> Sync:
    """The first sync, done before whichever test of this file runs first, even alone."""
    unsynced.first_preview = unsynced.jobs("-n")
    unsynced.first_done = unsynced.jobs()
    return unsynced


NAMES = [
    "demo/multi:1.0",
    "demo/tags:1.0",
    "demo/tags:1.1",
    "demo/multiarch:latest",
    "team/private:1.0",
]


def test_first_sync_publishes_every_image(sync: Sync) -> None:
    preview, done = sync.first_preview, sync.first_done
    assert sorted(preview) == sorted(done), "the dry-run must show exactly the work the run does"
    host, private = sync.registry.host, sync.private.host
    expected = sorted(f"{private if name.startswith('team/') else host}/{name}" for name in NAMES)
    assert published_by(done) == expected, done
    for name in NAMES:
        registry = private if name.startswith("team/") else host
        link = sync.root / registry / name
        assert link.is_symlink(), f"{link} missing"
        target = os.readlink(link)
        depth = name.count("/") + 1
        assert target.startswith("../" * depth + ".flat/"), target
        assert (sync.root / registry / name).resolve().is_dir()
    # The glob matched 1.0 and 1.1 only.
    assert not (sync.root / host / "demo/tags:2.0").exists()
    # The base layer is shared by every image: fetched and extracted once.
    extracted = [w for rule, w in done if rule == "extract_layer"]
    assert len(extracted) == len(set(extracted))
    fetched = blob_gets(sync.registry.log)
    assert fetched and len(fetched) == len(set(fetched)), fetched


def test_layers_applied_with_oci_rules(sync: Sync) -> None:
    flat = sync.flat(f"{sync.registry.host}/demo/multi:1.0")
    assert not (flat / "etc/motd").exists(), "whiteout must delete the lower file"
    assert (flat / "etc/motd-link").read_text() == "welcome\n", "a hard link keeps the content"
    assert sorted(p.name for p in (flat / "opt/keep").iterdir()) == ["y"], "opaque dir hides lower children only"
    assert (flat / "etc/app/conf").read_text() == "version=2\n"
    conf, link = (flat / "etc/app/conf").stat(), (flat / "usr/share/conf-link").stat()
    assert (conf.st_ino, conf.st_dev) == (link.st_ino, link.st_dev), "same-layer hard link kept"
    busybox, again = (flat / "bin/busybox").stat(), (flat / "bin/sh-again").stat()
    assert busybox.st_ino == again.st_ino, "hard link to a lower layer resolved"
    assert (flat / "data/old").read_text() == "now a file\n", "directory replaced by a file"
    assert not list(flat.rglob(".wh.*")), "whiteout files are never part of the result"
    multiarch = sync.flat(f"{sync.registry.host}/demo/multiarch:latest")
    assert (multiarch / "etc/arch").read_text() == "amd64\n", "linux/amd64 chosen from the index"
    assert (sync.flat(f"{sync.private.host}/team/private:1.0") / "etc/secret").read_text() == "private\n"


def test_metadata_records_what_was_published(sync: Sync) -> None:
    name = f"{sync.registry.host}/demo/multiarch:latest"
    meta = sync.root / ".metadata" / name
    record = json.loads((meta / "record.json").read_text())
    manifest = (meta / "manifest.json").read_bytes()
    assert oci.sha256(manifest) == record["manifest_digest"]
    assert record["platform"] == "linux/amd64"
    assert record["source_digest"] != record["manifest_digest"], "the tag points at an index"
    assert sync.flat(name).name == record["config_digest"].split(":")[1]
    assert oci.sha256((meta / "config.json").read_bytes()) == record["config_digest"]
    assert record["last_synced"] and record["last_changed"]


def test_command_runs_inside_published_image(sync: Sync) -> None:
    flat = sync.flat(f"{sync.registry.host}/demo/multi:1.0")
    done = bwrap(flat, "/bin/sh", "-c", "cat /etc/app/conf /etc/motd-link")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "version=2\nwelcome\n"
    env = bwrap(flat, "/.singularity.d/actions/exec", "/bin/sh", "-c", 'echo "$GREETING|$QUOTED|$PATH"')
    assert env.returncode == 0, env.stderr
    assert env.stdout == 'hello world|a "b" $c|/bin\n'
    run = bwrap(flat, "/.singularity.d/actions/run")
    assert (run.returncode, run.stdout) == (0, "entry from-cmd\n"), run.stderr
    replaced = bwrap(flat, "/.singularity.d/actions/run", "given")
    assert (replaced.returncode, replaced.stdout) == (0, "entry given\n"), replaced.stderr


def test_noop_rerun_runs_no_job(sync: Sync) -> None:
    states = sorted((sync.directory / "work/state/images").rglob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in states}
    assert sync.jobs("-n") == []
    done = sync.run()
    assert parse_jobs(done.stdout + done.stderr) == []
    assert "Nothing to be done" in done.stdout + done.stderr
    assert {p: p.stat().st_mtime_ns for p in states} == before, "unchanged state files are not rewritten"


def test_moved_tag_rebuilds_that_image_alone(sync: Sync) -> None:
    name = f"{sync.registry.host}/demo/tags:1.1"
    old_flat = sync.flat(name)
    other = sync.flat(f"{sync.registry.host}/demo/tags:1.0")
    top = oci.TarLayer().add_file("etc/tag", b"1.1 rebuilt\n").tar_bytes()
    image = oci.build_image([sync.base_layer, top])
    oci.push(sync.registry, "demo/tags", "1.1", image)

    log_before = sync.registry.log
    preview = sync.jobs("-n")
    done = sync.jobs()
    assert sorted(preview) == sorted(done), "the dry-run must show exactly the work the run does"
    rules = sorted(rule for rule, _ in done)
    # One job: the new layer, used by this image alone, is extracted by its publish job.
    assert rules == ["all", "publish_image"], done
    new_layer = image.layers[1].digest.split(":")[1]
    assert (sync.directory / "work/layers" / new_layer[:2] / new_layer / "layer.json").is_file()
    # A small layer is fetched while resolving, with the config: nothing else is downloaded.
    assert blob_gets(sync.registry.log[len(log_before) :]) == sorted([image.layers[1].digest, image.config_digest])
    assert published_by(done) == [name], "the other tag of its old image is not published again"

    new_flat = sync.flat(name)
    assert new_flat != old_flat
    assert (new_flat / "etc/tag").read_text() == "1.1 rebuilt\n"
    assert old_flat.is_dir(), "the previous version stays until garbage collection"
    assert sync.flat(f"{sync.registry.host}/demo/tags:1.0") == other
    record = json.loads((sync.root / ".metadata" / name / "record.json").read_text())
    assert record["config_digest"] == image.config_digest
    assert sync.jobs("-n") == []


def test_offline_run_sends_no_request(sync: Sync) -> None:
    requests_before = sync.registry.log.count('"GET /v2/') + sync.registry.log.count('"HEAD /v2/')
    done = sync.run("--config", "offline=true")
    assert parse_jobs(done.stdout + done.stderr) == []
    requests_after = sync.registry.log.count('"GET /v2/') + sync.registry.log.count('"HEAD /v2/')
    assert requests_after == requests_before
    # ...while an online no-op run sends one HEAD per tag and no GET at all.
    log_before = sync.registry.log
    sync.run()
    new = sync.registry.log[len(log_before) :]
    assert new.count('"GET /v2/') == 1, "only the glob's tag list"
    heads = new.count('"HEAD /v2/')
    assert heads == 4, f"one HEAD per tag on this registry, got {heads}"
