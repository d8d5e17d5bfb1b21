"""The package's core `unpack_image` on images built in memory (no registry): what the extractor and
flattener tests and benchmarks run, the same code path as the workflow's jobs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from unpacked.safefs import write_atomic
from unpacked.state import LayerRecord, ResolvedImage
from unpacked.store import Store
from unpacked.sync import unpack_image

from . import oci

NAME = "registry.example.org/test/image:1"


class MemorySource:
    """Blobs from a dict by digest, verified like a registry's."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def fetch(self, image: ResolvedImage, digest: str, dest: Path, size: int | None) -> None:
        data = self.blobs[digest]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"test blob {digest} has other bytes"
        write_atomic(dest, data)


def resolved(image: oci.Image, name: str = NAME) -> ResolvedImage:
    """The state resolution would give `image` (a single-platform image)."""
    registry, _, rest = name.partition("/")
    return ResolvedImage(
        reference=f"https://{name}",
        name=name,
        registry=registry,
        repository=rest.rpartition(":")[0],
        source_digest=image.digest,
        manifest_digest=image.digest,
        config_digest=image.config_digest,
        platform="linux/amd64",
        platforms=("linux/amd64",),
        layers=tuple(LayerRecord(blob.digest, blob.diff_id, blob.media_type, len(blob.data)) for blob in image.layers),
    )


def unpack(store: Store, image: oci.Image) -> Path:
    """Fetch (from memory), extract and flatten `image` into `store`; its flat tree."""
    blobs = {**image.blobs, image.digest: image.manifest}
    return unpack_image(store, MemorySource(blobs), resolved(image))
