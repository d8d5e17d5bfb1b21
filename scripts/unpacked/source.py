"""Where the workflow's blobs come from: the image's registry, or its mirrors.

Apart from `sync`, so that the jobs that only touch the disk (extract, flatten, publish) never import
the HTTP stack: a job is a process of its own, and its imports are most of its cost on small images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .auth import RealmCache
from .mirrors import MirroredClient, make_client
from .reference import parse_reference
from .registry import RegistryClient
from .state import ResolvedImage


class RegistrySource:
    """Blobs from the image's registry (or its mirrors), one client per registry.

    `realms`: token realms known from earlier runs (`Store.realms`), so that tokens are fetched first.
    """

    def __init__(self, settings: dict[str, Any], realms: RealmCache | None = None) -> None:
        self.settings = settings
        self.realms = realms if realms is not None else RealmCache()
        self._clients: dict[str, RegistryClient | MirroredClient] = {}

    def fetch(self, image: ResolvedImage, digest: str, dest: Path, size: int | None) -> None:
        if image.registry not in self._clients:
            self._clients[image.registry] = make_client(parse_reference(image.reference), self.settings, self.realms)
        self._clients[image.registry].download_blob(image.repository, digest, dest, size)
