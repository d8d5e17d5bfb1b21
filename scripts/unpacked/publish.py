"""Publishing: the one interface through which changes reach the output root.

`DirectoryPublisher` writes straight into a plain directory. `HookPublisher` wraps the same writes in
a transaction opened and closed by operator commands (for CernVM-FS: `cvmfs_server transaction`,
`cvmfs_server publish`, `cvmfs_server abort -f`); only one transaction runs at a time, as CernVM-FS
allows, so concurrent publish jobs take turns through a lock file.

Every write is atomic: the link is created under a temporary name and renamed over the old one.
A name's metadata (manifest.json, config.json, record.json) is one directory, written whole under
a version name `.<leaf>.meta/<key>` and swapped in through the link `.metadata/<name>`, so readers
that resolve `.metadata/<name>` once see three files that belong together. The metadata is swapped
before the link: it never describes an image that is not complete in `.flat/`. The previous version
is kept until the next publish (a reader in the middle of it keeps its files). A tag that moves
re-points its link; the old flat image stays until garbage collection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import PublishError
from .fsutil import copy_tree, discard, naming_failures
from .safefs import held_lock, replace_symlink, staged_dir, write_atomic
from .state import ResolvedImage, SyncRecord, load_record, record_json, save_published_marker
from .store import METADATA_KEY_LENGTH, Store

log = logging.getLogger(__name__)


def swap_symlink(link: Path, target: str) -> bool:
    """Point `link` at `target` atomically (symlink under a temporary name, then rename)."""
    try:
        if os.readlink(link) == target:
            return False
    except (FileNotFoundError, OSError):
        pass
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        raise PublishError(f"{link} is a real directory, not a link we published; remove it by hand")
    # No listing of the directory (a repository may have thousands of tags): one name per process;
    # one a killed job left behind is removed by `unpacked gc`.
    replace_symlink(link, target, link.with_name(f".{link.name}.link-{os.getpid()}"))
    return True


class DirectoryPublisher:
    def __init__(self, store: Store) -> None:
        self.store = store

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def publish_now(self, image: ResolvedImage, flat: Path) -> None:
        """What a publish job calls: `publish` inside this publisher's transaction (or its batch),
        then the job's marker."""
        with self.transaction():
            self.publish(image, flat)
        save_published_marker(self.store, image)

    def finish_run(self) -> None:
        """At the end of a run: nothing is pending in a plain directory."""

    def recover(self) -> list[str]:
        """At the start of a run: names whose publication a crash may have lost (none here)."""
        return []

    def left_open(self) -> list[str]:
        """The names `recover` would publish again, found without changing anything (a dry-run)."""
        return []

    def publish(self, image: ResolvedImage, flat: Path) -> None:
        """Make the published name point at `flat` and record its metadata."""
        store = self.store
        final_flat = store.flat(image.config_digest)
        if flat.resolve() != final_flat.resolve() and not final_flat.exists():
            self.copy_flat_in(flat, final_flat)  # built outside the root (transaction publishers)
        if not final_flat.is_dir():
            raise PublishError(f"{image.reference}: flat image {final_flat} is missing; run the workflow again")
        target = store.link_target(image.name, image.config_digest)
        link = store.link(image.name)
        changed = not (link.is_symlink() and os.readlink(link) == target)
        # Metadata first: a link never points at an image its metadata does not describe.
        self._write_metadata(image, changed)
        swap_symlink(link, target)
        log.info("%s: published -> %s%s", image.reference, target, "" if changed else " (unchanged)")

    @staticmethod
    def copy_flat_in(built: Path, final_flat: Path) -> None:
        """Copy a flat image built elsewhere into the root, replacing whatever is at `final_flat`."""
        with staged_dir(final_flat) as staging:
            copy_tree(built, staging)

    def _write_metadata(self, image: ResolvedImage, changed: bool) -> None:
        store = self.store
        meta = store.metadata(image.name)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        old = load_record(meta / "record.json")
        record = SyncRecord(
            reference=image.reference,
            source_digest=image.source_digest,
            manifest_digest=image.manifest_digest,
            config_digest=image.config_digest,
            platform=image.platform,
            last_synced=now,
            last_changed=now if changed or old is None else old.last_changed,
        )
        files = {
            "manifest.json": store.blob(image.manifest_digest).read_bytes(),
            "config.json": store.blob(image.config_digest).read_bytes(),
            "record.json": record_json(record),
        }
        key = hashlib.sha256(b"".join(files.values())).hexdigest()[:METADATA_KEY_LENGTH]
        version = store.metadata_version(image.name, key)
        if not version.is_dir():
            # A version is named by its content: it is only ever made where none is, so plainly renamed.
            with naming_failures(version), staged_dir(version, swap=False) as staging:
                for filename, data in files.items():
                    (staging / filename).write_bytes(data)
        previous = _link_target(meta)
        if meta.is_dir() and not meta.is_symlink():  # written by an older version: one real directory
            discard(meta, store.root_trash)
        current = f"{version.parent.name}/{version.name}"
        swap_symlink(meta, current)
        for stale in store.metadata_versions(image.name):
            if f"{stale.parent.name}/{stale.name}" not in (current, previous):
                discard(stale, store.root_trash)

    def unpublish(self, name: str) -> None:
        """Remove a published name: its link, then its metadata (the caller removed its marker)."""
        store = self.store
        with contextlib.suppress(FileNotFoundError):
            store.link(name).unlink()
        discard(store.metadata(name), store.root_trash)  # the link (or an older layout's directory)
        discard(store.metadata_versions_dir(name), store.root_trash)


def _link_target(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


class HookPublisher(DirectoryPublisher):
    """Changes go through begin/commit/abort commands, in batches of up to `batch_images` images.

    A batch is a transaction left open between publish jobs: each job, under the publish lock,
    opens one if none is open, publishes its image into it, and commits it when it holds
    `batch_images` images or has been open `batch_seconds`; the end of the run commits what is left
    (`finish_run`). `<work>/publish-transaction.json` names the open transaction's images, so that
    - a job whose publication fails aborts the transaction, then publishes the images already in it
      again in a new one (their changes are kept), and fails alone;
    - after a crash, the next run aborts the transaction left open and publishes its images again
      (`recover`): nothing half-written is ever committed.
    With `batch_images: 1` every image is its own transaction, committed before its job ends.
    """

    def __init__(self, store: Store, settings: dict[str, Any]) -> None:
        super().__init__(store)
        missing = [key for key in ("begin", "commit", "abort") if not settings.get(key)]
        if missing:
            raise PublishError(f"publisher type 'hook' needs the command(s): {', '.join(missing)}")
        self.commands = settings
        self.batch_images = int(settings.get("batch_images", 1))
        self.batch_seconds = float(settings.get("batch_seconds", 60))

    def _open_batch(self) -> dict[str, Any] | None:
        try:
            batch: dict[str, Any] = json.loads(self.store.publish_transaction.read_text())
        except FileNotFoundError:
            return None
        return batch

    def _save_batch(self, batch: dict[str, Any] | None) -> None:
        if batch is None:
            self.store.publish_transaction.unlink(missing_ok=True)
        else:
            write_atomic(self.store.publish_transaction, json.dumps(batch).encode())

    def publish_now(self, image: ResolvedImage, flat: Path) -> None:
        with held_lock(self.store.publish_lock):
            batch = self._open_batch()
            if batch is None:
                # Recorded before it is opened: a crash in between leaves a record, never an open
                # transaction nobody knows of (which would refuse every later begin).
                batch = {"opened": time.time(), "images": []}
                self._save_batch(batch)
                try:
                    self._run("begin")
                except BaseException:
                    self._save_batch(None)
                    raise
            try:
                self.publish(image, flat)
            except BaseException as err:
                self._abort_batch(batch, err)
                raise
            batch["images"].append(image.name)
            self._save_batch(batch)
            # Under the lock: a later failure of this batch finds the marker there to remove.
            save_published_marker(self.store, image)
            full = len(batch["images"]) >= self.batch_images
            if full or time.time() - batch["opened"] >= self.batch_seconds:
                self._commit_batch(batch)

    def finish_run(self) -> None:
        with held_lock(self.store.publish_lock):
            batch = self._open_batch()
            if batch is not None:
                self._commit_batch(batch)

    def left_open(self) -> list[str]:
        # No lock: the record is replaced atomically, and a dry-run must not wait for a publish job
        # a killed run left running.
        batch = self._open_batch()
        return [] if batch is None else list(batch["images"])

    def recover(self) -> list[str]:
        with held_lock(self.store.publish_lock):
            batch = self._open_batch()
            if batch is None:
                return []
            log.warning(
                "publish transaction with %d image(s) was left open (a crash?): aborting it; they are published again",
                len(batch["images"]),
            )
            try:
                self._run("abort")
            except PublishError as err:  # the crash came before its begin, or after its commit
                log.warning("%s; assuming no transaction was open", err)
            self._save_batch(None)
            names: list[str] = batch["images"]
            for name in names:
                self.store.published_marker(name).unlink(missing_ok=True)
            return names

    def _commit_batch(self, batch: dict[str, Any]) -> None:
        try:
            self._run("commit")
        except PublishError as err:
            self._abort_after(err)  # a transaction left open would refuse every later begin
            self._save_batch(None)
            self._forget(batch["images"])
            raise
        self._save_batch(None)
        log.info("published %d image(s) in one transaction", len(batch["images"]))

    def _abort_batch(self, batch: dict[str, Any], err: BaseException) -> None:
        """Abort after a failure, then publish the batch's other images again in a new transaction."""
        others: list[str] = batch["images"]
        self._save_batch(None)
        try:
            self._abort_after(err)
        except PublishError:
            self._forget(others)
            raise
        if not others:
            return
        from .state import load_image  # only a failing batch needs it

        log.warning("publishing the %d other image(s) of the aborted transaction again", len(others))
        try:
            with self._transaction_held():  # publish_now holds the lock
                for name in others:
                    image = load_image(self.store, name)
                    if image is None:
                        raise PublishError(f"{name}: no resolved state to publish it again")
                    self.publish(image, self.store.built_flat(image.config_digest))
        except BaseException:
            self._forget(others)
            raise

    def _forget(self, names: list[str]) -> None:
        """These images' jobs ended, but their transaction did not commit: the next run redoes them."""
        for name in names:
            self.store.published_marker(name).unlink(missing_ok=True)
            log.error("%s: its publication was not committed; the next run publishes it again", name)

    def _run(self, step: str) -> None:
        command = self.commands[step]
        done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            msg = f"publish hook {step!r} ({shlex.quote(command)}) failed with exit code {done.returncode}: "
            raise PublishError(msg + (done.stderr.strip() or done.stdout.strip())[-500:])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with held_lock(self.store.publish_lock), self._transaction_held():
            yield

    @contextlib.contextmanager
    def _transaction_held(self) -> Iterator[None]:
        """One transaction, the publish lock already held by this process (an flock is not reentrant)."""
        self._run("begin")
        try:
            yield
        except BaseException as err:
            self._abort_after(err)
            raise
        try:
            self._run("commit")
        except PublishError as err:
            self._abort_after(err)  # a transaction left open would refuse every later begin
            raise

    def _abort_after(self, err: BaseException) -> None:
        try:
            self._run("abort")
        except PublishError as abort_err:
            raise PublishError(f"{abort_err} (after: {err})") from err


def make_publisher(config: dict[str, Any], store: Store) -> DirectoryPublisher:
    settings = config.get("publisher") or {"type": "directory"}
    if settings.get("type", "directory") == "hook":
        return HookPublisher(store, settings)
    return DirectoryPublisher(store)
