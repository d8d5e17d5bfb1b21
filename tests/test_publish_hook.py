"""The transaction-hook publisher, against a FAKE CernVM-FS (CernVM-FS does not run here).

The fake stands in for `cvmfs_server transaction/publish/abort`: `begin` takes a lock directory that
exists only while a transaction is open (a second concurrent `begin` fails, as CernVM-FS refuses a
second transaction) and each command appends to a journal, so the test can check that every change
to the root happened inside exactly one transaction.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from support import oci
from support.fake_cvmfs import fake_cvmfs_hooks
from support.registry import LocalRegistry
from support.workflow import parse_jobs, published_by, run_workflow, write_config

pytestmark = pytest.mark.workflow


# The end of a run that changed what the index page says writes it in a transaction of its own.
INDEX = ["begin", "commit"]


def run(directory: Path) -> subprocess.CompletedProcess[str]:
    return run_workflow(directory)


def configure(directory: Path, registry: LocalRegistry, images: list[str], publisher: dict[str, object]) -> None:
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
    assert journal == ["begin", "commit"] * len(names) + INDEX, "transactions never overlap, each one committed"
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
    assert (state / "journal").read_text().split() == ["begin", "abort", *INDEX]
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
    # The image's transaction, then the index page's: both fail to commit and are aborted.
    assert (state / "journal").read_text().split() == ["begin", "commit-failed", "abort"] * 2
    assert not (state / "transaction.open").exists(), "no transaction is left open for the next run"


def recording_cvmfs_hooks(state: Path, root: Path, batch_images: int) -> dict[str, object]:
    """The FAKE above, also recording the root's tree at every commit and abort: a `begin` that finds
    the tree changed since then journals `written-outside`, a change made outside any transaction."""
    hooks: dict[str, object] = dict(fake_cvmfs_hooks(state))
    listing = f"(find {root} -printf '%p %y %s %T@ %l\\n' 2>/dev/null | sort)"
    snapshot, journal = state / "snapshot", state / "journal"
    check = f"if [ -e {snapshot} ]; then {listing} | cmp -s - {snapshot} || echo written-outside >> {journal}; fi"
    hooks["begin"] = f"{check}; {hooks['begin']}"
    hooks["commit"] = f"{hooks['commit']} && {listing} > {snapshot}"
    hooks["abort"] = f"{hooks['abort']} && {listing} > {snapshot}"
    hooks["batch_images"] = batch_images
    hooks["batch_seconds"] = 600
    return hooks


def push_apps(registry: LocalRegistry, repo_name: str, count: int) -> list[str]:
    names = [f"{repo_name}/app:{n}" for n in range(count)]
    for number, name in enumerate(names):
        repo, tag = name.rsplit(":", 1)
        layer = oci.TarLayer().add_dir("etc").add_file("etc/id", f"{number}\n".encode()).tar_bytes()
        oci.push(registry, repo, tag, oci.build_image([layer]))
    return names


def test_images_are_published_in_batches(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> None:
    names = push_apps(registry, repo_name, 5)
    state, root = tmp_path / "fake-cvmfs", tmp_path / "run/cvmfs"
    state.mkdir()
    configure(tmp_path / "run", registry, names, recording_cvmfs_hooks(state, root, batch_images=2))
    done = run(tmp_path / "run")
    assert done.returncode == 0, done.stdout + done.stderr
    # 2 + 2 images, then the last one, committed by the end of the run.
    assert (state / "journal").read_text().split() == ["begin", "commit"] * 3 + INDEX
    assert not (tmp_path / "run/work/publish-transaction.json").exists()
    for number, name in enumerate(names):
        assert (root / registry.host / name / "etc/id").read_text() == f"{number}\n"
    # A no-op rerun publishes nothing and leaves the index page as it is: it opens no transaction.
    assert run(tmp_path / "run").returncode == 0
    assert (state / "journal").read_text().split() == ["begin", "commit"] * 3 + INDEX


def batched(tmp_path: Path, registry: LocalRegistry, repo_name: str, count: int) -> tuple[list[str], Path, Path]:
    """`count` images pushed and a workflow configured to publish them in batches of 10: (names,
    the fake's state directory, the root)."""
    names = push_apps(registry, repo_name, count)
    state, root = tmp_path / "fake-cvmfs", tmp_path / "run/cvmfs"
    state.mkdir()
    configure(tmp_path / "run", registry, names, recording_cvmfs_hooks(state, root, batch_images=10))
    return names, state, root


def test_a_failing_image_aborts_its_batch_and_the_others_are_published_again(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    names, state, root = batched(tmp_path, registry, repo_name, 4)
    blocker = root / registry.host / names[2]  # not ours, where a link must go: that publish fails
    blocker.mkdir(parents=True)
    done = run(tmp_path / "run")
    assert done.returncode != 0
    journal = (state / "journal").read_text().split()
    assert "written-outside" not in journal
    assert journal.count("abort") == 1 and journal[-1] == "commit", journal
    opened = False
    for step in journal:  # begin and commit/abort alternate: never two open, never one left open
        assert (step == "begin") != opened, journal
        opened = step == "begin"
    assert not opened and not (state / "transaction.open").exists()
    for number, name in enumerate(names):
        if number == 2:
            assert (
                not (blocker / "etc").exists()
                and not (tmp_path / "run/work/published" / registry.host / f"{name}.json").exists()
            )
            continue
        assert (root / registry.host / name / "etc/id").read_text() == f"{number}\n", name
        assert (tmp_path / "run/work/published" / registry.host / f"{name}.json").exists(), name


def test_a_transaction_left_open_by_a_crash_is_aborted_and_its_images_published_again(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    names, state, root = batched(tmp_path, registry, repo_name, 4)
    hooks = recording_cvmfs_hooks(state, root, batch_images=10)
    assert run(tmp_path / "run").returncode == 0
    assert (state / "journal").read_text().split() == ["begin", "commit", *INDEX]
    # A crash after three images were published into an open batch: the transaction is open, their
    # markers say done.
    lost = [f"{registry.host}/{name}" for name in names[:3]]
    gone = f"{registry.host}/{repo_name}/gone:1"  # since taken out of the recipe
    subprocess.run(str(hooks["begin"]), shell=True, check=True)
    (tmp_path / "run/work/publish-transaction.json").write_text(json.dumps({"opened": 0, "images": [*lost, gone]}))
    # A dry-run aborts nothing (the hook's abort would change the published tree) but shows the jobs
    # the run will run: the three small images in one shared job.
    dry = run_workflow(tmp_path / "run", "-n")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    warning = "its publication was not committed before the last run ended"
    assert f"{lost[0]}: {warning}; publishing it again" in dry.stderr
    assert f"{gone}: {warning}; not resolved in this run: left as before" in dry.stderr
    assert (state / "journal").read_text().split() == ["begin", "commit", *INDEX, "begin"]
    assert (tmp_path / "run/work/publish-transaction.json").exists()
    dry_jobs = parse_jobs(dry.stdout + dry.stderr)
    assert published_by(dry_jobs) == lost
    assert [rule for rule, _ in dry_jobs if rule.startswith("publish")] == ["publish_batch"]
    done = run(tmp_path / "run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "was left open (a crash?): aborting it" in done.stdout + done.stderr
    journal = (state / "journal").read_text().split()
    assert journal == ["begin", "commit", *INDEX, "begin", "abort", "begin", "commit", *INDEX]
    assert sorted(parse_jobs(done.stdout + done.stderr)) == sorted(dry_jobs), "the run ran what its dry-run showed"
    for number, name in enumerate(names):
        assert (root / registry.host / name / "etc/id").read_text() == f"{number}\n"


def test_a_failed_final_commit_fails_the_run_and_the_next_run_publishes_again(
    tmp_path: Path, registry: LocalRegistry, repo_name: str
) -> None:
    names = push_apps(registry, repo_name, 2)
    state, root = tmp_path / "fake-cvmfs", tmp_path / "run/cvmfs"
    state.mkdir()
    hooks = recording_cvmfs_hooks(state, root, batch_images=10)  # committed only by the end of the run
    working_commit = hooks["commit"]
    hooks["commit"] = f"echo commit-failed >> {state / 'journal'}; exit 3"
    configure(tmp_path / "run", registry, names, hooks)
    done = run(tmp_path / "run")
    assert done.returncode != 0, "the images' jobs succeeded, but nothing was committed"
    assert "the last publish transaction did not commit" in done.stdout + done.stderr
    # The batch's commit fails, then the index page's.
    assert (state / "journal").read_text().split() == ["begin", "commit-failed", "abort"] * 2
    hooks["commit"] = working_commit
    configure(tmp_path / "run", registry, names, hooks)
    again = run(tmp_path / "run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (state / "journal").read_text().split()[6:] == ["begin", "commit", *INDEX], "both published again, together"
    for number, name in enumerate(names):
        assert (root / registry.host / name / "etc/id").read_text() == f"{number}\n"
