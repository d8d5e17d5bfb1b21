"""The core: one image from a source of blobs into a store, then published.

    unpack_image(store, source, image)             fetch what is missing, extract each layer, flatten
    sync_image(store, source, publisher, image)    unpack_image, then publish

and the steps they are made of: `fetch_blob`, `extract_layer_blob`, `build_flat`, `publish_image`,
which the workflow's jobs run (`unpacked fetch-blob`, `extract-layer`, and `publish`, which runs
`build_flat` then `publish_image`). Everything is content-addressed in the store, so a step whose
product is there is skipped by `unpack_image` and `build_flat`; the other jobs redo theirs
(Snakemake asked for it).

A source is where blobs come from (`source.RegistrySource` for the registries of a config; tests pass
blobs from memory). It must verify what it writes against the digest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .extract import LayerIndex, extract_layer
from .flatten import flatten_image
from .fsutil import naming_failures
from .safefs import held_lock
from .state import FlatMarker, ResolvedImage, save_flat_marker, save_published_marker
from .store import Store

if TYPE_CHECKING:  # an extract job never loads the publisher (nor its subprocess machinery)
    from .publish import DirectoryPublisher

log = logging.getLogger(__name__)


class BlobSource(Protocol):
    def fetch(self, image: ResolvedImage, digest: str, dest: Path, size: int | None) -> None:
        """Write the verified blob `digest` of `image` to `dest` (atomically), at most `size` bytes."""


def fetch_blob(store: Store, source: BlobSource, image: ResolvedImage, digest: str) -> bool:
    """Put blob `digest` (a layer or the config of `image`) into the store; False if it was there."""
    dest = store.blob(digest)
    if dest.exists():
        return False
    declared = next((layer.size for layer in image.layers if layer.digest == digest), None)
    with naming_failures(dest):
        source.fetch(image, digest, dest, declared)
    log.info("%s: fetched blob %s from %s", image.reference, digest, image.registry)
    return True


def extract_layer_blob(store: Store, digest: str, diff_id: str, what: str) -> LayerIndex:
    """Extract a layer's blob from the store into its layer directory (replacing what is there)."""
    with naming_failures(store.layer(digest)):
        return extract_layer(store.blob(digest), diff_id, store.layer(digest), what)


def build_flat(store: Store, image: ResolvedImage) -> FlatMarker:
    """Flatten `image`'s extracted layers into its flat image, unless it exists; write its marker.

    Tags of one image share the flat image and are published by jobs side by side: the first builds
    it under the lock, the others find it built.
    """
    dest = store.built_flat(image.config_digest)
    with held_lock(store.flat_lock(image.config_digest)):
        if dest.is_dir():
            # Content-addressed and only ever created by a rename: an existing tree is complete and
            # may be in use (published), so it is kept rather than rebuilt and swapped under its users.
            log.info("%s: flat image %s already built; kept", image.reference, dest)
            marker = FlatMarker(image.config_digest, kept=True)
        else:
            config = json.loads(store.blob(image.config_digest).read_text())
            layers = [store.layer(digest) for digest in image.layer_digests]
            with naming_failures(dest):
                files = flatten_image(layers, image.diff_ids, config, dest, image.reference)
            marker = FlatMarker(image.config_digest, files=files)
        save_flat_marker(store, marker)
    return marker


def publish_image(store: Store, publisher: DirectoryPublisher, image: ResolvedImage) -> None:
    """Point `image.name` at its flat image (in one transaction of `publisher`); write its marker."""
    with naming_failures(store.link(image.name)), publisher.transaction():
        publisher.publish(image, store.built_flat(image.config_digest))
    save_published_marker(store, image)


def unpack_image(store: Store, source: BlobSource, image: ResolvedImage) -> Path:
    """Everything `image` needs, from what the store lacks: its flat image (built where flats are)."""
    for digest in [image.config_digest, *image.layer_digests]:
        fetch_blob(store, source, image, digest)
    for number, layer in enumerate(image.layers, start=1):
        if not store.layer_marker(layer.digest).exists():
            extract_layer_blob(
                store, layer.digest, layer.diff_id, f"{image.reference}: layer {number} ({layer.digest})"
            )
    build_flat(store, image)
    return store.built_flat(image.config_digest)


def sync_image(store: Store, source: BlobSource, publisher: DirectoryPublisher, image: ResolvedImage) -> Path:
    """`unpack_image`, then publish it: what a single-image sync runs. The published flat image."""
    unpack_image(store, source, image)
    publish_image(store, publisher, image)
    return store.flat(image.config_digest)
