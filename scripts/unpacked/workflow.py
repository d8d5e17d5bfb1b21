"""The glue the Snakefile calls: configuration, resolution before the DAG, and lookups by digest.

Kept here, not in `rules/common.smk`, so that it is typed, tested and shared with the CLI.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .config import load_config_file, validate_config
from .errors import UnpackedError
from .failures import clear_job_failures
from .fsutil import json_bytes, write_if_changed
from .recipe import load_recipe
from .resolve import Resolution, Resolver, load_resolution
from .store import Store, digest_hex

log = logging.getLogger(__name__)


def store_for(settings: dict[str, Any]) -> Store:
    build_in_root = settings.get("publisher", {}).get("type", "directory") == "directory"
    return Store(Path(settings["work_dir"]), Path(settings["output_root"]), build_in_root)


@dataclass
class Plan:
    """What the DAG is built from: resolved images and lookups from digests to images."""

    settings: dict[str, Any]
    store: Store
    resolution: Resolution
    blob_owner: dict[str, str] = field(default_factory=dict)  # layer or config hex -> published name
    diff_ids: dict[str, str] = field(default_factory=dict)  # layer hex -> diff_id
    config_owner: dict[str, str] = field(default_factory=dict)  # config hex -> published name

    def __post_init__(self) -> None:
        for name, state in sorted(self.resolution.images.items()):
            self.config_owner.setdefault(digest_hex(state["config_digest"]), name)
            self.blob_owner.setdefault(digest_hex(state["config_digest"]), name)
            for layer in state["layers"]:
                hexd = digest_hex(layer["digest"])
                self.blob_owner.setdefault(hexd, name)
                self.diff_ids.setdefault(hexd, layer["diff_id"])

    @property
    def unignored_failures(self) -> list[dict[str, Any]]:
        return [f for f in self.resolution.failures if not f["ignored"]]

    @property
    def names(self) -> list[str]:
        return sorted(self.resolution.images)

    def layers_of_config(self, config_hex: str) -> list[str]:
        state = self.resolution.images[self.config_owner[config_hex]]
        return [digest_hex(layer["digest"]) for layer in state["layers"]]

    def config_of(self, name: str) -> str:
        return digest_hex(self.resolution.images[name]["config_digest"])


def show_progress() -> None:
    """Print this package's INFO messages during parsing (Snakemake configures no handler for them)."""
    logger = logging.getLogger("unpacked")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("unpacked: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


# Work directories this process holds the run lock of (kept open until the process ends).
_RUN_LOCKS: dict[Path, IO[str]] = {}


def hold_run_lock(store: Store) -> None:
    """Make this process the only run using the work directory, until it exits.

    Resolution rewrites state files that the jobs of a running sync read, so a second `snakemake`
    (even `-n`) on the same work directory must wait for the first. The lock is an flock: it goes
    away with the process, also after a kill -9.
    """
    path = (store.work / "state" / "run.lock").resolve()
    if path in _RUN_LOCKS:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        msg = (
            f"work directory {store.work} is in use by a running sync ({holder}); wait for it to finish, then run again"
        )
        raise UnpackedError(msg) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _RUN_LOCKS[path] = handle


def prepare(config: dict[str, Any] | Path, main_process: bool) -> Plan:
    """Validate the config and resolve the recipe (main process, online) or load the last resolution."""
    if isinstance(config, Path):
        config = load_config_file(config)
    config = dict(config)
    if isinstance(config.get("offline"), str):  # `--config offline=true` arrives as a string
        config["offline"] = config["offline"].strip().lower() in ("true", "yes", "1", "on")
    settings = validate_config(config)
    online = main_process and not settings["offline"]
    # Read before anything is written: a refused recipe leaves no work directory behind.
    recipe = load_recipe(Path(settings["recipe"])) if online else None
    store = store_for(settings)
    write_if_changed(store.settings, json_bytes(settings))
    if main_process:
        hold_run_lock(store)
    if recipe is not None:
        show_progress()
        clear_job_failures(store)
        resolution = Resolver(settings, store).run(recipe)
        log.info("resolved %d image(s), %d failure(s)", len(resolution.images), len(resolution.failures))
    else:
        resolution = load_resolution(store)
    return Plan(settings, store, resolution)
