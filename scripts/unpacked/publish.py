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
from .safefs import held_lock, replace_symlink, staged_dir
from .state import ResolvedImage, SyncRecord, load_record, record_json
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
    def __init__(self, store: Store, settings: dict[str, Any]) -> None:
        super().__init__(store)
        missing = [key for key in ("begin", "commit", "abort") if not settings.get(key)]
        if missing:
            raise PublishError(f"publisher type 'hook' needs the command(s): {', '.join(missing)}")
        self.commands = settings

    def _run(self, step: str) -> None:
        command = self.commands[step]
        done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            msg = f"publish hook {step!r} ({shlex.quote(command)}) failed with exit code {done.returncode}: "
            raise PublishError(msg + (done.stderr.strip() or done.stdout.strip())[-500:])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with held_lock(self.store.publish_lock):
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
