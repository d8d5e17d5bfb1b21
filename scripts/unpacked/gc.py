"""Garbage collection and pruning, run by operators outside the Snakemake DAG.

`prune` removes the published links and metadata of names that no recipe entry asks for any more
(never those of entries that merely failed to resolve), refusing to remove more than a fraction of
what is published unless forced: an emptied or truncated recipe must not wipe the tree.

`collect` then removes what nothing refers to and that is older than a grace period (so a user who
resolved a link a moment ago keeps a working image for a while): flat images no link points to,
extracted layers and blobs that no resolved image uses. Both go through the publisher, so on
CernVM-FS they happen inside a transaction, and both can be previewed with `dry_run`.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PublishError
from .fsutil import remove_tree
from .publish import DirectoryPublisher
from .recipe import Recipe
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What would be removed, as paths."""

    links: list[Path] = field(default_factory=list)
    flats: list[Path] = field(default_factory=list)
    layers: list[Path] = field(default_factory=list)
    blobs: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [str(p) for group in (self.links, self.flats, self.layers, self.blobs) for p in group]


def published_links(root: Path) -> list[Path]:
    """Every symlink we publish: `<registry>/<repo>:<tag>` and `.multiarch/<arch>/...`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts[:1] in ((".flat",), (".metadata",)):
            dirnames[:] = []
            continue
        for name in filenames + dirnames:
            path = Path(dirpath, name)
            if path.is_symlink() and not name.startswith("."):
                found.append(path)
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
    for link in published_links(store.root):
        rel = link.relative_to(store.root).as_posix()
        name = rel.split("/", 2)[2] if rel.startswith(".multiarch/") else rel
        if not _wanted(name, recipe):
            plan.links.append(link)
    return plan


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return path.lstat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def plan_collect(store: Store, grace_days: float) -> Plan:
    """Flats, layers and blobs that nothing refers to and that are older than the grace period."""
    cutoff = time.time() - grace_days * 86400
    plan = Plan()
    linked = {os.path.realpath(link) for link in published_links(store.root)}
    for flat in sorted(store.root.glob(".flat/*/*")):
        marker = store.work / "flats" / f"{flat.name}.json"
        if str(flat.resolve()) not in linked and _older_than(marker if marker.exists() else flat, cutoff):
            plan.flats.append(flat)
    used: set[str] = set()
    # Every state on disk, not only this resolution's: an image whose registry was down when it was
    # last resolved keeps its documents and layers.
    for path in store.work.glob("state/images/**/*.json"):
        try:
            state = json.loads(path.read_text())
        except ValueError:
            continue
        used.update(layer["digest"].split(":")[1] for layer in state["layers"])
        used.update(state[key].split(":")[1] for key in ("config_digest", "manifest_digest", "source_digest"))
    for built in sorted(store.work.glob("flat/*/*")):  # copies a transaction publisher has published
        if built.name not in used and _older_than(built, cutoff):
            plan.flats.append(built)
    for layer in sorted(store.work.glob("layers/*/*")):
        if layer.name not in used and not layer.name.startswith(".") and _older_than(layer, cutoff):
            plan.layers.append(layer)
    for blob in sorted(store.work.glob("blobs/sha256/*")):
        if blob.name not in used and not blob.name.startswith(".") and _older_than(blob, cutoff):
            plan.blobs.append(blob)
    return plan


def guard(plan: Plan, store: Store, max_fraction: float, force: bool) -> None:
    """Refuse to unpublish more than `max_fraction` of the published links at once, unless forced."""
    total = len(published_links(store.root))
    if plan.links and not force and len(plan.links) > max_fraction * total:
        msg = (
            f"prune would remove {len(plan.links)} of {total} published links (more than "
            f"{max_fraction:.0%}); check the recipe, then rerun with --force if that is really meant"
        )
        raise PublishError(msg)


def execute(plan: Plan, store: Store, publisher: DirectoryPublisher) -> None:
    """Remove what `plan` lists: published paths inside one transaction, then the work store."""
    if plan.links or plan.flats:
        with publisher.transaction():
            for link in plan.links:
                rel = link.relative_to(store.root).as_posix()
                meta = store.root / ".metadata" / rel
                link.unlink()
                remove_tree(meta)
                log.info("unpublished %s", rel)
            for flat in plan.flats:
                remove_tree(flat)  # works whatever modes the image has
                remove_tree(store.work / "flats" / f"{flat.name}.json")
                log.info("removed flat image %s", flat)
    for path in plan.layers + plan.blobs:
        remove_tree(path)
    for link in plan.links:  # forget them: an entry added back is resolved and published again
        name = link.relative_to(store.root).as_posix()
        remove_tree(store.published_marker(name))
        remove_tree(store.state(name))


def summary(plan: Plan) -> str:
    return json.dumps({k: len(v) for k, v in vars(plan).items()})
