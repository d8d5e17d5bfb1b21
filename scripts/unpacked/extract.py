"""Extract one layer blob into a directory of its own, entry by entry, confined to it.

The result, `<work>/layers/xx/<hex>/`, holds `rootfs/` (the layer's files, no whiteout files) and
`layer.json` (its whiteouts, opaque directories, hard links to lower layers, implicit directories and
the verified diff_id). Flattening applies these onto an image; the files themselves are then hard
linked, so an extracted layer is written once and shared by every image that uses it.

Built in a private staging directory and renamed into place: a failed extraction leaves nothing.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import stat
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from .compression import HashingReader, open_decompressed
from .errors import ENVIRONMENT_ERRNOS, LayerError
from .filewriters import FileWriters
from .fsutil import remove_tree
from .paths import clean_entry_name, resolve_in_root, resolve_parent
from .progress import Progress, ProgressReader
from .safefs import staged_dir
from .tarheader import FastTarInfo

log = logging.getLogger(__name__)
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."
# Default bound on one layer's uncompressed size (a decompression bomb fails instead of filling disks);
# the environment variable MAX_LAYER_BYTES_ENV overrides it (docs/policy.md).
DEFAULT_MAX_LAYER_BYTES = 64 << 30
MAX_LAYER_BYTES_ENV = "UNPACKED_MAX_LAYER_BYTES"
# 2**32-1 is (uid_t)-1, which chown reads as "leave unchanged".
MAX_OWNER_ID = 2**32 - 1
IS_ROOT = os.geteuid() == 0
# Threads creating small files beside the tar reader (filewriters.py), and what counts as small:
# a bigger file is written by the reader itself, streamed, never held in memory.
CREATE_THREADS = 2
SMALL_FILE_BYTES = 1 << 20


@dataclass
class LayerIndex:
    """What `rootfs/` alone cannot say about a layer."""

    diff_id: str = ""
    compression: str = ""
    whiteouts: list[str] = field(default_factory=list)
    opaques: list[str] = field(default_factory=list)
    implicit_dirs: list[str] = field(default_factory=list)
    lower_hardlinks: list[list[str]] = field(default_factory=list)  # [path, target]
    skipped_devices: list[str] = field(default_factory=list)
    # Directories stored with owner rwx added (so an unprivileged publisher can read and link their
    # contents when flattening): their real mode, applied to the flat image instead.
    dir_modes: dict[str, int] = field(default_factory=dict)
    entries: int = 0


def read_layer_index(layer_dir: Path) -> LayerIndex:
    return LayerIndex(**json.loads((layer_dir / "layer.json").read_text()))


class _EntryError(LayerError):
    """A LayerError that already names its entry (a file created after the reader moved on)."""


class _LayerWriter:
    """Applies tar entries to one layer's rootfs; knows which paths it made real directories.

    Small new regular files are created in the background (`files`). Order still holds: an entry
    that could touch one of them (the same path, a path below it, a hard link, a path to resolve
    through symlinks) first waits until every file handed over exists.
    """

    def __init__(self, rootfs: str, what: str) -> None:
        self.rootfs = rootfs
        self.what = what
        self.index = LayerIndex()
        self.real_dirs: set[str] = {""}
        self.dir_meta: dict[str, tarfile.TarInfo] = {}
        self.implicit: set[str] = set()
        # Every non-directory path an entry created (a superset after removals): a path not in it,
        # nor in real_dirs, holds nothing yet, so a new file there depends on no earlier entry.
        self.made: set[str] = set()
        self.files = FileWriters(CREATE_THREADS, self._deferred_error)

    def _deferred_error(self, name: str, err: OSError) -> BaseException:
        if err.errno in ENVIRONMENT_ERRNOS:
            return err  # the machine's fault, not the layer's: named by the caller
        return _EntryError(f"{self.what}: entry {name!r}: {err.strerror or err}")

    def _depends_on_earlier(self, rel: str, member: tarfile.TarInfo) -> bool:
        return (
            rel in self.made or rel in self.real_dirs or rel.rpartition("/")[0] not in self.real_dirs or member.islnk()
        )

    def _abs(self, rel: str) -> str:
        return os.path.join(self.rootfs, rel) if rel else self.rootfs

    def _place(self, rel: str) -> str:
        """Where `rel` goes: parents resolved through this layer's own symlinks, created if missing."""
        parent = rel.rpartition("/")[0]
        if parent not in self.real_dirs:
            rel = resolve_parent(self.rootfs, rel, self.what)
            parent = rel.rpartition("/")[0]
            self._make_dirs(parent)
        return rel

    def _make_dirs(self, rel: str) -> None:
        if rel in self.real_dirs:
            return
        path = ""
        for part in rel.split("/"):
            path = f"{path}/{part}" if path else part
            if path in self.real_dirs:
                continue
            full = self._abs(path)
            try:
                st = os.lstat(full)
                if not stat.S_ISDIR(st.st_mode):
                    remove_tree(Path(full))
                    raise FileNotFoundError
            except FileNotFoundError:
                os.mkdir(full, 0o755)
                self.implicit.add(path)
            self.real_dirs.add(path)

    def _clear(self, rel: str, keep_dir: bool) -> bool:
        """Remove what an earlier entry of this layer left at `rel`; True if a directory stays."""
        full = self._abs(rel)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return False
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return True
        remove_tree(Path(full))
        if not stat.S_ISDIR(st.st_mode):
            return False  # a file or link: nothing below it to forget
        prefix = rel + "/"
        self.real_dirs = {d for d in self.real_dirs if d != rel and not d.startswith(prefix)}
        # Forget the metadata of directories that are gone: applied later, it would go wherever an
        # entry now at `rel` (a symlink) points, even outside the root.
        self.dir_meta = {d: m for d, m in self.dir_meta.items() if d != rel and not d.startswith(prefix)}
        self.implicit = {d for d in self.implicit if d != rel and not d.startswith(prefix)}
        return False

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self.index.entries += 1
        rel = clean_entry_name(member.name, self.what)
        if not rel:
            if not member.isdir():
                raise LayerError(f"{self.what}: entry {member.name!r} would replace the image root; refused")
            return
        base = rel.rpartition("/")[2]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(rel, base, member)
            return
        independent = not self._depends_on_earlier(rel, member)
        if not independent:
            self.files.drain()
        rel = self._place(rel)
        full = self._abs(rel)
        if member.isdir():
            if not self._clear(rel, keep_dir=True):
                os.mkdir(full, 0o700)
            self.real_dirs.add(rel)
            self.implicit.discard(rel)
            self.dir_meta[rel] = member
            return
        self.made.add(rel)
        if member.isreg():
            if independent and self.files.enabled and member.size <= SMALL_FILE_BYTES and not member.issparse():
                owner = (_owner_id(member.uid), _owner_id(member.gid)) if IS_ROOT else None
                data = _member_data(tar, member)
                self.files.submit(member.name, full, data, member.mode, owner, _mtime(member))
            else:
                self._write_file(rel, full, member, tar)
            return
        self._clear(rel, keep_dir=False)
        if member.issym():
            os.symlink(member.linkname, full)
        elif member.islnk():
            self._hardlink(rel, member)
            return  # a hard link shares its target's metadata
        elif member.isfifo():
            os.mkfifo(full, 0o600)
        elif member.ischr() or member.isblk():
            # Policy (docs/policy.md): device nodes are not created; the runtime provides /dev.
            self.index.skipped_devices.append(rel)
            return
        else:
            raise LayerError(f"{self.what}: entry {member.name!r} has unsupported type {member.type!r}")
        apply_metadata(full, member)

    def _write_file(self, rel: str, full: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        """Create a regular file (the hot path: open, write, metadata by descriptor, close)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(full, flags, 0o600)
        except FileExistsError:  # an earlier entry of this layer is there: the last one wins
            self._clear(rel, keep_dir=False)
            fd = os.open(full, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            source = tar.extractfile(member)
            assert source is not None
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            if IS_ROOT:
                os.fchown(fd, _owner_id(member.uid), _owner_id(member.gid))
            os.fchmod(fd, stat.S_IMODE(member.mode))  # after chown, which clears setuid bits
            mtime = _mtime(member)
            os.utime(fd, (mtime, mtime))

    def _whiteout(self, rel: str, base: str, member: tarfile.TarInfo) -> None:
        parent = rel.rpartition("/")[0]
        if base == OPAQUE_MARKER:
            self.index.opaques.append(parent)
            return
        if base.startswith(AUFS_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs) in old Docker layers: not image content
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise LayerError(f"{self.what}: entry {member.name!r} is an invalid whiteout; refused")
        self.index.whiteouts.append(f"{parent}/{name}" if parent else name)

    def _hardlink(self, rel: str, member: tarfile.TarInfo) -> None:
        target = clean_entry_name(member.linkname, f"{self.what}: hard link {member.name!r}")
        if not target:
            raise LayerError(f"{self.what}: hard link {member.name!r} points to the image root; refused")
        resolved = resolve_parent(self.rootfs, target, self.what)
        source = self._abs(resolved)
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            # Not in this layer (yet): a file of a lower layer, linked when the image is flattened,
            # by its path as resolved through this layer's own symlinks so far.
            self.index.lower_hardlinks.append([rel, resolved])
            return
        if stat.S_ISDIR(st.st_mode):
            raise LayerError(f"{self.what}: hard link {member.name!r} points to directory {target!r}; refused")
        os.link(source, self._abs(rel), follow_symlinks=False)

    def finish(self) -> LayerIndex:
        self.files.drain()
        # Directory modes last and deepest first: a mode-000 directory must stay writable until filled.
        # The directories themselves keep owner rwx in the layer store (their real mode goes to
        # layer.json): an unprivileged flattener must list and link what is inside them.
        for rel in sorted(self.dir_meta, key=lambda p: p.count("/"), reverse=True):
            full = self._abs(rel)
            # Never through a symlink, in the last component or a parent: `rel` must resolve to itself.
            if resolve_in_root(self.rootfs, rel, self.what) != rel or not os.path.isdir(full):
                continue
            member = self.dir_meta[rel]
            apply_metadata(full, member, extra_mode=0o700)
            if stat.S_IMODE(member.mode) & 0o700 != 0o700:
                self.index.dir_modes[rel] = stat.S_IMODE(member.mode)
        self.index.implicit_dirs = sorted(self.implicit)
        return self.index


def _member_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A small regular file's bytes, read straight from the stream (the reader is at its data)."""
    stream = tar.fileobj
    if stream is None or stream.tell() != member.offset_data:
        source = tar.extractfile(member)
        assert source is not None
        return source.read()
    data = stream.read(member.size)
    if len(data) != member.size:
        raise tarfile.ReadError("unexpected end of data")
    return data


def apply_metadata(path: str, member: tarfile.TarInfo, extra_mode: int = 0) -> None:
    """Owner (as root only), mode (setuid/setgid/sticky kept) and mtime, never following symlinks."""
    is_link = member.issym()
    if IS_ROOT:
        os.lchown(path, _owner_id(member.uid), _owner_id(member.gid))
    if not is_link:
        os.chmod(path, stat.S_IMODE(member.mode) | extra_mode)  # after chown, which clears setuid bits
    mtime = _mtime(member)
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def _mtime(member: tarfile.TarInfo) -> float:
    """The entry's mtime, or the epoch when it is out of range."""
    return member.mtime if 0 <= member.mtime < 2**33 else 0


def max_layer_bytes() -> int:
    """The bound on a layer's uncompressed size: $UNPACKED_MAX_LAYER_BYTES, else 64 GiB."""
    text = os.environ.get(MAX_LAYER_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_LAYER_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise LayerError(f"{MAX_LAYER_BYTES_ENV}={text!r}: expected a positive number of bytes")
    return value


def _owner_id(value: int) -> int:
    """A uid/gid to give a file: ids outside 0..2**32-2 (-1, or too large for uid_t) become 0."""
    return value if 0 <= value < MAX_OWNER_ID else 0


def extract_layer(blob: Path, diff_id: str, dest: Path, what: str, max_bytes: int | None = None) -> LayerIndex:
    """Extract `blob` into `dest` (rootfs/ + layer.json), verifying its uncompressed digest."""
    if max_bytes is None:
        max_bytes = max_layer_bytes()
    with staged_dir(dest) as staging:
        started = time.monotonic()
        os.mkdir(staging / "rootfs", 0o755)
        with open(blob, "rb") as raw:
            # Progress counts the compressed bytes read: the blob's size is a total known up front, and
            # they are read in large chunks (a counter on the tar side would run per 512-byte header).
            progress = Progress(what, os.fstat(raw.fileno()).st_size, log, doing="extracting, read")
            counted = cast(BinaryIO, ProgressReader(raw, progress))
            index = _extract_stream(counted, str(staging / "rootfs"), diff_id, what, max_bytes)
        (staging / "layer.json").write_text(json.dumps(asdict(index), indent=1) + "\n")
    log.info("%s: extracted %d entries in %.2f s", what, index.entries, time.monotonic() - started)
    return index


def _extract_stream(raw: BinaryIO, rootfs: str, diff_id: str, what: str, max_bytes: int) -> LayerIndex:
    stream, kind = open_decompressed(raw)
    # Trailing bytes after a gzip stream that are not zero padding or another gzip member make the
    # decompressor fail, so they are refused as corrupt.
    hashing = HashingReader(stream, max_bytes, what)
    writer = _LayerWriter(rootfs, what)
    current = None  # the entry being written, or the last one read: error messages name it
    tar: tarfile.TarFile | None = None
    try:
        try:
            forward = ForwardReader(io.BufferedReader(hashing, 1 << 20))
            with tarfile.open(fileobj=forward, mode="r:", errorlevel=2, tarinfo=FastTarInfo) as tar:
                for member in tar:
                    current = member.name
                    try:
                        writer.add(member, tar)
                    except OSError as err:
                        if err.errno in ENVIRONMENT_ERRNOS:
                            raise  # the machine's fault, not the layer's: named by the caller
                        raise LayerError(f"{what}: entry {member.name!r}: {err.strerror or err}") from err
            current = None
            hashing.drain()
        except tarfile.TarError as err:
            if not _only_padding_missing(tar):
                near = f" (at or after entry {current!r})" if current is not None else ""
                raise LayerError(f"{what}: not a valid tar stream ({err}){near}") from None
        except LayerError as err:
            if current is None or repr(current) in str(err) or isinstance(err, _EntryError):
                raise
            raise LayerError(f"{err} (at or after entry {current!r})") from None
        writer.files.drain()  # every file exists (or its failure is raised) before the verdict
        digest = hashing.digest
    except BaseException:
        deferred = writer.files.close()
        if deferred is not None and deferred.errno in ENVIRONMENT_ERRNOS:
            raise deferred from None  # a full disk under an earlier file: the machine's fault comes first
        raise
    finally:
        writer.files.close()  # nothing is created once this returns: staging can be removed
        hashing.close()  # stops the decompression thread, also when the layer was refused
    if digest != diff_id:
        msg = f"{what}: uncompressed content has digest {digest}, config says diff_id {diff_id}; refused"
        raise LayerError(msg)
    index = writer.finish()
    index.diff_id = diff_id
    index.compression = kind
    return index


class ForwardReader:
    """A stream that tarfile may seek, forward only: its random-access mode then reads straight from it.

    tarfile's stream mode ("r|") passes every byte through a Python buffer filled 10 KB at a time,
    copying it twice more: a fifth of the profiled time of a layer of big files. The random-access mode ("r:")
    only seeks to where the stream already is, or forward over padding and unread data; backwards
    is refused, as in stream mode.
    """

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.position = 0

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset < self.position:
            raise tarfile.StreamError("seeking backwards is not allowed")
        while self.position < offset and self.read(min(offset - self.position, 1 << 20)):
            pass
        return self.position

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("read-only")

    def close(self) -> None:
        """Nothing: the stream is the caller's to close."""


def _only_padding_missing(tar: tarfile.TarFile | None) -> bool:
    """True if the stream ended inside the zero padding after the last member's data.

    `umoci insert` writes layers that stop right after the last file's data: no padding to the
    512-byte block, no end blocks. Go's tar reader (umoci, containerd) reads them; Python's reports
    "unexpected end of data". Nothing of the content is missing, and the diff_id check still covers
    every byte, so such a stream ends the layer normally. Missing data is still an error.
    """
    if tar is None:
        return False
    # The members read so far; not in typeshed, and getmembers() would read on to the end.
    members: list[tarfile.TarInfo] = tar.members  # type: ignore[attr-defined]
    if not members or members[-1].issparse() or tar.fileobj is None:
        return False
    missing = tar.offset - tar.fileobj.tell()
    return 0 < missing <= -members[-1].size % tarfile.BLOCKSIZE
