"""Confined path handling: entry names and symlink resolution that never leave a root.

Every path an image asks for is interpreted as a path inside the image root: `..` stops at the root
and an absolute symlink target counts from the root, as in a container. The last component is never
followed, so an entry always replaces a symlink rather than writing through it.
"""

from __future__ import annotations

import os
import stat

from .errors import LayerError

# Symlinks followed while resolving one path, as Linux's MAXSYMLINKS.
MAX_SYMLINKS = 40


def clean_entry_name(name: str, what: str) -> str:
    """The layer-relative path of a tar entry, or "" for the root; `..` components are refused."""
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise LayerError(f"{what}: entry {name!r} has a '..' component; refused")
        parts.append(part)
    return "/".join(parts)


def resolve_parent(root: str, rel: str, what: str) -> str:
    """Resolve `rel`'s parent directories inside `root`, following symlinks confined to `root`.

    Returns the resolved relative path (parents free of symlinks; last component kept as is).
    """
    head, _, last = rel.rpartition("/")
    if not head:
        return rel
    resolved = resolve_in_root(root, head, what)
    return f"{resolved}/{last}" if resolved else last


def resolve_in_root(root: str, rel: str, what: str) -> str:
    """Resolve every component of `rel` inside `root`, following symlinks, never escaping `root`."""
    pending = [p for p in rel.split("/") if p not in ("", ".")]
    pending.reverse()
    stack: list[str] = []
    followed = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if stack:
                stack.pop()
            continue
        candidate = os.path.join(root, *stack, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):  # below a file: not there either
            stack.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            followed += 1
            if followed > MAX_SYMLINKS:
                raise LayerError(f"{what}: too many levels of symbolic links in {rel!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                stack = []
            pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        stack.append(part)
    return "/".join(stack)
