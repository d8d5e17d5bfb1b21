"""Registry API: tag lists, manifest HEAD/GET, verified blob downloads."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import requests

from .auth import RealmCache
from .bodies import Cap
from .credentials import lookup_credentials
from .errors import AnswerCutError, DigestMismatchError, NotFoundError, RegistryError, TooLargeError
from .manifests import ACCEPT
from .netsettings import RegistrySettings
from .progress import Progress
from .reference import ImageRef, validate_digest
from .retries import RESUME_ATTEMPTS, resume_backoff, retries_note
from .transport import DEFAULT_MAX_CONNECTIONS, RegistryTransport

log = logging.getLogger(__name__)
# A blob whose bytes do not match its digest is fetched again from scratch this many times (a resumed
# download could have joined two different byte streams) before it is refused.
REFETCHES_ON_MISMATCH = 1
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-")


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

    def __init__(self, ref: ImageRef, settings: RegistrySettings, realms: RealmCache | None = None) -> None:
        """`settings`: `config.client_settings(config, ref.registry)`; `realms`: the run's token realms."""
        self.registry = ref.registry
        scheme = "http" if settings.insecure else ref.scheme
        self.base = f"{scheme}://{ref.api_host}"
        self.settings = settings
        self.transport = RegistryTransport(
            ref.registry,
            lookup_credentials(ref.registry, settings.username_env, settings.password_env),
            settings.timeout,
            settings.retries,
            DEFAULT_MAX_CONNECTIONS if settings.max_connections is None else settings.max_connections,
            settings.deadline,
            settings.min_rate,
            realms,
        )

    def _check(self, response: requests.Response, what: str) -> requests.Response:
        if response.status_code == 404:
            raise NotFoundError(f"{what}: not found ({_error_text(response)})")
        if response.status_code == 429:
            after = response.headers.get("Retry-After")
            when = f" (it asks to retry after {after.strip()})" if after else ""
            raise RegistryError(f"{what}: rate limited by the registry (HTTP 429){when}; try again later")
        if not response.ok:
            text = _error_text(response)
            status = f"HTTP {response.status_code}"
            raise RegistryError(f"{what}: {text}" if text.startswith(status) else f"{what}: {status}: {text}")
        return response

    @staticmethod
    def _scope(repository: str) -> str:
        return f"repository:{repository}:pull"

    def list_tags(self, repository: str) -> list[str]:
        """Every tag, following `Link: <..>; rel="next"` verbatim and only on the same host."""
        url: str | None = f"{self.base}/v2/{repository}/tags/list"
        tags: list[str] = []
        seen: set[str] = set()
        while url and url not in seen:
            seen.add(url)
            what = f"registry {self.registry}: tag list of {repository}"
            response = self._check(self.transport.request("GET", url, self._scope(repository), what=what), what)
            try:
                page = response.json().get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{what}: the registry sent something that is not a tag list") from None
            if not isinstance(page, list):
                raise RegistryError(f"{what}: the registry sent something that is not a tag list")
            tags.extend(page)
            next_url = response.links.get("next", {}).get("url")
            if next_url:
                next_url = urljoin(url, next_url)
                if urlsplit(next_url).netloc != urlsplit(self.base).netloc:
                    raise RegistryError(f"{what}: next page link points to another host; refused")
            url = next_url
        return tags

    def _manifest_request(self, method: str, repository: str, reference: str, what: str) -> requests.Response:
        """HEAD or GET a manifest, accepting all four manifest types (else registries convert or 404)."""
        most = self.settings.manifest_bytes
        response = self.transport.request(
            method,
            f"{self.base}/v2/{repository}/manifests/{reference}",
            self._scope(repository),
            what=what,
            headers={"Accept": ACCEPT},
            cap=Cap(most, f"larger than {most} bytes (setting limits.manifest_bytes)"),
        )
        return self._check(response, what)

    def head_manifest(self, repository: str, reference: str) -> str:
        """The digest a tag points to, from `Docker-Content-Digest` (no pull counted on Docker Hub)."""
        what = f"registry {self.registry}: manifest {repository}:{reference}"
        response = self._manifest_request("HEAD", repository, reference, what)
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:  # some registries omit it on HEAD: fall back to GET
            data, _ = self.get_manifest(repository, reference)
            return sha256_digest(data)
        return validate_digest(digest)

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """Manifest bytes and Content-Type; verified when `reference` is a digest."""
        what = f"registry {self.registry}: manifest {repository}@{reference}"
        response = self._manifest_request("GET", repository, reference, what)
        data = response.content  # at most limits.manifest_bytes: read so far and no further
        if reference.startswith("sha256:") and sha256_digest(data) != reference:
            raise DigestMismatchError(f"{what}: content has digest {sha256_digest(data)}")
        return data, response.headers.get("Content-Type", "")

    def download_blob(self, repository: str, digest: str, dest: Path, size: int | None = None) -> None:
        """Stream a blob to a temporary file, verify its sha256, then rename it to `dest`.

        `size` is the size the manifest declares (None or negative: unknown); a registry that sends
        more is refused after one byte more. A dropped connection resumes with `Range` from the
        bytes already written (or starts again if the registry ignores `Range`). Bytes that do not
        match the digest are fetched once more from scratch, then refused. On any failure nothing
        is left at `dest` or beside it.
        """
        validate_digest(digest)
        what = f"registry {self.registry}: blob {digest} of {repository}"
        declared = size if size is not None and size >= 0 else None
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A killed earlier download of this blob may have left its partial file (one job per blob, the
        # small ones fetched while resolving have none, and the run lock keeps two runs apart, so no
        # partial file here is in use).
        for stale in dest.parent.glob(f".{dest.name}.*.part"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                for fetch in range(REFETCHES_ON_MISMATCH + 1):
                    got = self._fetch_blob(repository, digest, declared, out, what)
                    if got == digest:
                        break
                    if fetch < REFETCHES_ON_MISMATCH:
                        log.warning("%s: downloaded bytes have digest %s; fetching it again", what, got)
                else:
                    msg = f"{what}: downloaded bytes have digest {got} (twice); refused"
                    raise DigestMismatchError(msg)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _fetch_blob(self, repository: str, digest: str, size: int | None, out: BinaryIO, what: str) -> str:
        """Download the whole blob into `out` (emptied first), resuming cut transfers; its digest.

        A cut transfer resumes at most RESUME_ATTEMPTS times; one stopped at its deadline (too slow)
        at most `retries` times.
        """
        out.seek(0)
        out.truncate()
        hasher = hashlib.sha256()
        written = cuts = overdue = 0
        progress = Progress(what, size, log, doing="downloaded")
        while True:
            time.sleep(resume_backoff(cuts + overdue))
            headers = {"Accept-Encoding": "identity"}  # the digest is of the bytes as stored
            if written:
                headers["Range"] = f"bytes={written}-"
            response = self.transport.request(
                "GET",
                f"{self.base}/v2/{repository}/blobs/{digest}",
                self._scope(repository),
                what=what,
                headers=headers,
                stream=True,
                blob=True,
            )
            with response:
                self._check(response, what)
                if written and not _resumes_at(response, written):  # no resume: start again
                    log.warning("%s: the registry did not resume at byte %d; starting again", what, written)
                    out.seek(0)
                    out.truncate()
                    hasher, written = hashlib.sha256(), 0
                    progress.restart()
                cap = None if size is None else Cap(size - written, f"more than the {size} bytes its manifest declares")
                try:
                    for chunk in self.transport.chunks(response, cap):
                        out.write(chunk)
                        hasher.update(chunk)
                        written += len(chunk)
                        progress.advance(len(chunk))
                    return "sha256:" + hasher.hexdigest()
                except AnswerCutError as cut:
                    cuts, overdue = (cuts, overdue + 1) if cut.expired else (cuts + 1, overdue)
                    if overdue > self.transport.retries:
                        raise RegistryError(f"{what}: {cut.reason} ({retries_note(self.transport.retries)})") from cut
                    if cuts > RESUME_ATTEMPTS:
                        msg = f"{what}: the download was cut {cuts} times; try again later"
                        raise RegistryError(msg) from cut
                    log.warning("%s: %s after %d bytes; resuming", what, cut.reason, written)

    def get_blob_bytes(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """A small blob (an image config) in memory, verified; at most `limits.config_bytes`.

        `size` is the size the manifest declares (None or negative: unknown). A declared size above
        the limit is refused before any request; bytes beyond either are never read.
        """
        what = f"registry {self.registry}: config {digest} of {repository}"
        most = self.settings.config_bytes
        if size is not None and size > most:
            msg = f"{what}: its manifest declares {size} bytes, more than {most} (setting limits.config_bytes); refused"
            raise TooLargeError(msg)
        if size is not None and size >= 0:
            cap = Cap(size, f"more than the {size} bytes its manifest declares")
        else:
            cap = Cap(most, f"larger than {most} bytes (setting limits.config_bytes)")
        response = self.transport.request(
            "GET",
            f"{self.base}/v2/{repository}/blobs/{digest}",
            self._scope(repository),
            what=what,
            blob=True,
            cap=cap,
        )
        self._check(response, what)
        data = response.content
        if sha256_digest(data) != digest:
            raise DigestMismatchError(f"{what}: content has digest {sha256_digest(data)}; refused")
        return data


def _resumes_at(response: requests.Response, offset: int) -> bool:
    """True if `response` is a 206 whose Content-Range starts at `offset`."""
    if response.status_code != 206:
        return False
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return match is not None and int(match.group(1)) == offset
