"""The project's error hierarchy.

Every message names what failed (image, registry, digest, layer entry) and, where it helps, what the
operator can do. Errors are caught once, at the command-line entry point, and printed as one line.
"""


class UnpackedError(Exception):
    """Base class of every error this package raises on purpose."""


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
