"""The hook publisher's batches, step by step, against the FAKE CernVM-FS of support/fake_cvmfs.py.

Deterministic where the workflow's job order is not: images are published one after another into
an open transaction; a failure aborts it and the images already in it are published again in a new
one; a commit that fails forgets the whole batch (its images are published again next run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unpacked.errors import PublishError
from unpacked.publish import HookPublisher
from unpacked.safefs import write_atomic
from unpacked.state import ResolvedImage, save_image
from unpacked.store import Store
from unpacked.sync import unpack_image

from support.fake_cvmfs import fake_cvmfs_hooks
from support.unpack import MemorySource, resolved
from support.workflow import good_image


def ready_images(store: Store, count: int) -> list[ResolvedImage]:
    """`count` images built in the store and resolved (their state saved), not yet published."""
    images = []
    for number in range(count):
        built = good_image(f"{number}\n")
        image = resolved(built, f"registry.example.org/batch/app:{number}")
        unpack_image(store, MemorySource({**built.blobs, built.digest: built.manifest}), image)
        write_atomic(store.blob(built.digest), built.manifest)  # resolution keeps it; metadata needs it
        save_image(store, image)
        images.append(image)
    return images


def journal(state: Path) -> list[str]:
    path = state / "journal"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Store, Path]:
    state = tmp_path / "fake-cvmfs"
    state.mkdir()
    return Store(tmp_path / "work", tmp_path / "root", build_in_root=False), state  # as store_for does for hooks


def test_a_failure_aborts_the_batch_and_the_others_are_published_again(setup: tuple[Store, Path]) -> None:
    store, state = setup
    first, second, bad = ready_images(store, 3)
    publisher = HookPublisher(store, {**fake_cvmfs_hooks(state), "batch_images": 10})
    for image in (first, second):
        publisher.publish_now(image, store.built_flat(image.config_digest))
    assert journal(state) == ["begin"], "both in one open transaction"
    assert json.loads(store.publish_transaction.read_text())["images"] == [first.name, second.name]
    store.link(bad.name).mkdir(parents=True)  # not ours, where its link must go
    with pytest.raises(PublishError, match="is a real directory"):
        publisher.publish_now(bad, store.built_flat(bad.config_digest))
    assert journal(state) == ["begin", "abort", "begin", "commit"]
    assert not store.publish_transaction.exists() and not (state / "transaction.open").exists()
    for image in (first, second):
        assert (store.link(image.name) / "etc/id").exists() and store.published_marker(image.name).exists()
    assert not store.published_marker(bad.name).exists()


def test_a_full_batch_commits_and_the_end_of_the_run_commits_the_rest(setup: tuple[Store, Path]) -> None:
    store, state = setup
    images = ready_images(store, 3)
    publisher = HookPublisher(store, {**fake_cvmfs_hooks(state), "batch_images": 2})
    for image in images:
        publisher.publish_now(image, store.built_flat(image.config_digest))
    assert journal(state) == ["begin", "commit", "begin"]
    publisher.finish_run()
    assert journal(state) == ["begin", "commit", "begin", "commit"]
    publisher.finish_run()  # nothing open: nothing to do
    assert journal(state) == ["begin", "commit", "begin", "commit"]


def test_a_failed_commit_forgets_the_whole_batch(setup: tuple[Store, Path]) -> None:
    store, state = setup
    first, second = ready_images(store, 2)
    hooks = {**fake_cvmfs_hooks(state), "batch_images": 2}
    hooks["commit"] = f"echo commit-failed >> {state / 'journal'}; exit 3"
    publisher = HookPublisher(store, hooks)
    publisher.publish_now(first, store.built_flat(first.config_digest))
    with pytest.raises(PublishError, match=r"'commit'.*failed with exit code 3"):
        publisher.publish_now(second, store.built_flat(second.config_digest))
    assert journal(state) == ["begin", "commit-failed", "abort"]
    assert not store.published_marker(first.name).exists(), "its job ended, but nothing was committed"
    assert not store.published_marker(second.name).exists()
    assert not store.publish_transaction.exists()


def test_recover_aborts_an_open_batch_and_unmarks_its_images(setup: tuple[Store, Path]) -> None:
    store, state = setup
    (image,) = ready_images(store, 1)
    publisher = HookPublisher(store, {**fake_cvmfs_hooks(state), "batch_images": 5})
    publisher.publish_now(image, store.built_flat(image.config_digest))
    assert store.published_marker(image.name).exists()
    # The run is killed here: the transaction stays open. A dry-run only reads what is open.
    assert HookPublisher(store, fake_cvmfs_hooks(state)).left_open() == [image.name]
    assert journal(state) == ["begin"] and store.published_marker(image.name).exists()
    # The next run starts with recover().
    assert HookPublisher(store, fake_cvmfs_hooks(state)).recover() == [image.name]
    assert journal(state) == ["begin", "abort"]
    assert not store.published_marker(image.name).exists()
    assert HookPublisher(store, fake_cvmfs_hooks(state)).recover() == []
    assert HookPublisher(store, fake_cvmfs_hooks(state)).left_open() == []


def test_recover_after_a_crash_before_begin_leaves_the_publisher_usable(setup: tuple[Store, Path]) -> None:
    store, state = setup
    (image,) = ready_images(store, 1)
    # Killed after recording the batch, before `begin` ran: no transaction is open, so abort fails.
    store.publish_transaction.write_text(json.dumps({"opened": 0, "images": []}))
    publisher = HookPublisher(store, {**fake_cvmfs_hooks(state), "batch_images": 1})
    assert publisher.recover() == []
    assert not store.publish_transaction.exists()
    publisher.publish_now(image, store.built_flat(image.config_digest))
    assert journal(state) == ["begin", "commit"], "the failed abort is not journaled; publishing works"
