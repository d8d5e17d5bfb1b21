"""A name's metadata changes as one: readers never see manifest, config and record that disagree.

A publisher thread flips one name between two images as fast as it can while reader threads read
`.metadata/<name>/{record,manifest,config}.json` the way a user's script would: resolve the
directory once, then read the three files.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from unpacked import publish
from unpacked.publish import DirectoryPublisher
from unpacked.state import ResolvedImage
from unpacked.store import Store

FLIP_SECONDS = 3.0


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_image(store: Store, text: str) -> ResolvedImage:
    """A state whose manifest and config are in the blob store and whose flat image exists."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "id": text}).encode()
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": digest(config)}, "id": text}).encode()
    for data in (config, manifest):
        store.blob(digest(data)).parent.mkdir(parents=True, exist_ok=True)
        store.blob(digest(data)).write_bytes(data)
    flat = store.flat(digest(config))
    flat.mkdir(parents=True)
    (flat / "id").write_text(text)
    return ResolvedImage(
        reference="https://registry.example.org/team/app:1",
        name="registry.example.org/team/app:1",
        registry="registry.example.org",
        repository="team/app",
        source_digest=digest(manifest),
        manifest_digest=digest(manifest),
        config_digest=digest(config),
        platform="linux/amd64",
        platforms=("linux/amd64",),
        layers=(),
    )


def test_metadata_readers_never_see_a_mix(tmp_path: Path) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    publisher = DirectoryPublisher(store)
    images = [make_image(store, "first"), make_image(store, "second")]
    name = images[0].name
    publisher.publish(images[0], store.flat(images[0].config_digest))
    meta = store.metadata(name)
    stop = threading.Event()
    seen = {"reads": 0, "mixed": 0, "vanished": 0}
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            directory = os.path.realpath(meta)
            try:
                record = json.loads(Path(directory, "record.json").read_bytes())
                manifest = Path(directory, "manifest.json").read_bytes()
                config = Path(directory, "config.json").read_bytes()
            except FileNotFoundError:
                seen["vanished"] += 1  # an old version removed two publishes later: read again
                continue
            seen["reads"] += 1
            if digest(manifest) != record["manifest_digest"] or digest(config) != record["config_digest"]:
                seen["mixed"] += 1
                problems.append(f"record {record['config_digest']} read with config {digest(config)}")

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    flips = 0
    deadline = time.monotonic() + FLIP_SECONDS
    try:
        while time.monotonic() < deadline:
            state = images[flips % 2]
            publisher.publish(state, store.flat(state.config_digest))
            flips += 1
            # Once publish returns, the link and the metadata agree.
            record = json.loads((meta / "record.json").read_text())
            assert record["config_digest"] == state.config_digest
            assert os.readlink(store.link(name)).endswith(state.config_digest.split(":")[1])
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert flips > 50 and seen["reads"] > 200, (flips, seen)
    assert seen["mixed"] == 0, problems[:5]
    # Old versions do not pile up: the current one and the one before it.
    assert len(store.metadata_versions(name)) <= 2
    assert not os.listdir(store.root_trash)


def test_metadata_is_swapped_before_the_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """So it never describes an image the link does not reach yet... only one it is about to reach."""
    store = Store(tmp_path / "work", tmp_path / "root")
    swaps: list[str] = []
    real_swap = publish.swap_symlink

    def recording_swap(link: Path, target: str) -> bool:
        swaps.append("metadata" if ".metadata" in link.parts else "link")
        return real_swap(link, target)

    monkeypatch.setattr(publish, "swap_symlink", recording_swap)
    first, second = make_image(store, "first"), make_image(store, "second")
    for state in (first, second):
        publish.DirectoryPublisher(store).publish(state, store.flat(state.config_digest))
    assert swaps == ["metadata", "link", "metadata", "link"]


def test_metadata_of_an_older_layout_is_migrated(tmp_path: Path) -> None:
    """A name published by an older version has a real directory: it becomes a versioned link."""
    store = Store(tmp_path / "work", tmp_path / "root")
    state = make_image(store, "only")
    meta = store.metadata(state.name)
    meta.mkdir(parents=True)
    (meta / "record.json").write_text(json.dumps({"last_changed": "2020-01-01T00:00:00Z"}))
    DirectoryPublisher(store).publish(state, store.flat(state.config_digest))
    assert meta.is_symlink()
    record = json.loads((meta / "record.json").read_text())
    assert record["config_digest"] == state.config_digest
    assert (meta / "manifest.json").read_bytes() == store.blob(state.manifest_digest).read_bytes()
