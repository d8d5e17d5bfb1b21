"""The transaction-hook publisher, against a FAKE CernVM-FS (CernVM-FS does not run here).

The fake stands in for `cvmfs_server transaction/publish/abort`: `begin` takes a lock directory that
exists only while a transaction is open (a second concurrent `begin` fails, as CernVM-FS refuses a
second transaction) and each command appends to a journal, so the test can check that every change
to the root happened inside exactly one transaction.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from support import oci
from support.registry import LocalRegistry
from support.workflow import run_workflow, write_config

pytestmark = pytest.mark.workflow


def fake_cvmfs_hooks(state: Path) -> dict[str, str]:
    lock, journal = state / "transaction.open", state / "journal"
    return {
        "type": "hook",
        "begin": f"mkdir {lock} && echo begin >> {journal}",
        "commit": f"rmdir {lock} && echo commit >> {journal}",
        "abort": f"rmdir {lock} && echo abort >> {journal}",
    }


def run(directory: Path) -> subprocess.CompletedProcess[str]:
    return run_workflow(directory)


def configure(directory: Path, registry: LocalRegistry, images: list[str], publisher: dict[str, str]) -> None:
    recipe = [f"http://{registry.host}/{i}" for i in images]
    write_config(directory, recipe, {registry.host: {"insecure": True}}, output_root="cvmfs", publisher=publisher)


def test_every_publish_is_one_transaction(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    names = [f"{repo_name}/app:{n}" for n in range(4)]
    for number, name in enumerate(names):
        repo, tag = name.rsplit(":", 1)
        layer = (
            oci.TarLayer()
            .add_dir("etc")
            .add_file("etc/id", f"{number}\n".encode())
            .add_hardlink("etc/id-link", "etc/id")
            .add_file("etc/gshadow", b"secret", mode=0o000)
            .add_file("bin/su", b"su", mode=0o4755)
            .add_dir("locked", mode=0o555)
            .add_file("locked/f", b"f")
            .tar_bytes()
        )
        oci.push(registry, repo, tag, oci.build_image([layer]))
    state = tmp_path / "fake-cvmfs"
    state.mkdir()
    configure(tmp_path / "run", registry, names, fake_cvmfs_hooks(state))
    done = run(tmp_path / "run")
    assert done.returncode == 0, done.stdout + done.stderr
    journal = (state / "journal").read_text().split()
    assert journal == ["begin", "commit"] * len(names), "transactions never overlap, each one committed"
    assert not (state / "transaction.open").exists()
    root = tmp_path / "run/cvmfs"
    for number, name in enumerate(names):
        image = root / registry.host / name
        assert (image / "etc/id").read_text() == f"{number}\n"
        assert (root / ".metadata" / registry.host / name / "record.json").exists()
        # The copy into the repository keeps what the image says.
        assert (image / "etc/id").stat().st_ino == (image / "etc/id-link").stat().st_ino, "hard links kept"
        assert stat.S_IMODE((image / "etc/gshadow").stat().st_mode) == 0o000
        assert stat.S_IMODE((image / "bin/su").stat().st_mode) == 0o4755
        assert stat.S_IMODE((image / "locked").stat().st_mode) == 0o555
        assert (image / "locked/f").read_bytes() == b"f"
    # Flats are built outside the repository and copied in inside the transaction.
    assert list((tmp_path / "run/work/flat").glob("*/*")), "built in the work directory"
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]


def test_failed_publish_aborts_and_leaves_no_transaction_open(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    layer = oci.TarLayer().add_dir("etc").add_file("etc/id", b"x\n").tar_bytes()
    oci.push(registry, f"{repo_name}/app", "1", oci.build_image([layer]))
    state = tmp_path / "fake-cvmfs"
    state.mkdir()
    configure(tmp_path / "run", registry, [f"{repo_name}/app:1"], fake_cvmfs_hooks(state))
    # Something that is not ours sits where the link must go: publishing must refuse and abort.
    blocker = tmp_path / "run/cvmfs" / registry.host / repo_name / "app:1"
    blocker.mkdir(parents=True)
    (blocker / "precious").write_text("keep")
    done = run(tmp_path / "run")
    assert done.returncode != 0
    assert "is a real directory, not a link we published" in done.stdout + done.stderr + "".join(
        p.read_text() for p in (tmp_path / "run/work/logs/publish_image").rglob("*.log")
    )
    assert (state / "journal").read_text().split() == ["begin", "abort"]
    assert not (state / "transaction.open").exists()
    assert (blocker / "precious").read_text() == "keep"


def test_hook_publisher_needs_all_three_commands(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, f"{repo_name}/app", "1", oci.build_image([oci.TarLayer().add_file("a", b"a").tar_bytes()]))
    configure(tmp_path / "run", registry, [f"{repo_name}/app:1"], {"type": "hook", "begin": "true"})
    done = run(tmp_path / "run")
    assert done.returncode != 0
    assert "config: publisher: 'commit' is a required property" in done.stdout + done.stderr
    assert not (tmp_path / "run/cvmfs").exists(), "refused before anything is written"


def test_failed_commit_aborts_the_transaction(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, f"{repo_name}/app", "1", oci.build_image([oci.TarLayer().add_file("a", b"a").tar_bytes()]))
    state = tmp_path / "fake-cvmfs"
    state.mkdir()
    hooks = fake_cvmfs_hooks(state)
    hooks["commit"] = f"echo commit-failed >> {state / 'journal'}; exit 3"
    configure(tmp_path / "run", registry, [f"{repo_name}/app:1"], hooks)
    done = run(tmp_path / "run")
    assert done.returncode != 0
    assert (state / "journal").read_text().split() == ["begin", "commit-failed", "abort"]
    assert not (state / "transaction.open").exists(), "no transaction is left open for the next run"
