"""The settings a registry client works with, typed: built by the caller from the validated config.

`config.client_settings(config, registry)` builds them; the registry client never reads the config.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegistrySettings:
    """One registry's settings (`registries.<host>`) and the size limits (`limits`) its answers obey."""

    insecure: bool
    timeout: float
    retries: int
    deadline: float
    min_rate: float
    max_connections: int | None  # None: the transport's default
    manifest_bytes: int
    config_bytes: int
    username_env: str | None = None
    password_env: str | None = None
