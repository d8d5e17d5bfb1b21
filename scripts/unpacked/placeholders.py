"""Placeholder outputs: how a failure that only touches `ignoreErrors` images keeps the run green.

The exit status of a run is Snakemake's own: non-zero if and only if a job failed. A job whose
failure affects only images that match the recipe's `ignoreErrors` records the failure (for the
summary) and exits 0, leaving a small placeholder in place of each output, so that Snakemake goes
on. A job whose input is a placeholder does not run: it leaves placeholders too. Nothing reads a
placeholder as content: the next run (or `unpacked gc`) removes every one of them before the DAG is
built, so their jobs run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from .safefs import write_atomic
from .store import Store

# Placeholders are small JSON files that begin with this key; nothing real does (blobs are verified
# content, markers are written by this package without it).
_MAGIC = b'{"unpacked_placeholder": '
_MAX_SIZE = 64 << 10


def is_placeholder(path: Path) -> bool:
    """True if `path` is a placeholder output (a file no bigger than a placeholder, with its key)."""
    try:
        if path.stat().st_size > _MAX_SIZE:  # a blob or a layer: no need to open it
            return False
        with path.open("rb") as handle:
            return handle.read(len(_MAGIC)) == _MAGIC
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False


def failed_inputs(paths: list[Path]) -> list[Path]:
    """The inputs of a job that are placeholders: the job must not run on them."""
    return [path for path in paths if is_placeholder(path)]


def _entry(store: Store, path: Path) -> Path:
    return store.placeholders / hashlib.sha256(str(path).encode()).hexdigest()[:32]


def leave_placeholders(store: Store, outputs: list[Path], reason: str) -> None:
    """Put a placeholder at every output that is missing or is a placeholder; real outputs stay."""
    body = json.dumps({"unpacked_placeholder": 1, "reason": reason[:2000]}).encode() + b"\n"
    for path in outputs:
        if path.exists() and not is_placeholder(path):
            continue
        # Registered first: a crash between the two leaves an entry that drop_placeholders ignores.
        write_atomic(_entry(store, path), str(path).encode())
        write_atomic(path, body)


def drop_placeholders(store: Store) -> int:
    """Remove every placeholder output left by an earlier run; return how many were removed."""
    dropped = 0
    if not store.placeholders.is_dir():
        return 0
    for entry in sorted(store.placeholders.iterdir()):
        path = Path(entry.read_text(errors="replace"))
        if is_placeholder(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                dropped += 1
        entry.unlink(missing_ok=True)
    return dropped
