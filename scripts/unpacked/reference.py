"""Image references: `[scheme://]registry[:port]/repository(:tag|@sha256:hex|:tag@sha256:hex)`.

The registry is kept as written for directory names (unpacked.cern.ch publishes under
`registry.hub.docker.com/...`); `api_host` is where API calls go.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .bounded import bounded_repr, bounded_text
from .errors import ImageReferenceError

# Grammar from the distribution spec (reference/regexp.go), anchored.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9-]+)*(?::\d{1,5})?\Z")
_GLOB_CHARS = set("*?[")
# A glob may use the tag alphabet plus glob syntax.
_TAG_GLOB_RE = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!^]{1,128}\Z")

DOCKER_HUB_NAMES = {
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
}
DOCKER_HUB_API = "registry-1.docker.io"
# How unpacked.cern.ch's recipe names Docker Hub, and so what errors suggest.
DOCKER_HUB_SPELLING = "registry.hub.docker.com"
# registry/repository, at most (distribution/reference NameTotalLengthMax); it becomes a path.
MAX_NAME_LENGTH = 255
# How much of a recipe entry an error shows: every reference seen in practice whole, a huge one cut.
SHOWN_LIMIT = 200


def validate_digest(digest: str) -> str:
    """Return `digest` if it is `sha256:<64 lowercase hex>`; it becomes part of file paths."""
    if not DIGEST_RE.match(digest):
        msg = f"invalid digest {bounded_repr(digest)}: expected sha256:<64 lowercase hex characters>"
        raise ImageReferenceError(msg)
    return digest


def is_glob(tag: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in tag)


def matching_tags(tags: Iterable[object], pattern: str) -> list[str]:
    """The valid tags among a registry's answer `tags` that the glob `pattern` matches, sorted, once each.

    Tags become file names: one that is not a string or not a valid tag is never matched.
    """
    valid = {tag for tag in tags if isinstance(tag, str) and TAG_RE.match(tag)}
    return sorted(tag for tag in valid if fnmatch.fnmatchcase(tag, pattern))


@dataclass(frozen=True, order=True)
class ImageRef:
    """One parsed recipe entry. `tag` may be a glob until expanded."""

    scheme: str
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """Host:port that serves the registry API for this reference."""
        return DOCKER_HUB_API if self.registry in DOCKER_HUB_NAMES else self.registry

    @property
    def api_repository(self) -> str:
        """Repository name as the API expects it (`library/` added on Docker Hub)."""
        if self.registry in DOCKER_HUB_NAMES and "/" not in self.repository:
            return f"library/{self.repository}"
        return self.repository

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.api_host}"

    @property
    def is_glob(self) -> bool:
        return self.tag is not None and is_glob(self.tag)

    @property
    def name(self) -> str:
        """`registry/repository`, as written: the directory the image is published under."""
        return f"{self.registry}/{self.repository}"

    @property
    def published_name(self) -> str:
        """Path of the published link below the root: `registry/repository:tag` (or `@sha256:..`)."""
        if self.tag is not None:
            return f"{self.name}:{self.tag}"
        return f"{self.name}@{self.digest}"

    @property
    def manifest_reference(self) -> str:
        """What to ask the registry for: a pinned digest wins over the tag."""
        ref = self.digest or self.tag
        assert ref is not None
        return ref

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.scheme, self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.scheme}://{self.name}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def matches(self, pattern: str) -> bool:
        """True if this reference matches an `ignoreErrors` glob (with or without scheme)."""
        bare = str(self).split("://", 1)[1]
        pat = pattern.split("://", 1)[1] if "://" in pattern else pattern
        return fnmatch.fnmatchcase(bare, pat)


def _is_registry_host(component: str) -> bool:
    """Docker's rule (distribution/reference `splitDockerDomain`): the first component of a name is a
    registry host only if it has a '.' or a ':' or is `localhost`. Else `library/busybox` would send
    requests to a host named `library` (issue 7)."""
    return "." in component or ":" in component or component == "localhost"


def _docker_hub_spelling(scheme: str, path: str) -> str:
    """What to write instead of a reference without a registry: its Docker Hub name, as DUCC spells it."""
    if len(path) > SHOWN_LIMIT:  # the error shows the entry cut short; an example is enough here
        path = "<repository>:<tag>"
    elif "/" not in path.split("@", 1)[0].split(":", 1)[0]:
        path = f"library/{path}"  # Docker Hub's official images
    prefix = "http://" if scheme == "http" else ""
    return f"{prefix}{DOCKER_HUB_SPELLING}/{path}"


def parse_reference(text: str) -> ImageRef:
    """Parse one recipe entry; raise ImageReferenceError saying what is wrong."""
    shown = bounded_repr(text, SHOWN_LIMIT)  # the entry as written, in every message
    if not isinstance(text, str) or not text.strip():
        raise ImageReferenceError(f"empty image reference {shown}")
    text = text.strip()
    scheme = "https"
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme not in ("https", "http"):
            msg = f"{shown}: scheme {bounded_repr(scheme)} is not supported (use https:// or http://)"
            raise ImageReferenceError(msg)
    if "/" not in text:
        msg = f"{shown}: no registry host; name the registry first, e.g. {_docker_hub_spelling(scheme, text)}"
        raise ImageReferenceError(msg)
    registry, rest = text.split("/", 1)
    if not _HOST_RE.match(registry):
        raise ImageReferenceError(f"{shown}: {bounded_repr(registry)} is not a valid registry host[:port]")
    if not _is_registry_host(registry):
        msg = (
            f"{shown}: {bounded_repr(registry, 60)} is not a registry host (a host has a '.' or a ':', or is "
            f"localhost); name the registry first, e.g. {_docker_hub_spelling(scheme, text)}"
        )
        raise ImageReferenceError(msg)
    digest = None
    if "@" in rest:
        rest, digest = rest.rsplit("@", 1)
        try:
            validate_digest(digest)
        except ImageReferenceError as err:
            raise ImageReferenceError(f"{shown}: {err}") from None
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not tag:
            raise ImageReferenceError(f"{shown}: empty tag after ':'")
        valid = _TAG_GLOB_RE.match(tag) if is_glob(tag) else TAG_RE.match(tag)
        if not valid:
            raise ImageReferenceError(f"{shown}: invalid tag {bounded_repr(tag)}")
        if digest is not None and is_glob(tag):
            raise ImageReferenceError(f"{shown}: a glob tag cannot be pinned to a digest")
    if len(registry) + 1 + len(rest) > MAX_NAME_LENGTH:
        name = f"{bounded_text(registry, 60)}/..."
        msg = f"{shown}: the name {name} is longer than {MAX_NAME_LENGTH} characters (the registry API's limit)"
        raise ImageReferenceError(msg)
    if not REPOSITORY_RE.match(rest):
        msg = (
            f"{shown}: invalid repository {bounded_repr(rest, SHOWN_LIMIT)} (lower-case letters, digits and "
            "separators . _ __ - only, components joined by /)"
        )
        raise ImageReferenceError(msg)
    if tag is None and digest is None:
        raise ImageReferenceError(f"{shown}: no tag or digest (add :latest to mean latest)")
    return ImageRef(scheme, registry, rest, tag, digest)
