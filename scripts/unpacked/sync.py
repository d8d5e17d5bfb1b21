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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .errors import UnpackedError
from .extract import LayerIndex, extract_layer
from .flatten import flatten_image
from .fsutil import naming_failures
from .safefs import held_lock
from .state import FlatMarker, ResolvedImage, load_flat_files, save_flat_marker
from .store import Store

if TYPE_CHECKING:  # an extract job never loads the publisher (nor its subprocess machinery)
    from .publish import DirectoryPublisher

log = logging.getLogger(__name__)
# Names a layer in errors: (image, its position from 1, its digest) -> text.
LayerName = Callable[[ResolvedImage, int, str], str]


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


def layer_in_image(image: ResolvedImage, number: int, digest: str) -> str:
    """How a layer is named in errors when a whole image is unpacked: `<reference>: layer 2 (<digest>)`."""
    return f"{image.reference}: layer {number} ({digest})"


def layer_by_digest(image: ResolvedImage, number: int, digest: str) -> str:
    """How the workflow's jobs name a layer (`layer <digest>`): alike whichever job extracted it."""
    return f"layer {digest}"


def build_flat(store: Store, image: ResolvedImage, layer_name: LayerName = layer_in_image) -> FlatMarker:
    """Flatten `image`'s layers into its flat image, unless it exists; write its marker.

    Layers not extracted yet are extracted first (the workflow gives a layer only one image uses no
    job of its own); a failure there is the layer's (`UnpackedError.step`), named by `layer_name`.
    Tags of one image share the flat image, published by one job; the lock keeps a job of another
    run (an `only` sync, `unpacked verify --repair`) from building it at the same time.
    """
    dest = store.built_flat(image.config_digest)
    with held_lock(store.flat_lock(image.config_digest)):
        if dest.is_dir():
            # Content-addressed and only ever created by a rename: an existing tree is complete and
            # may be in use (published), so it is kept rather than rebuilt and swapped under its users.
            log.info("%s: flat image %s already built; kept", image.reference, dest)
            # Its file count, from the marker of the job that built it (`unpacked status` shows it).
            marker = FlatMarker(image.config_digest, files=load_flat_files(store, image.config_digest), kept=True)
        else:
            extract_missing_layers(store, image, layer_name)
            config = json.loads(store.blob(image.config_digest).read_text())
            layers = [store.layer(digest) for digest in image.layer_digests]
            with naming_failures(dest):
                files = flatten_image(layers, image.diff_ids, config, dest, image.reference)
            marker = FlatMarker(image.config_digest, files=files)
        save_flat_marker(store, marker)
    return marker


def publish_image(store: Store, publisher: DirectoryPublisher, image: ResolvedImage) -> None:
    """Point `image.name` at its flat image (in one transaction of `publisher`); write its marker."""
    with naming_failures(store.link(image.name)):
        publisher.publish_now(image, store.built_flat(image.config_digest))  # and writes the marker


def extract_missing_layers(store: Store, image: ResolvedImage, layer_name: LayerName) -> None:
    """Extract each layer of `image` whose extracted marker is missing, from its blob in the store."""
    for number, layer in enumerate(image.layers, start=1):
        if not store.layer_marker(layer.digest).exists():
            try:
                extract_layer_blob(store, layer.digest, layer.diff_id, layer_name(image, number, layer.digest))
            except UnpackedError as err:
                err.step = ("extract-layer", layer.digest)
                raise


def unpack_image(store: Store, source: BlobSource, image: ResolvedImage) -> Path:
    """Everything `image` needs, from what the store lacks: its flat image (built where flats are)."""
    for digest in [image.config_digest, *image.layer_digests]:
        fetch_blob(store, source, image, digest)
    build_flat(store, image)
    return store.built_flat(image.config_digest)


def sync_image(store: Store, source: BlobSource, publisher: DirectoryPublisher, image: ResolvedImage) -> Path:
    """`unpack_image`, then publish it: what a single-image sync runs. The published flat image."""
    unpack_image(store, source, image)
    publish_image(store, publisher, image)
    return store.flat(image.config_digest)
