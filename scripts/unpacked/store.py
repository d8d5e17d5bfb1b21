"""Where things live: the content-addressed work store and the published tree.

<work>/blobs/sha256/<hex>             manifests, configs and layer blobs, verified
<work>/layers/<hex[:2]>/<hex>/        one extracted layer: rootfs/ and layer.json (its marker)
<work>/flats/<config hex>.json        marker of a built flat image
<work>/published/<name>.json          marker of a published name
<work>/state/images/<name>.json       resolved state of one published name
<work>/state/resolved.json            the images of this run and the resolution failures
<work>/state/settings.json            the settings of the last run (for operator commands)
<work>/state/settings/<hex>.json      the settings a run's jobs read, named by their digest
<work>/state/run.lock                 held by the one process that syncs or collects
<work>/trash/                         what is being deleted (renamed here first, then removed)
<root>/.flat/<hex[:2]>/<hex>/         a flattened image, named by its config digest
<root>/<registry>/<repository>:<tag>  relative symlink to the flat image
<root>/.metadata/<name>               -> .<leaf>.meta/<key>/: manifest.json, config.json, record.json
<root>/.multiarch/<arch>[:<variant>]/<registry>/<repository>:<tag>   per-platform links, published under
                                      the name `.multiarch/<arch>/<registry>/...` (several platforms)
<root>/.trash/                        what is being deleted from the root
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .reference import validate_digest

# A metadata version directory is `.<leaf>.meta/<16 hex>/` beside the name's link.
METADATA_KEY_LENGTH = 16
_METADATA_KEY = re.compile(rf"^[0-9a-f]{{{METADATA_KEY_LENGTH}}}$")
# DUCC's directory of per-platform links: <root>/.multiarch/<arch>[:<variant>]/<registry>/<repo>:<tag>.
MULTIARCH_DIR = ".multiarch"
# One part of a platform (architecture or variant) as it may appear in a .multiarch directory name.
ARCH_PART = re.compile(r"^[A-Za-z0-9_]{1,32}$")


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

    def layer_marker(self, digest: str) -> Path:
        """Written last by an extraction: a layer directory without it is not a layer."""
        return self.layer(digest) / "layer.json"

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
        """The settings of the last run, for commands an operator runs by hand."""
        return self.work / "state" / "settings.json"

    def run_settings(self, key: str) -> Path:
        """Settings named by their digest: a file no other run can change under a running job."""
        return self.work / "state" / "settings" / f"{key}.json"

    @property
    def run_lock(self) -> Path:
        return self.work / "state" / "run.lock"

    @property
    def publish_lock(self) -> Path:
        return self.work / "publish.lock"

    @property
    def work_trash(self) -> Path:
        return self.work / "trash"

    @property
    def root_trash(self) -> Path:
        return self.root / ".trash"

    def published_marker(self, name: str) -> Path:
        """Written by the publish job once `name` points at its current image."""
        return self.work / "published" / f"{name}.json"

    def flat_marker(self, config_digest: str) -> Path:
        """Written by the flatten job once the flat image is complete under its final name."""
        return self.work / "flats" / f"{digest_hex(config_digest)}.json"

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

    def link_target(self, name: str, config_digest: str) -> str:
        """`../../.flat/ab/ab12..`: one `..` per directory level of `name` below the root."""
        hexd = digest_hex(config_digest)
        return "/".join([".."] * name.count("/") + [".flat", hexd[:2], hexd])

    def metadata(self, name: str) -> Path:
        """The name's metadata directory as users read it (a link to its current version)."""
        return self.root / ".metadata" / name

    def metadata_versions_dir(self, name: str) -> Path:
        """Where the versions of `name`'s metadata live: `.<leaf>.meta/` beside its link."""
        meta = self.metadata(name)
        return meta.with_name(f".{meta.name}.meta")

    def metadata_version(self, name: str, key: str) -> Path:
        return self.metadata_versions_dir(name) / key

    def metadata_versions(self, name: str) -> list[Path]:
        """Every complete version directory of `name`'s metadata (staging names are not versions)."""
        versions = self.metadata_versions_dir(name)
        try:
            return sorted(versions / n for n in os.listdir(versions) if _METADATA_KEY.match(n))
        except FileNotFoundError:
            return []
