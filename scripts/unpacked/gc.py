"""Garbage collection and pruning, run by operators outside the Snakemake DAG.

`prune` removes the published links and metadata of names that no recipe entry asks for any more
(never those of entries that merely failed to resolve), refusing to remove more than a fraction of
what is published unless forced: an emptied or truncated recipe must not wipe the tree.

`collect` then removes what nothing refers to and that is older than a grace period (so a user who
resolved a link a moment ago keeps a working image for a while): flat images no link points to,
extracted layers and blobs that no resolved image uses. Both go through the publisher, so on
CernVM-FS they happen inside a transaction, and both can be previewed with `dry_run`.

Only what the layout defines is ever removed: links named `<registry>/<repository>:<tag>` (or
`@sha256:<hex>`, or under `.multiarch/<arch>/`) that point into `.flat/`, entries of `.flat/`,
`layers/` and `blobs/` named by a digest, the dot-named leftovers of killed jobs beside them, and
the logs of what it removes (and those an older version wrote per published name).
A flat image that any link in the root points to (an operator's alias too) is kept. Every removal
is crash-safe: the marker goes first, then the product is renamed into a trash directory and
deleted there; a killed collection leaves every product whole or gone, and the next one empties
the trash.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ImageReferenceError, PublishError
from .fsutil import discard, empty_trash
from .publish import DirectoryPublisher
from .recipe import Recipe
from .reference import parse_reference
from .state import image_paths, load_image_file
from .store import ARCH_PART, MULTIARCH_DIR, Store

log = logging.getLogger(__name__)
_HEX = re.compile(r"^[0-9a-f]{64}\Z")
# What killed jobs leave beside the products: staging directories, asides, temporary links, parts.
_LEFTOVER = re.compile(r"^\.+[0-9a-f]{64}\.|^\..+\.link-\d+\Z")


@dataclass
class Plan:
    """What would be removed: published names, and paths of flats, layers and blobs."""

    links: list[str] = field(default_factory=list)
    flats: list[Path] = field(default_factory=list)
    layers: list[Path] = field(default_factory=list)
    blobs: list[Path] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)  # of killed jobs, and settings of old runs

    def lines(self) -> list[str]:
        groups = (self.flats, self.layers, self.blobs, self.leftovers)
        return [*self.links, *(str(p) for group in groups for p in group)]


def is_published_name(name: str) -> bool:
    """True if `name` is a path the layout publishes: `<registry>/<repository>:<tag>`, `...@sha256:<hex>`,
    or either under `.multiarch/<arch>[:<variant>]/`."""
    parts = name.split("/", 2)
    if parts[0] == MULTIARCH_DIR:
        if len(parts) < 3 or not all(ARCH_PART.match(p) for p in parts[1].split(":", 1)):
            return False
        name = parts[2]
    try:
        ref = parse_reference(name)
    except ImageReferenceError:
        return False
    return not ref.is_glob and ref.published_name == name


def _root_symlinks(store: Store) -> list[tuple[str, Path]]:
    """Every symlink in the root outside its dot directories (but .multiarch), by relative name."""
    found = []
    for dirpath, dirnames, filenames in os.walk(store.root):
        top = dirpath == str(store.root)
        # Names never start with a dot; of the root's dot directories only .multiarch holds links.
        dirnames[:] = [d for d in dirnames if not d.startswith(".") or (top and d == MULTIARCH_DIR)]
        # os.walk lists links to directories in `dirnames` but does not descend into them.
        for entry in filenames + dirnames:
            path = Path(dirpath, entry)
            if path.is_symlink():
                found.append((path.relative_to(store.root).as_posix(), path))
    return found


def published_names(store: Store) -> dict[str, Path]:
    """Every name we published under the root, with its link; nothing else found there counts."""
    found = {}
    for name, link in _root_symlinks(store):
        leaf = os.readlink(link).rpartition("/")[2]
        if (
            _HEX.match(leaf)
            and is_published_name(name)
            and os.readlink(link) == store.link_target(name, f"sha256:{leaf}")
        ):
            found[name] = link
    return found


def _wanted(name: str, recipe: Recipe) -> bool:
    """True if some recipe entry asks for the published name `name` (globs included)."""
    for ref in recipe.images:
        pattern = ref.published_name
        if name == pattern or (ref.is_glob and fnmatch.fnmatchcase(name, pattern)):
            return True
    return False


def plan_prune(store: Store, recipe: Recipe) -> Plan:
    plan = Plan()
    for name in sorted(published_names(store)):
        bare = name.split("/", 2)[2] if name.startswith(f"{MULTIARCH_DIR}/") else name
        if not _wanted(bare, recipe):
            plan.links.append(name)
    return plan


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return path.lstat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _digest_named(store: Store, what: str) -> list[Path]:
    """Products of one kind named by a digest (the Store's layout; staging dot names are not)."""
    return [p for p in store.on_disk(what) if _HEX.match(p.name)]


def plan_collect(store: Store, grace_days: float) -> Plan:
    """Flats, layers and blobs that nothing refers to and that are older than the grace period."""
    cutoff = time.time() - grace_days * 86400
    plan = Plan()
    linked = {os.path.realpath(link) for _, link in _root_symlinks(store)}
    for flat in _digest_named(store, "root.flat"):
        marker = store.flat_marker(f"sha256:{flat.name}")
        if str(flat.resolve()) not in linked and _older_than(marker if marker.exists() else flat, cutoff):
            plan.flats.append(flat)
    used: set[str] = set()
    # Every state on disk, not only this resolution's: an image whose registry was down when it was
    # last resolved keeps its documents and layers.
    for path in image_paths(store):
        image = load_image_file(path)
        if image is not None:
            digests = [*image.layer_digests, image.config_digest, image.manifest_digest, image.source_digest]
            used.update(digest.split(":")[1] for digest in digests)

    def unused(what: str) -> list[Path]:
        return [p for p in _digest_named(store, what) if p.name not in used and _older_than(p, cutoff)]

    plan.flats.extend(unused("built_flat"))  # copies a transaction publisher has published
    plan.layers = unused("layer")
    plan.blobs = unused("blob")
    plan.leftovers = [p for p in _leftovers(store) if _older_than(p, cutoff)]
    return plan


def _leftovers(store: Store) -> list[Path]:
    """Dot-named entries killed jobs left beside the products, the settings files of old runs, and
    the batches (and their outputs and logs) of earlier runs."""
    found = [
        path
        for what in ("root.flat", "built_flat", "layer", "blob")
        for path in store.beside(what)
        if _LEFTOVER.match(path.name)
    ]
    found += [path for name, path in _root_symlinks(store) if _LEFTOVER.match(path.name)]
    try:
        current = store.settings.read_bytes()
    except FileNotFoundError:
        current = b""
    found += [p for p in store.on_disk("run_settings") if p.read_bytes() != current]
    found += store.old_publish_logs()
    # Batches of small images (workflow.Plan.form_batches): formed anew by every run that has some.
    found += [path for what in ("batch", "batch_published", "log.publish_batch") for path in store.on_disk(what)]
    return sorted(found)


def guard(plan: Plan, store: Store, max_fraction: float, force: bool) -> None:
    """Refuse to unpublish more than `max_fraction` of the published links at once, unless forced."""
    total = len(published_names(store))
    if plan.links and not force and len(plan.links) > max_fraction * total:
        msg = (
            f"prune would remove {len(plan.links)} of {total} published links (more than "
            f"{max_fraction:.0%}); check the recipe, then rerun with --force if that is really meant"
        )
        raise PublishError(msg)


def execute(plan: Plan, store: Store, publisher: DirectoryPublisher) -> None:
    """Remove what `plan` lists: published paths inside one transaction, then the work store.

    Each product loses its marker first, so a kill at any point never leaves a marker whose product
    is half gone: the next sync rebuilds what it needs, the next collection finishes the rest.
    """
    finish_interrupted(store, publisher)
    for name in plan.links:  # forget them: an entry added back is resolved and published again
        discard(store.published_marker(name), store.work_trash)
        discard(store.state(name), store.work_trash)
    for flat in plan.flats:
        discard(store.flat_marker(f"sha256:{flat.name}"), store.work_trash)
        store.flat_published(f"sha256:{flat.name}").unlink(missing_ok=True)
        store.flat_names(f"sha256:{flat.name}").unlink(missing_ok=True)  # written again if it comes back
        store.flat_lock(f"sha256:{flat.name}").unlink(missing_ok=True)  # no job runs: gc holds the run lock
    in_root = [p for p in plan.flats + plan.leftovers if p.is_relative_to(store.root)]
    if plan.links or in_root:
        with publisher.transaction():
            for name in plan.links:
                publisher.unpublish(name)
                log.info("unpublished %s", name)
            for path in in_root:
                discard(path, store.root_trash)  # works whatever modes the image has
                log.info("removed %s", path)
    for path in plan.flats + plan.leftovers:
        if not path.is_relative_to(store.root):
            discard(path, store.work_trash)
    # The logs of what is gone: a product collected today may come back, with a log of its own.
    for rule, products in (("publish_image", plan.flats), ("extract_layer", plan.layers), ("fetch_blob", plan.blobs)):
        for path in products:
            store.log(rule, f"sha256:{path.name}").unlink(missing_ok=True)
    _remove_empty_dirs(store.work / "logs" / "publish_image")
    for layer in plan.layers:
        discard(store.layer_marker(f"sha256:{layer.name}"), store.work_trash)  # the marker first
        discard(layer, store.work_trash)
    for blob in plan.blobs:
        discard(blob, store.work_trash)


def _remove_empty_dirs(base: Path) -> None:
    """Directories left empty below `base` (the old layout's logs, by registry and repository)."""
    for directory, _dirs, _files in os.walk(base, topdown=False):  # deepest first
        if directory != str(base):
            with contextlib.suppress(OSError):  # not empty: kept
                os.rmdir(directory)


def finish_interrupted(store: Store, publisher: DirectoryPublisher) -> None:
    """Empty the trash a killed collection left (in the root inside a transaction)."""
    if empty_trash(store.work_trash):
        log.info("finished removals an interrupted collection left in %s", store.work_trash)
    if store.root_trash.exists() and os.listdir(store.root_trash):
        with publisher.transaction():
            empty_trash(store.root_trash)
        log.info("finished removals an interrupted collection left in %s", store.root_trash)


def collect_garbage(
    store: Store,
    publisher: DirectoryPublisher,
    grace_days: float,
    prune_for: Recipe | None = None,
    max_fraction: float = 0.2,
    force: bool = False,
    dry_run: bool = False,
) -> Plan:
    """Plan a collection (and, given a recipe, a prune guarded by `max_fraction`), then carry it
    out unless `dry_run`; the plan. The caller holds the run lock."""
    # Links are counted before pruning: flats that only pruned links used go at the next collection.
    plan = plan_collect(store, grace_days)
    if prune_for is not None:
        plan.links = plan_prune(store, prune_for).links
        guard(plan, store, max_fraction, force)
    if not dry_run:
        execute(plan, store, publisher)
    return plan


def summary(plan: Plan) -> str:
    return json.dumps({k: len(v) for k, v in vars(plan).items()})
