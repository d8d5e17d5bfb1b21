"""Benchmark: two versions of the extractor on one local layer blob, alternating round by round.

    git worktree add /tmp/wt-old <rev> && python -m compileall -q /tmp/wt-old/scripts/unpacked
    .venv/bin/python bench/extract_paired.py --old /tmp/wt-old/scripts --blob layer.tar.gz --rounds 8
    .venv/bin/python bench/extract_paired.py ... --scratch /dev/shm   # file creation off the disk

Each round extracts the blob (`unpacked.sync.extract_layer_blob`, what an extract job runs) once
with each version, in a fresh process and a fresh store, with a `sync` before each run; the order of
the two versions alternates. With `--scratch` on a tmpfs, the disk's noise is gone and what is left
is the extractor's own work (decompression, hashing, tar reading, system calls), which is what a
change to the reader moves. Prints both versions' rounds and medians. No network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE = r"""
import sys
from pathlib import Path
from unpacked.store import Store
from unpacked.sync import extract_layer_blob
store = Store(Path(sys.argv[1]), Path(sys.argv[1]) / "root")
extract_layer_blob(store, sys.argv[2], sys.argv[3], "bench")
"""


def digest_of(path: Path, decompress: bool) -> str:
    """The sha256 of a file, or of its uncompressed content (the layer's diff_id)."""
    command = ["sh", "-c", f"gzip -dc {path} | sha256sum" if decompress else f"sha256sum {path}"]
    return "sha256:" + subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the scripts/ directory of the other version")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1] / "scripts")
    parser.add_argument("--blob", type=Path, required=True, help="a gzip layer blob (a .tar.gz)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--scratch", type=Path, default=None, help="where to extract (e.g. /dev/shm)")
    args = parser.parse_args()

    digest, diff_id = digest_of(args.blob, False), digest_of(args.blob, True)
    versions = {"old": args.old.resolve(), "new": args.new.resolve()}
    times: dict[str, list[float]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory(prefix="bench-extract-", dir=args.scratch) as tmp:
        blob = Path(tmp) / "layer.blob"
        shutil.copyfile(args.blob, blob)
        for round_number in range(args.rounds):
            order = list(versions.items())
            for name, scripts in order if round_number % 2 == 0 else reversed(order):
                work = Path(tmp) / f"{name}{round_number}"
                (work / "blobs/sha256").mkdir(parents=True)
                os.link(blob, work / "blobs/sha256" / digest.split(":")[1])
                subprocess.run(["sync"], check=True)
                started = time.monotonic()
                env = dict(os.environ, PYTHONPATH=str(scripts))
                subprocess.run([sys.executable, "-c", ONE, str(work), digest, diff_id], env=env, check=True)
                times[name].append(time.monotonic() - started)
                if args.scratch is not None:  # a tmpfs has no write-back to wait for: free its memory
                    shutil.rmtree(work)
    for name, rounds in times.items():
        print(f"{name}: median {statistics.median(rounds):.2f} s; rounds " + " ".join(f"{t:.2f}" for t in rounds))
    print(f"new / old: {statistics.median(times['new']) / statistics.median(times['old']):.2f}")


if __name__ == "__main__":
    main()
