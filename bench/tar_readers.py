"""Benchmark: reading a tar's entries and data with our reader against libarchive through libarchive-c.

    .venv/bin/pip install libarchive-c   # not a dependency: only this comparison needs it
    .venv/bin/python bench/tar_readers.py layer.tar [--rounds 5]

Issue 9 suggests libarchive (C) as a faster tar header parser than Python's tarfile. This reads an
uncompressed tar both ways, as an extractor would (each entry's name, mode, owner, mtime, size and
link target; every regular file's bytes), creating nothing, and prints the CPU seconds of each
(best of the rounds). Ours is what `unpacked.extract` reads layers with: tarfile's random-access mode over
`ForwardReader`, headers parsed by `tarheader.FastTarInfo`. No network.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from unpacked.extract import ForwardReader
from unpacked.tarheader import FastTarInfo

try:
    import libarchive  # type: ignore[import-not-found]
except ImportError:
    raise SystemExit("libarchive-c is not installed: .venv/bin/pip install libarchive-c") from None


def ours(path: Path) -> tuple[int, int]:
    entries = data = 0
    with open(path, "rb") as raw:
        stream = ForwardReader(io.BufferedReader(raw, 1 << 20))
        with tarfile.open(fileobj=stream, mode="r:", tarinfo=FastTarInfo) as tar:
            for member in tar:
                entries += 1
                _ = (member.name, member.mode, member.uid, member.gid, member.mtime, member.size, member.linkname)
                if member.isreg():
                    data += len(stream.read(member.size))
    return entries, data


def with_libarchive(path: Path) -> tuple[int, int]:
    entries = data = 0
    with libarchive.file_reader(str(path), "tar") as archive:
        for entry in archive:
            entries += 1
            _ = (entry.pathname, entry.mode, entry.uid, entry.gid, entry.mtime, entry.size, entry.linkpath)
            if entry.isreg:
                data += sum(len(block) for block in entry.get_blocks())
    return entries, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tar", type=Path, help="an uncompressed tar (a layer)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    readers: dict[str, Callable[[Path], tuple[int, int]]] = {"ours": ours, "libarchive-c": with_libarchive}
    best: dict[str, float] = {}
    counts: dict[str, tuple[int, int]] = {}
    for _ in range(args.rounds):
        for name, reader in readers.items():
            started = time.process_time()
            counts[name] = reader(args.tar)
            best[name] = min(best.get(name, float("inf")), time.process_time() - started)
    if counts["ours"] != counts["libarchive-c"]:
        raise SystemExit(f"the readers disagree: {counts}")
    entries, data = counts["ours"]
    print(f"{args.tar.name}: {entries} entries, {data / 1e6:.0f} MB of file data; CPU seconds, best of {args.rounds}")
    for name, seconds in best.items():
        print(f"  {name:14} {seconds:.3f}")
    print(f"  libarchive-c / ours: {best['libarchive-c'] / best['ours']:.2f}")


if __name__ == "__main__":
    main()
