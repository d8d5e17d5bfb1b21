"""Registry API: tag lists, manifest HEAD/GET, verified blob downloads."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from .config import registry_settings
from .credentials import lookup_credentials
from .errors import DigestMismatchError, NotFoundError, RegistryError
from .manifests import ACCEPT
from .reference import ImageRef, validate_digest
from .transport import RegistryTransport

log = logging.getLogger(__name__)
CHUNK = 1 << 20
# Largest manifest or config we accept; real ones are a few KB.
MAX_DOCUMENT_BYTES = 4 << 20


def _error_text(response: requests.Response) -> str:
    """The registry's own error codes, e.g. MANIFEST_UNKNOWN, TOOMANYREQUESTS."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        text = ""
    return text or f"HTTP {response.status_code}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """API access to one registry (`api_host`), shared by every repository on it."""

    def __init__(self, ref: ImageRef, config: dict) -> None:
        settings = registry_settings(config, ref.registry)
        self.registry = ref.registry
        scheme = "http" if settings["insecure"] else ref.scheme
        self.base = f"{scheme}://{ref.api_host}"
        self.transport = RegistryTransport(
            ref.registry, lookup_credentials(ref.registry, settings), settings["timeout"], settings["retries"]
        )

    def _check(self, response: requests.Response, what: str) -> requests.Response:
        if response.status_code == 404:
            raise NotFoundError(f"{what}: not found ({_error_text(response)})")
        if response.status_code == 429:
            raise RegistryError(f"{what}: rate limited by the registry, retries exhausted; try again later")
        if not response.ok:
            raise RegistryError(f"{what}: {_error_text(response)}")
        return response

    @staticmethod
    def _scope(repository: str) -> str:
        return f"repository:{repository}:pull"

    def list_tags(self, repository: str) -> list[str]:
        """Every tag, following `Link: <..>; rel="next"` verbatim and only on the same host."""
        url = f"{self.base}/v2/{repository}/tags/list"
        tags: list[str] = []
        seen: set[str] = set()
        while url and url not in seen:
            seen.add(url)
            what = f"registry {self.registry}: tag list of {repository}"
            response = self._check(self.transport.request("GET", url, self._scope(repository)), what)
            tags.extend(response.json().get("tags") or [])
            next_url = response.links.get("next", {}).get("url")
            if next_url:
                next_url = urljoin(url, next_url)
                if urlsplit(next_url).netloc != urlsplit(self.base).netloc:
                    raise RegistryError(f"{what}: next page link points to another host; refused")
            url = next_url
        return tags

    def head_manifest(self, repository: str, reference: str) -> str:
        """The digest a tag points to, from `Docker-Content-Digest` (no pull counted on Docker Hub)."""
        what = f"registry {self.registry}: manifest {repository}:{reference}"
        response = self.transport.request(
            "HEAD",
            f"{self.base}/v2/{repository}/manifests/{reference}",
            self._scope(repository),
            headers={"Accept": ACCEPT},
        )
        self._check(response, what)
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:  # some registries omit it on HEAD: fall back to GET
            data, _ = self.get_manifest(repository, reference)
            return sha256_digest(data)
        return validate_digest(digest)

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """Manifest bytes and Content-Type; verified when `reference` is a digest."""
        what = f"registry {self.registry}: manifest {repository}@{reference}"
        response = self.transport.request(
            "GET",
            f"{self.base}/v2/{repository}/manifests/{reference}",
            self._scope(repository),
            headers={"Accept": ACCEPT},
        )
        self._check(response, what)
        data = response.content[: MAX_DOCUMENT_BYTES + 1]
        if len(data) > MAX_DOCUMENT_BYTES:
            raise RegistryError(f"{what}: larger than {MAX_DOCUMENT_BYTES} bytes; refused")
        if reference.startswith("sha256:") and sha256_digest(data) != reference:
            raise DigestMismatchError(f"{what}: content has digest {sha256_digest(data)}")
        return data, response.headers.get("Content-Type", "")

    def download_blob(self, repository: str, digest: str, dest: Path) -> None:
        """Stream a blob to a temporary file, verify its sha256, then rename it to `dest`.

        A dropped connection resumes with `Range` from the bytes already written.
        """
        validate_digest(digest)
        what = f"registry {self.registry}: blob {digest} of {repository}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        hasher = hashlib.sha256()
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for _attempt in range(5):
                    headers = {"Range": f"bytes={written}-"} if written else {}
                    response = self.transport.request(
                        "GET",
                        f"{self.base}/v2/{repository}/blobs/{digest}",
                        self._scope(repository),
                        headers=headers,
                        stream=True,
                    )
                    with response:
                        self._check(response, what)
                        if written and response.status_code != 206:  # no resume: start again
                            out.seek(0)
                            out.truncate()
                            hasher, written = hashlib.sha256(), 0
                        try:
                            for chunk in response.iter_content(CHUNK):
                                out.write(chunk)
                                hasher.update(chunk)
                                written += len(chunk)
                            break
                        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
                            log.warning("%s: connection lost after %d bytes (%s); resuming", what, written, err)
                else:
                    raise RegistryError(f"{what}: download kept failing; try again later")
            got = "sha256:" + hasher.hexdigest()
            if got != digest:
                raise DigestMismatchError(f"{what}: downloaded bytes have digest {got}; refused")
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def get_blob_bytes(self, repository: str, digest: str) -> bytes:
        """A small blob (an image config) in memory, verified."""
        what = f"registry {self.registry}: blob {digest} of {repository}"
        response = self.transport.request("GET", f"{self.base}/v2/{repository}/blobs/{digest}", self._scope(repository))
        self._check(response, what)
        data = response.content
        if sha256_digest(data) != digest:
            raise DigestMismatchError(f"{what}: content has digest {sha256_digest(data)}; refused")
        return data
