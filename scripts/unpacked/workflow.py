"""The glue the Snakefile calls: configuration, resolution before the DAG, and lookups by digest.

Kept here, not in `rules/common.smk`, so that it is typed, tested and shared with the CLI.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .config import load_config_file, validate_config
from .errors import ConfigError, UnpackedError
from .fsutil import json_bytes
from .history import ending_without_hook, open_journal
from .markers import drop_stale_markers
from .placeholders import drop_placeholders
from .recipe import Recipe, load_recipe
from .reference import parse_reference
from .resolve import Resolver
from .safefs import write_if_changed
from .state import (
    Resolution,
    ResolvedImage,
    batch_inputs,
    load_batch,
    load_resolution,
    save_batch,
    save_flat_names,
    save_flat_published,
)
from .store import Store, digest_hex, store_for

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What the DAG is built from: resolved images, lookups from digests to images, and the paths of
    each rule's inputs (all from the Store)."""

    settings: dict[str, Any]
    store: Store
    resolution: Resolution
    settings_path: Path  # what the jobs read: named by the settings' digest, never rewritten
    # With `only` set: the references this run syncs (every other image is left as it is).
    only: set[str] | None = None
    blob_owner: dict[str, str] = field(default_factory=dict)  # layer or config hex -> published name
    diff_ids: dict[str, str] = field(default_factory=dict)  # layer hex -> diff_id
    flats_using: dict[str, set[str]] = field(default_factory=dict)  # layer digest -> config digests
    names_of_flat: dict[str, list[str]] = field(default_factory=dict)  # config hex -> its names, sorted
    # Names whose publish job has work to do, as the check before the DAG found (main process only).
    to_publish: set[str] | None = None
    # Small flat images that share a publish job (`form_batches`): config hex -> the batch's digest.
    batch_of: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, image in sorted(self.resolution.images.items()):
            self.names_of_flat.setdefault(digest_hex(image.config_digest), []).append(name)
            self.blob_owner.setdefault(digest_hex(image.config_digest), name)
            for layer in image.layers:
                hexd = digest_hex(layer.digest)
                self.blob_owner.setdefault(hexd, name)
                self.diff_ids.setdefault(hexd, layer.diff_id)
                self.flats_using.setdefault(layer.digest, set()).add(image.config_digest)

    @property
    def names(self) -> list[str]:
        return sorted(self.resolution.images)

    def targets(self) -> list[str]:
        """The publish job of every flat image a name points to, plus a failing report when some
        entries did not resolve."""
        names = self.names
        failures = self.resolution.unignored_failures
        if self.only is not None:
            names = [name for name in names if self.resolution.images[name].reference in self.only]
            failures = [failure for failure in failures if failure.reference in self.only]
        configs = sorted({self.resolution.images[name].config_digest for name in names})
        targets = list(dict.fromkeys(self._job_output(config) for config in configs))
        if failures:
            targets.append(str(self.store.unresolved))
        # The report's files, once a run wrote them: in the DAG for `snakemake --report`, never a job.
        views = self.store.report_files()
        if all(path.exists() for path in views):
            targets += [str(path) for path in views]
        return targets

    def _job_output(self, config_digest: str) -> str:
        """The output of the job that publishes a flat image: its own, or its batch's."""
        batch = self.batch_of.get(digest_hex(config_digest))
        return str(self.store.batch_published(batch) if batch else self.store.flat_published(config_digest))

    def _image_of_flat(self, hexd: str) -> ResolvedImage:
        """The image a flat image is built from: its first name's (tags of one image share it)."""
        return self.resolution.images[self.names_of_flat[hexd][0]]

    def layers_of(self, hexd: str) -> list[str]:
        """What the publish job of flat image `hexd` needs of each layer: its extracted marker, or its
        blob.

        While the flat is not built, a layer that only this flat uses and that is not extracted yet
        is extracted by the publish job itself (one process per image, not two). A layer several
        flats share, or any layer once the flat exists (a layer repaired after its files were
        removed), has its own extract_layer job, run before the publish jobs.
        """
        image = self._image_of_flat(hexd)
        flat_built = self.store.built_flat(image.config_digest).is_dir()
        paths = []
        for digest in image.layer_digests:
            marker = self.store.layer_marker(digest)
            inline = not flat_built and len(self.flats_using[digest]) == 1 and not marker.exists()
            paths.append(str(self.store.blob(digest) if inline else marker))
        return paths

    def config_blob_of(self, hexd: str) -> str:
        return str(self.store.blob(self._image_of_flat(hexd).config_digest))

    def flat_names_of(self, hexd: str) -> str:
        """Which names point to the flat image: rewritten when one is added, leaves or moves, which
        makes its publish job run again."""
        return str(self.store.flat_names(self._image_of_flat(hexd).config_digest))

    def save_flat_names(self) -> None:
        """Write each flat image's names where they changed (before the DAG, as state files are).

        A flat image whose names are all published as they resolve now is marked done, so that no
        job runs for it: after an upgrade from one publish job per name, or when a name only left it.
        """
        for hexd, names in self.names_of_flat.items():
            images = [self.resolution.images[name] for name in names]
            sources = {image.name: image.source_digest for image in images}
            save_flat_names(self.store, images[0].config_digest, sources)
            if self.to_publish is not None and not self.to_publish.intersection(names):
                self._mark_done(hexd)

    def inputs_of(self, hexd: str) -> list[str]:
        """Every input of the publish job of flat image `hexd`."""
        return [*self.layers_of(hexd), self.config_blob_of(hexd), self.flat_names_of(hexd)]

    def _mark_done(self, hexd: str) -> None:
        """Write the publish job's output unless it is newer than each of the job's inputs."""
        try:
            newest = max(os.stat(path).st_mtime for path in self.inputs_of(hexd))
        except FileNotFoundError:
            return  # an input is made by a job of this run: Snakemake runs it, then this one
        config = self._image_of_flat(hexd).config_digest
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.store.flat_published(config)).st_mtime >= newest:
                return
        save_flat_published(self.store, config, self.names_of_flat[hexd])

    def form_batches(self) -> None:
        """Give small flat images with names to publish to shared publish jobs, up to
        `limits.images_per_job` each (main process, before the DAG; after `save_flat_names`).

        A job's process costs more than a small image (its imports alone), and Snakemake schedules
        thousands of ready jobs slowly. Images share a job only with images that wait for the same
        jobs of this run (say, the extraction of their shared base layer): a failed upstream job
        (a blob that cannot be fetched) then stops no image that would not have stopped anyway.
        Not in `only` runs (a few images, and the job must leave the others alone). Each batch is a
        state file named by its content, so a dry-run and the run after it form the same jobs; its
        output is removed here, as its images have work to do.
        """
        most = self.settings["limits"]["images_per_job"]
        if most < 2 or self.to_publish is None or self.only is not None:
            return
        small = self.settings["limits"]["small_image_bytes"]
        waiting_for: dict[tuple[str, ...], dict[str, list[str]]] = {}  # missing inputs -> hex -> inputs
        for hexd, names in sorted(self.names_of_flat.items()):
            if not self.to_publish.intersection(names):
                continue
            if sum(layer.size for layer in self._image_of_flat(hexd).layers) > small:
                continue
            inputs = self.inputs_of(hexd)
            pending = tuple(sorted(path for path in inputs if not os.path.exists(path)))
            waiting_for.setdefault(pending, {})[hexd] = inputs
        for group in waiting_for.values():
            waiting = list(group)
            for start in range(0, len(waiting), most):
                chunk = waiting[start : start + most]
                if len(chunk) < 2:
                    break  # one image alone keeps its own job
                batch = save_batch(self.store, {f"sha256:{hexd}": group[hexd] for hexd in chunk})
                self.store.batch_published(batch).unlink(missing_ok=True)
                self.batch_of.update(dict.fromkeys(chunk, batch))

    def batch_inputs(self, batch_hex: str) -> list[str]:
        return batch_inputs(self.store, f"sha256:{batch_hex}")

    def batch_publishing(self, batch_hex: str) -> str:
        """What the publish job of a batch will change, for its message (a dry-run shows them)."""
        flats = load_batch(self.store, f"sha256:{batch_hex}")
        names = [name for config in flats for name in self._changing(digest_hex(config))]
        return f"{len(flats)} images: " + _shown(names)

    def only_option(self, hexd: str) -> str:
        """` --only NAME ...` for the publish job's command when this run syncs some tags only, else
        nothing (the leading space is the separator: no trailing space on the command otherwise)."""
        if self.only is None:
            return ""
        return " " + shlex.join(["--only", *self._wanted(hexd)])

    def _wanted(self, hexd: str) -> list[str]:
        """The names of the flat image this run publishes (all, or those `only` names)."""
        names = self.names_of_flat[hexd]
        if self.only is None:
            return names
        return [name for name in names if self.resolution.images[name].reference in self.only]

    def publishing(self, hexd: str) -> str:
        """What the publish job of flat image `hexd` will change, for the job's message (a dry-run
        shows exactly these names)."""
        names = self._changing(hexd)
        if not names:
            return "none of its names to change; an input of the job changed (a layer extracted again)"
        return _shown(names)

    def _changing(self, hexd: str) -> list[str]:
        """The names of flat image `hexd` its publish job publishes (known in the main process)."""
        names = self._wanted(hexd)
        if self.to_publish is None:
            return names
        return [name for name in names if name in self.to_publish]


def _shown(names: list[str], most: int = 20) -> str:
    """Names for a job's message: the first `most` of them, then how many more."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


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
    path = store.run_lock.resolve()
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


# What `--config offline=...` may say (it arrives as a string); anything else is refused.
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def parse_offline(value: object) -> object:
    """`offline` as a boolean when it is a boolean word; other values are left for the schema."""
    if isinstance(value, int) and value in (0, 1):  # `--config offline=1` arrives as an integer
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS | _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise ConfigError(f"config: offline: expected true or false, got {value[:40]!r}")
    return value


def check_layout(store: Store) -> None:
    """Refuse an output root and a work directory that overlap, or a root holding the workflow.

    Overlapping, the work store (blobs, state, extracted layers and their symlinks) would be
    published to users, and garbage collection of the root would reach into the work store.
    """
    work, root, here = store.work.resolve(), store.root.resolve(), Path.cwd().resolve()
    if work == root or work.is_relative_to(root) or root.is_relative_to(work):
        msg = (
            f"config: work_dir ({store.work} -> {work}) and output_root ({store.root} -> {root}) overlap; "
            "give them separate directories (on the same filesystem), e.g. work_dir: work, output_root: output"
        )
        raise ConfigError(msg)
    if here.is_relative_to(root):
        msg = (
            f"config: output_root ({store.root} -> {root}) contains the workflow directory {here}; "
            "publish into a directory of its own"
        )
        raise ConfigError(msg)


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json_bytes(settings)).hexdigest()[:16]


@dataclass
class Configured:
    """A checked config, its Store and its recipe: what parsing the Snakefile needs, no more.

    Nothing here contacts a registry, takes the run lock or writes: `snakemake --lint`,
    `--list-rules` and `--unlock` stop here. The Plan (resolution, lock, state files) is built the
    first time the DAG asks for it.
    """

    settings: dict[str, Any]
    store: Store
    settings_path: Path  # what the jobs read: named by the settings' digest, never rewritten
    recipe: Recipe | None  # None when not resolving (a job, or offline)
    main_process: bool
    dry_run: bool = False
    # A run that executes jobs (`snakemake --cores N`, a cluster): not --report, --dag, --summary,
    # which build the DAG too, nor `unpacked resolve`. Only such a run has a history line.
    executing: bool = False
    _plan: Plan | None = None

    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = _build_plan(self)
        return self._plan


def configure(config: dict[str, Any] | Path, main_process: bool, dry_run: bool = False) -> Configured:
    """Validate the config and read the recipe; refuse either before anything is written."""
    if isinstance(config, Path):
        config = load_config_file(config)
    config = dict(config)
    if "offline" in config:
        config["offline"] = parse_offline(config["offline"])
    settings = validate_config(config)
    online = main_process and not settings["offline"]
    # Read before anything is written: a refused recipe leaves no work directory behind.
    recipe = load_recipe(Path(settings["recipe"])) if online else None
    if settings["only"].strip():
        if settings["offline"]:
            raise ConfigError("config: only= syncs tags as they are upstream now; it cannot go with offline=true")
        if recipe is not None:
            recipe = recipe.narrowed_to([parse_reference(text.strip()) for text in settings["only"].split(",")])
    store = store_for(settings)
    check_layout(store)
    settings_path = store.run_settings(settings_digest(settings))
    return Configured(settings, store, settings_path, recipe, main_process, dry_run)


def prepare(config: dict[str, Any] | Path, main_process: bool) -> Plan:
    """Configure and build the Plan at once (the CLI's `resolve`, tests, benchmarks)."""
    return configure(config, main_process).plan()


def _build_plan(configured: Configured) -> Plan:
    """Resolve the recipe (main process, online) or load the last resolution.

    Nothing is written before the run lock is held, and jobs read settings from a file named by their
    digest, so a second invocation with other settings can neither change a running sync nor be
    changed by it.
    """
    settings, store, settings_path = configured.settings, configured.store, configured.settings_path
    if not configured.main_process:
        return Plan(settings, store, load_resolution(store), settings_path)
    hold_run_lock(store)
    if settings["offline"] and not store.resolved.exists():
        msg = (
            f"offline=true, but {store.work} holds no resolution yet ({store.resolved} is missing); "
            "run once without offline=true first"
        )
        raise ConfigError(msg)
    write_if_changed(settings_path, json_bytes(settings))
    write_if_changed(store.settings, json_bytes(settings))
    show_progress()
    only = None
    if configured.recipe is None:
        resolution = load_resolution(store)
    elif settings["only"].strip():
        only = {str(ref) for ref in configured.recipe.images}
        resolution = Resolver(settings, store).run(configured.recipe, keep=load_resolution(store))
        log.info("resolved %s only; every other image stays as it is", ", ".join(sorted(only)))
    else:
        resolution = Resolver(settings, store).run(configured.recipe)
        log.info("resolved %d image(s), %d failure(s)", len(resolution.images), len(resolution.failures))
    # A transaction a crash left open is aborted and its images are published again. A dry-run (or
    # --dag, --summary) aborts nothing, as the hook's abort changes the published tree, but shows
    # the same jobs.
    from .publish import make_publisher

    publisher = make_publisher(settings, store)
    real_run = configured.executing and not configured.dry_run
    republish = publisher.recover() if real_run else publisher.left_open()
    for name in republish:
        again = "publishing it again" if name in resolution.images else "not resolved in this run: left as before"
        log.warning("%s: its publication was not committed before the last run ended; %s", name, again)
    # Placeholders stand for last run's ignored failures: gone, their jobs are in the DAG again.
    dropped = drop_placeholders(store)
    if dropped:
        log.info("%d placeholder output(s) of ignored failures removed: their jobs run again", dropped)
    check = drop_stale_markers(store, resolution.images, republish=set(republish))
    for problem in check.found:
        log.warning("%s", problem)
    if real_run:
        open_journal(store, resolution, only)
        # Snakemake goes back to the directory it was started in before the process exits.
        atexit.register(record_run_at_exit, settings_path, store.run_journal.resolve(), Path.cwd())
    plan = Plan(settings, store, resolution, settings_path, only, to_publish=check.to_publish)
    plan.save_flat_names()
    plan.form_batches()
    return plan


def record_run_at_exit(settings_path: Path, journal: Path, workdir: Path) -> None:
    """A run that had nothing to do ends without Snakemake's onsuccess: its history line, index
    page and report are written here, when the process exits (one the end-of-run hook already
    recorded has no journal left). So are other invocations that resolve without running jobs
    (`snakemake --report`). A run killed outright leaves its journal; the next run records it as
    interrupted."""
    if not journal.exists():
        return
    status = ending_without_hook()
    command = [sys.executable, "-m", "unpacked.cli", "record-run", "--settings", str(settings_path), "--status", status]
    subprocess.run(command, cwd=workdir, check=False)
