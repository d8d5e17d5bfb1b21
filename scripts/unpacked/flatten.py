"""Flatten extracted layers into one image tree, applying OCI whiteout and opaque rules.

For each layer, in order: its opaque markers and whiteouts delete from what the LOWER layers made
(so they never touch what the same layer creates, whatever the entry order), then its entries are
merged in: directory over directory merges, anything else replaces. Regular files are hard links to
the extracted layer (one link call per file); directories are the image's own. Nothing in the tree
is ever opened for writing, so no image can change a shared file.

The tree is built in a private staging directory next to its final place and renamed into place.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from .apptainer import write_sandbox_files
from .errors import LayerError
from .extract import LayerIndex, read_layer_index
from .fsutil import copy_metadata, remove_tree
from .paths import resolve_in_root, resolve_parent
from .safefs import staged_dir

log = logging.getLogger(__name__)


class _Flattener:
    def __init__(self, root: str, what: str) -> None:
        self.root = root
        self.what = what
        # Directory metadata (stat, mode) to apply at the end (final modes may forbid writing into them).
        self.dir_meta: dict[str, tuple[os.stat_result, int]] = {}
        self.dir_modes: dict[str, int] = {}  # the current layer's directory modes, see LayerIndex
        self.files = 0

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _delete(self, rel: str) -> None:
        full = self._abs(rel)
        was_dir = os.path.isdir(full) and not os.path.islink(full)
        remove_tree(Path(full))
        if was_dir:  # only a directory can have pending metadata below it (files: the hot path)
            prefix = rel + "/"
            self.dir_meta = {k: v for k, v in self.dir_meta.items() if k != rel and not k.startswith(prefix)}

    def apply_deletions(self, index: LayerIndex, layer_root: str) -> None:
        implicit = set(index.implicit_dirs)
        for path in index.opaques + index.whiteouts:
            self._replace_explicit_ancestors(layer_root, path, implicit)
        for opaque in index.opaques:
            rel = resolve_in_root(self.root, opaque, self.what) if opaque else ""
            full = self._abs(rel)
            if os.path.isdir(full) and not os.path.islink(full):
                for name in os.listdir(full):
                    self._delete(f"{rel}/{name}" if rel else name)
        for whiteout in index.whiteouts:
            rel = resolve_parent(self.root, whiteout, self.what)
            if os.path.lexists(self._abs(rel)):
                self._delete(rel)

    def _replace_explicit_ancestors(self, layer_root: str, path: str, implicit: set[str]) -> None:
        """Remove lower non-directories (e.g. `lib -> usr/lib`) where this layer has a real directory.

        The merge replaces them anyway (rule 4); doing it first keeps this layer's whiteouts and
        opaque markers from reaching through a lower symlink into its target (`rm /lib; mkdir /lib`
        on an overlay builder gives `lib/` plus an opaque marker, and must leave `usr/lib` alone).
        """
        parts = path.split("/") if path else []
        for depth in range(1, len(parts) + 1):
            ancestor = "/".join(parts[:depth])
            if ancestor in implicit or not os.path.isdir(os.path.join(layer_root, ancestor)):
                return  # this layer does not say what is here: lower symlinks are followed
            rel = resolve_parent(self.root, ancestor, self.what)
            full = self._abs(rel)
            if os.path.lexists(full) and (os.path.islink(full) or not os.path.isdir(full)):
                self._delete(rel)
                return

    def merge(self, layer_root: str, index: LayerIndex) -> None:
        implicit = set(index.implicit_dirs)
        self.dir_modes = index.dir_modes
        # Hard links to lower layers first, as in the tar's order: a link gets the file a lower layer
        # left, even if this layer replaces that file later; a later entry at the link's own path wins.
        for path, target in index.lower_hardlinks:
            self._lower_hardlink(path, target)
        self._merge_dir(layer_root, "", "", implicit)

    def _merge_dir(self, layer_dir: str, layer_rel: str, flat_rel: str, implicit: set[str]) -> None:
        with os.scandir(layer_dir) as entries:
            items = list(entries)
        for entry in items:
            frel = f"{flat_rel}/{entry.name}" if flat_rel else entry.name
            full = self._abs(frel)
            # The hot path (a second image over extracted layers is one link per file): the entry's
            # type comes from the directory listing, and what is in the way is found by link() failing,
            # so a regular file costs one system call, not three.
            if entry.is_file(follow_symlinks=False):
                try:
                    self._link(entry.path, full)
                except FileExistsError:
                    self._delete(frel)
                    self._link(entry.path, full)
                continue
            lrel = f"{layer_rel}/{entry.name}" if layer_rel else entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                # Stored with owner rwx added, so readable when not root: the image's mode is in layer.json.
                mode = self.dir_modes.get(lrel, stat.S_IMODE(st.st_mode))
                frel = self._ensure_dir(frel, full, lrel in implicit, st, mode)
                self._merge_dir(entry.path, lrel, frel, implicit)
                continue
            if os.path.lexists(full):
                self._delete(frel)
            self._place(entry.path, full, st)

    def _ensure_dir(self, frel: str, full: str, implicit: bool, st: os.stat_result, mode: int) -> str:
        """Make `frel` a directory of the image; return where the layer's children go."""
        try:
            existing = os.lstat(full)
        except FileNotFoundError:
            existing = None
        if existing is not None and stat.S_ISLNK(existing.st_mode) and implicit:
            # The layer only implied this directory: its children go where the lower symlink points.
            target = resolve_in_root(self.root, frel, self.what)
            target_full = self._abs(target)
            if os.path.isdir(target_full):
                return target
            if os.path.lexists(target_full):
                self._delete(target)
            os.makedirs(target_full, 0o755, exist_ok=True)
            return target
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            self._delete(frel)
            existing = None
        if existing is None:
            os.mkdir(full, 0o700)
            if implicit:
                os.chmod(full, 0o755)
        if not implicit:
            self.dir_meta[frel] = (st, mode)
        return frel

    def _link(self, source: str, dest: str) -> None:
        """A regular file of the layer into the image: a hard link (FileExistsError if `dest` is taken)."""
        try:
            os.link(source, dest)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):  # EEXIST goes to the caller
                raise
            shutil.copy2(source, dest, follow_symlinks=False)  # other filesystem or link limit
        self.files += 1

    def _place(self, source: str, dest: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self._link(source, dest)
            return
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(source), dest)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(dest, stat.S_IMODE(mode))
        else:
            raise LayerError(f"{self.what}: unexpected file type at {source!r}")
        copy_metadata(dest, st, stat.S_IMODE(mode))

    def _lower_hardlink(self, path: str, target: str) -> None:
        source_rel = resolve_parent(self.root, target, self.what)
        source = self._abs(source_rel)
        if not os.path.lexists(source) or (os.path.isdir(source) and not os.path.islink(source)):
            raise LayerError(f"{self.what}: hard link {path!r} -> {target!r}: no such file in lower layers")
        rel = resolve_parent(self.root, path, self.what)
        if rel == source_rel:
            return  # a link to itself: the file stays as it is
        if os.path.lexists(self._abs(rel)):
            self._delete(rel)
        made = ""
        for part in rel.split("/")[:-1]:  # parents are free of symlinks: resolved above
            made = f"{made}/{part}" if made else part
            try:
                os.mkdir(self._abs(made), 0o755)
                os.chmod(self._abs(made), 0o755)
            except FileExistsError:
                if not os.path.isdir(self._abs(made)):
                    raise LayerError(f"{self.what}: hard link {path!r}: {made!r} is not a directory") from None
        os.link(source, self._abs(rel), follow_symlinks=False)

    def finish(self) -> None:
        for rel in sorted(self.dir_meta, key=lambda p: p.count("/"), reverse=True):
            full = self._abs(rel)
            if os.path.isdir(full) and not os.path.islink(full):
                copy_metadata(full, *self.dir_meta[rel])


def flatten_image(
    layer_dirs: list[Path], diff_ids: list[str], image_config: dict[str, Any], dest: Path, what: str
) -> int:
    """Build the flat image `dest` from extracted layers; return the number of files linked."""
    if len(layer_dirs) != len(diff_ids):
        raise LayerError(f"{what}: {len(layer_dirs)} layers for {len(diff_ids)} diff_ids")
    with staged_dir(dest) as staging:  # private while it is built
        started = time.monotonic()
        flattener = _Flattener(str(staging), what)
        for number, (layer_dir, diff_id) in enumerate(zip(layer_dirs, diff_ids, strict=True), start=1):
            index = read_layer_index(layer_dir)
            if index.diff_id != diff_id:
                msg = f"{what}: layer {number} ({layer_dir.name}) has diff_id {index.diff_id}, config says {diff_id}"
                raise LayerError(msg)
            flattener.what = f"{what}: layer {number} ({diff_id})"
            flattener.apply_deletions(index, str(layer_dir / "rootfs"))
            flattener.merge(str(layer_dir / "rootfs"), index)
        flattener.what = what
        # Before the final directory modes: an image's read-only /etc or /var must still take them.
        write_sandbox_files(staging, image_config)
        flattener.finish()
    log.info(
        "%s: flattened %d layers, %d files in %.2f s",
        what,
        len(layer_dirs),
        flattener.files,
        time.monotonic() - started,
    )
    return flattener.files
