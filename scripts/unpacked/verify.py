"""`unpacked verify`: compare what is on disk with what its records say it must be, and repair it.

A flat image is checked against a fresh flatten of its extracted layers (their `layer.json` records
and `rootfs/`), built beside it; with `--layers`, each extracted layer is first checked against a
fresh extraction of its blob. Paths, types, modes, owners (as root), symlink targets and file
contents are compared (a file that is the same inode as the reference is the same content; others
are read). mtimes are not compared: the Apptainer files carry the time of their build.

With `repair`, a tree that differs is replaced by the fresh one (renamed into place, the damaged one
moved aside and removed); markers stay, so the next sync has nothing to redo.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnpackedError
from .extract import extract_layer
from .flatten import flatten_image
from .fsutil import discard
from .publish import DirectoryPublisher
from .safefs import replace_dir
from .state import LayerRecord, ResolvedImage
from .store import Store

log = logging.getLogger(__name__)
# Differences listed per tree; the count is always given in full.
SHOWN_DIFFERENCES = 10


@dataclass
class Finding:
    """One tree that differs from its reference."""

    what: str
    path: Path
    differences: list[str] = field(default_factory=list)
    repaired: bool = False

    def text(self) -> str:
        shown = "; ".join(self.differences[:SHOWN_DIFFERENCES])
        more = len(self.differences) - SHOWN_DIFFERENCES
        suffix = f"; and {more} more" if more > 0 else ""
        state = "repaired" if self.repaired else "DAMAGED"
        return f"{state}: {self.what} {self.path}: {len(self.differences)} difference(s): {shown}{suffix}"


@dataclass(frozen=True)
class _Entry:
    kind: str
    mode: int
    owner: tuple[int, int]
    size: int
    target: str
    inode: tuple[int, int]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "fifo" if stat.S_ISFIFO(mode) else "special"


def _entries(root: Path) -> dict[str, _Entry]:
    """Every path below `root` (relative) with what is compared. A directory that cannot be listed
    (an image's mode-000 directory, when not root) ends the walk there, in both trees alike."""
    found: dict[str, _Entry] = {}
    pending = [("", str(root))]
    while pending:
        rel, directory = pending.pop()
        try:
            names = os.listdir(directory)
        except PermissionError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            relpath = f"{rel}/{name}" if rel else name
            st = os.lstat(path)
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else (0, 0)
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            inode = (st.st_dev, st.st_ino)
            found[relpath] = _Entry(_kind(st.st_mode), stat.S_IMODE(st.st_mode), owner, size, target, inode)
            if stat.S_ISDIR(st.st_mode):
                pending.append((relpath, path))
    return found


def compare_trees(reference: Path, actual: Path) -> list[str]:
    """How `actual` differs from `reference`, one short line per path."""
    want, have = _entries(reference), _entries(actual)
    differences = [f"missing {rel}" for rel in sorted(want.keys() - have.keys())]
    differences += [f"unexpected {rel}" for rel in sorted(have.keys() - want.keys())]
    for rel in sorted(want.keys() & have.keys()):
        a, b = want[rel], have[rel]
        if a.kind != b.kind:
            differences.append(f"{rel} is a {b.kind}, not a {a.kind}")
        elif a.mode != b.mode:
            differences.append(f"{rel} has mode {b.mode:o}, not {a.mode:o}")
        elif a.owner != b.owner:
            differences.append(f"{rel} is owned by {b.owner}, not {a.owner}")
        elif a.target != b.target:
            differences.append(f"{rel} points to {b.target!r}, not {a.target!r}")
        elif a.kind == "file" and a.inode != b.inode and not _same_content(reference / rel, actual / rel, a, b):
            differences.append(f"{rel} has other content")
    return differences


def _same_content(left: Path, right: Path, a: _Entry, b: _Entry) -> bool:
    if a.size != b.size:
        return False
    try:
        return filecmp.cmp(left, right, shallow=False)
    except PermissionError:  # a mode-000 file when not root: size and mode are all we can compare
        return True


def _trash_for(store: Store, path: Path) -> Path:
    return store.work_trash if path.is_relative_to(store.work) else store.root_trash


def _fresh_path(final: Path) -> Path:
    """Where the reference tree of `final` is built: a dot name beside it (a leftover of a killed
    verify is collected by `unpacked gc` like any staging directory)."""
    return final.with_name(f".{final.name}.tmp-verify-{os.getpid()}")


def verify_layer(store: Store, layer: LayerRecord, repair: bool) -> Finding | None:
    """Check one extracted layer against a fresh extraction of its blob (None: same, or no blob)."""
    digest, path = layer.digest, store.layer(layer.digest)
    blob = store.blob(digest)
    if not store.layer_marker(digest).exists():
        return None  # not extracted (yet): the next sync does it
    if not blob.exists():
        log.warning("layer %s: its blob was collected; not verified", digest)
        return None
    fresh = _fresh_path(path)
    finding = Finding("extracted layer", path)
    try:
        extract_layer(blob, layer.diff_id, fresh, f"layer {digest}")
        finding.differences = compare_trees(fresh / "rootfs", path / "rootfs")
        if _index(fresh) != _index(path):
            finding.differences.append("layer.json differs from a fresh extraction")
        if finding.differences and repair:
            replace_dir(fresh, path)
            finding.repaired = True
    except (UnpackedError, OSError) as err:
        finding.differences = [f"could not verify: {err}"]
    finally:
        discard(fresh, store.work_trash)  # gone already if it was swapped in
    return finding if finding.differences else None


def _index(layer_dir: Path) -> Any:
    try:
        return json.loads((layer_dir / "layer.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def verify_flat(store: Store, image: ResolvedImage, publisher: DirectoryPublisher, repair: bool) -> Finding | None:
    """Check the published flat image of `image` against a fresh flatten of its extracted layers."""
    config_digest = image.config_digest
    final = store.flat(config_digest)
    if not final.is_dir():
        return None  # not built (yet): the next sync does it
    built = store.built_flat(config_digest)  # the fresh tree is built where flats are built
    fresh = _fresh_path(built)
    finding = Finding("flat image", final)
    try:
        layers = [store.layer(digest) for digest in image.layer_digests]
        config = json.loads(store.blob(config_digest).read_text())
        flatten_image(layers, image.diff_ids, config, fresh, image.reference)
        finding.differences = compare_trees(fresh, final)
        if finding.differences and repair:
            if not store.build_in_root:  # published by a transaction: copied in, inside one
                with publisher.transaction():
                    publisher.copy_flat_in(fresh, final)
            if built.is_dir():
                replace_dir(fresh, built)
            finding.repaired = True
    except (UnpackedError, OSError) as err:
        finding.differences = [f"could not verify: {err}"]
    finally:
        discard(fresh, _trash_for(store, fresh))  # gone already if it was swapped in
    return finding if finding.differences else None


@dataclass
class Report:
    flats: int
    layers: int
    damaged: list[Finding]

    @property
    def unrepaired(self) -> list[Finding]:
        return [finding for finding in self.damaged if not finding.repaired]


def verify_images(
    store: Store, images: list[ResolvedImage], publisher: DirectoryPublisher, layers: bool, repair: bool
) -> Report:
    """Check (and repair) the flat images of `images`, and first their layers if `layers`."""
    findings: list[Finding | None] = []
    by_digest = {layer.digest: layer for image in images for layer in image.layers} if layers else {}
    findings += [verify_layer(store, layer, repair) for layer in by_digest.values()]
    flats = {image.config_digest: image for image in images}
    findings += [verify_flat(store, image, publisher, repair) for image in flats.values()]
    return Report(len(flats), len(by_digest), [finding for finding in findings if finding is not None])
