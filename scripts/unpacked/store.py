"""Where things live: the content-addressed work store and the published tree.

<work>/blobs/sha256/<hex>             manifests, configs and layer blobs, verified
<work>/layers/<hex[:2]>/<hex>/        one extracted layer: rootfs/ and layer.json
<work>/state/images/<name>.json       resolved state of one published name
<work>/state/resolved.json            the images of this run and the resolution failures
<root>/.flat/<hex[:2]>/<hex>/         a flattened image, named by its config digest
<root>/<registry>/<repository>:<tag>  relative symlink to the flat image
<root>/.metadata/<name>/              manifest.json, config.json, record.json
<root>/.multiarch/<arch>[:<variant>]/<registry>/<repository>:<tag>   per-platform links, published under
                                      the name `.multiarch/<arch>/<registry>/...` (several platforms)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .reference import validate_digest


def digest_hex(digest: str) -> str:
    return validate_digest(digest).split(":", 1)[1]


@dataclass(frozen=True)
class Store:
    work: Path
    root: Path
    # Where flat images are built: inside the root for a directory publisher, in the work directory
    # when a transaction publisher copies them in.
    build_in_root: bool = True

    def blob(self, digest: str) -> Path:
        return self.work / "blobs" / "sha256" / digest_hex(digest)

    def layer(self, digest: str) -> Path:
        hexd = digest_hex(digest)
        return self.work / "layers" / hexd[:2] / hexd

    def state(self, name: str) -> Path:
        return self.work / "state" / "images" / f"{name}.json"

    @property
    def resolved(self) -> Path:
        return self.work / "state" / "resolved.json"

    @property
    def realms(self) -> Path:
        """Token realms learned from the registries (no secrets: URLs and service names)."""
        return self.work / "state" / "realms.json"

    @property
    def settings(self) -> Path:
        return self.work / "state" / "settings.json"

    def published_marker(self, name: str) -> Path:
        """Written by the publish job once `name` points at its current image."""
        return self.work / "published" / f"{name}.json"

    def flat(self, config_digest: str) -> Path:
        hexd = digest_hex(config_digest)
        return self.root / ".flat" / hexd[:2] / hexd

    def built_flat(self, config_digest: str) -> Path:
        if self.build_in_root:
            return self.flat(config_digest)
        hexd = digest_hex(config_digest)
        return self.work / "flat" / hexd[:2] / hexd

    def link(self, name: str) -> Path:
        return self.root / name

    def metadata(self, name: str) -> Path:
        return self.root / ".metadata" / name
