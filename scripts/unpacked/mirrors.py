"""Registry mirrors and pull-through caches: `registries.<host>.mirrors: [host[:port], ...]`.

Every request for a registry that has mirrors goes to its mirrors first, in the configured order,
then to the registry itself. The repository path is the same everywhere (as with Docker's
`registry-mirrors`); published names, state files and metadata keep the upstream registry's name.
Digest-addressed content (manifests by digest, blobs) is verified whoever serves it. Each mirror
has its own settings and credentials under `registries.<mirror host>`: the upstream registry's
credentials are never sent to a mirror.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .auth import RealmCache
from .config import client_settings, registry_settings
from .errors import DigestMismatchError, NotFoundError, RegistryError
from .reference import ImageRef, parse_reference
from .registry import RegistryClient

log = logging.getLogger(__name__)
T = TypeVar("T")


def make_client(ref: ImageRef, config: dict[str, Any], realms: RealmCache) -> RegistryClient | MirroredClient:
    """The client for `ref`'s registry: a plain one, or one that tries the configured mirrors first.

    `realms`: the run's token realms, shared by all its clients.
    """
    mirrors = registry_settings(config, ref.registry).get("mirrors") or []
    if not mirrors:
        return _client(ref, config, realms)
    return MirroredClient(ref, config, mirrors, realms)


def _client(ref: ImageRef, config: dict[str, Any], realms: RealmCache) -> RegistryClient:
    """A client with the settings and credentials of `ref`'s own registry (a mirror's never the upstream's)."""
    return RegistryClient(ref, client_settings(config, ref.registry), realms)


def mirror_ref(mirror: str, ref: ImageRef) -> ImageRef:
    """A reference on `mirror` (`host[:port]`, optionally with `http://`), for the mirror's client."""
    scheme, _, host = mirror.rpartition("://")
    return parse_reference(f"{scheme or 'https'}://{host}/{ref.api_repository}:latest")


class MirroredClient:
    """The RegistryClient interface over [mirror clients..., upstream client], tried in order.

    A mirror that does not have something (404) is asked again next time; one that fails otherwise
    (down, 5xx after retries, refused credentials, wrong bytes) is skipped for the rest of the process.
    """

    def __init__(self, ref: ImageRef, config: dict[str, Any], mirrors: list[str], realms: RealmCache) -> None:
        self.registry = ref.registry
        self.mirrors = [(m, _client(mirror_ref(m, ref), config, realms)) for m in mirrors]
        self.upstream = _client(ref, config, realms)
        self._down: set[str] = set()
        self._lock = threading.Lock()

    def _try(self, call: Callable[[RegistryClient], T]) -> T:
        for mirror, client in self.mirrors:
            with self._lock:
                if mirror in self._down:
                    continue
            try:
                return call(client)
            except NotFoundError as err:
                log.debug("mirror %s of %s: %s", mirror, self.registry, err)
            except (RegistryError, DigestMismatchError) as err:
                log.warning("mirror %s of %s failed (%s); using the next source", mirror, self.registry, err)
                with self._lock:
                    self._down.add(mirror)
        return call(self.upstream)

    def list_tags(self, repository: str) -> list[str]:
        return self._try(lambda c: c.list_tags(repository))

    def head_manifest(self, repository: str, reference: str) -> str:
        return self._try(lambda c: c.head_manifest(repository, reference))

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        return self._try(lambda c: c.get_manifest(repository, reference))

    def get_blob_bytes(self, repository: str, digest: str, size: int | None = None) -> bytes:
        return self._try(lambda c: c.get_blob_bytes(repository, digest, size))

    def download_blob(self, repository: str, digest: str, dest: Path, size: int | None = None) -> None:
        self._try(lambda c: c.download_blob(repository, digest, dest, size))
