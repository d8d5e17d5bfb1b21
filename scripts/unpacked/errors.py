"""The project's error hierarchy.

Every message names what failed (image, registry, digest, layer entry) and, where it helps, what the
operator can do. Errors are caught once, at the command-line entry point, and printed as one line.
"""

import errno


class UnpackedError(Exception):
    """Base class of every error this package raises on purpose."""

    # The job step a failure belongs to when it is not the running one, as (action, key): a layer
    # the publish job extracts fails as that layer's extraction, as if its own job had failed.
    step: tuple[str, str] | None = None


class ConfigError(UnpackedError):
    """The configuration file is invalid."""


class RecipeError(UnpackedError):
    """The recipe, or one of its entries, is invalid."""


class ImageReferenceError(UnpackedError):
    """An image reference cannot be parsed."""


class RegistryError(UnpackedError):
    """A registry refused a request or answered something unusable."""


class AuthError(RegistryError):
    """Credentials are missing or wrong for a registry."""


class NotFoundError(RegistryError):
    """The registry does not know the repository, tag or digest."""


class UnsupportedImageError(RegistryError):
    """The manifest is not a runnable image we can unpack (schema 1, artifact, no platform)."""


class DigestMismatchError(UnpackedError):
    """Bytes do not match the digest they were asked for."""


class LayerError(UnpackedError):
    """A layer cannot be applied safely (hostile or corrupt content)."""


class PublishError(UnpackedError):
    """Publishing into the output root failed."""


class StoreError(UnpackedError):
    """Writing to the work store or the output root failed (disk full, read-only, permissions)."""


# What an operator can do about the usual reasons a write fails.
_WRITE_ADVICE = {
    errno.ENOSPC: "the filesystem is full: free space (or run `unpacked gc`), then run again",
    errno.EDQUOT: "the disk quota is exceeded: free space, then run again",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied: check the owner and modes of the directory",
}


# Failures of the machine, not of the content being written: never blamed on a layer or an image.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def write_failure(path: object, err: OSError) -> StoreError:
    """A StoreError that names the path being written and what to do (the OSError may name neither)."""
    reason = err.strerror or str(err)
    advice = _WRITE_ADVICE.get(err.errno or 0)
    detail = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    return StoreError(f"cannot write {path}{detail}: {reason}" + (f"; {advice}" if advice else ""))


class TooLargeError(RegistryError):
    """An answer (manifest, config, blob, tag list) is larger than a limit or its declared size."""


class AnswerCutError(RegistryError):
    """An answer's body stopped before its end: dropped, stalled, or stopped at its deadline.

    `expired` says it was stopped at its deadline; `reason` is the cause without the names.
    """

    def __init__(self, message: str, reason: str, expired: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.expired = expired
