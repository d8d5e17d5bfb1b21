"""A FAKE CernVM-FS publisher (CernVM-FS does not run here): begin/commit/abort shell commands.

`begin` takes a lock directory that exists only while a transaction is open (a second concurrent
`begin` fails, as CernVM-FS refuses a second transaction; `commit` or `abort` without one fails) and
each command appends its name to a journal, so tests can check the order of transactions. It does
not roll anything back on `abort`: tests check what the publisher does, not CernVM-FS.
"""

from __future__ import annotations

from pathlib import Path


def fake_cvmfs_hooks(state: Path) -> dict[str, object]:
    lock, journal = state / "transaction.open", state / "journal"
    return {
        "type": "hook",
        "begin": f"mkdir {lock} && echo begin >> {journal}",
        "commit": f"rmdir {lock} && echo commit >> {journal}",
        "abort": f"rmdir {lock} && echo abort >> {journal}",
    }
