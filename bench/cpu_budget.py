"""Benchmark: where the CPU of one layer's extraction goes, and the floor that leaves on this machine.

    .venv/bin/python bench/cpu_budget.py --blob layer.tar.gz [--rounds 3] [--scratch /dev/shm]

Extracts the blob (`unpacked.sync.extract_layer_blob`, what an extract job runs) in a fresh process,
recording the CPU seconds of each of its threads (the tar reader, decompression, hashing, the
threads creating files), and measures beside it, on the same blob: ISA-L inflating it alone, sha256
of its uncompressed bytes alone, and GNU tar creating its files from the uncompressed tar. Prints
medians and two lower bounds of the extraction's wall time: the busiest single thread, and all of
its CPU spread over the machine's cores. When the wall time is close to the second, the cores are
the limit and only less work (not more overlap) makes the layer faster. No network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from isal import igzip

# Run in a fresh process: every thread's CPU seconds, taken when the thread ends.
EXTRACT = r"""
import json, sys, threading, time
from pathlib import Path

ended = {}
run = threading.Thread.run


def timed_run(self):
    try:
        run(self)
    finally:
        name = self.name.rstrip("0123456789").rstrip("_")
        ended[name] = ended.get(name, 0.0) + time.thread_time()


threading.Thread.run = timed_run
from unpacked.store import Store
from unpacked.sync import extract_layer_blob

store = Store(Path(sys.argv[1]), Path(sys.argv[1]) / "root")
started = time.monotonic()
main_cpu = time.thread_time()
extract_layer_blob(store, sys.argv[2], sys.argv[3], "bench")
wall = time.monotonic() - started
main_cpu = time.thread_time() - main_cpu
time.sleep(0.1)  # the file-creating pool's threads end when it shuts down, right after the layer
print(json.dumps({"wall": wall, "tar reader (main)": main_cpu, **ended}))
"""
CHUNK = 1 << 20


def inflate_seconds(blob: Path) -> tuple[float, Path]:
    """ISA-L inflating the blob to a file beside it (the uncompressed tar, for the other steps)."""
    tar = blob.with_suffix(".tar")
    started = time.process_time()
    with open(blob, "rb") as raw, igzip.IGzipFile(fileobj=raw, mode="rb") as stream, open(tar, "wb") as out:
        shutil.copyfileobj(stream, out, CHUNK)
    return time.process_time() - started, tar


def sha256_seconds(tar: Path) -> tuple[float, str]:
    started = time.process_time()
    hasher = hashlib.sha256()
    with open(tar, "rb") as source:
        while chunk := source.read(CHUNK):
            hasher.update(chunk)
    return time.process_time() - started, "sha256:" + hasher.hexdigest()


def cpu_of(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of a command."""
    before = os.times()
    started = time.monotonic()
    subprocess.run(command, check=True)
    wall = time.monotonic() - started
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blob", type=Path, required=True, help="a gzip layer blob (a .tar.gz)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=None, help="where to extract (e.g. /dev/shm)")
    args = parser.parse_args()

    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cpu-", dir=args.scratch) as tmp:
        blob = Path(tmp) / "layer.gz"
        shutil.copyfile(args.blob, blob)
        with open(blob, "rb") as source:
            digest = "sha256:" + hashlib.file_digest(source, "sha256").hexdigest()
        for round_number in range(args.rounds):
            seconds, tar = inflate_seconds(blob)
            rows.setdefault("ISA-L inflate alone (CPU)", []).append(seconds)
            seconds, diff_id = sha256_seconds(tar)
            rows.setdefault("sha256 of the tar alone (CPU)", []).append(seconds)
            out = Path(tmp) / f"tar{round_number}"
            out.mkdir()
            wall, cpu = cpu_of(["tar", "-x", "-C", str(out), "-f", str(tar)])
            rows.setdefault("GNU tar -x of the tar (wall)", []).append(wall)
            rows.setdefault("GNU tar -x of the tar (CPU)", []).append(cpu)
            shutil.rmtree(out)
            tar.unlink()

            work = Path(tmp) / f"ours{round_number}"
            (work / "blobs/sha256").mkdir(parents=True)
            os.link(blob, work / "blobs/sha256" / digest.split(":")[1])
            subprocess.run(["sync"], check=True)
            done = subprocess.run(
                [sys.executable, "-c", EXTRACT, str(work), digest, diff_id], capture_output=True, text=True, check=True
            )
            threads = json.loads(done.stdout)
            for name, seconds in threads.items():
                label = "ours: extraction (wall)" if name == "wall" else f"ours: {name} thread(s) (CPU)"
                rows.setdefault(label, []).append(seconds)
            rows.setdefault("ours: all threads (CPU)", []).append(sum(v for k, v in threads.items() if k != "wall"))
            shutil.rmtree(work)

    medians = {label: statistics.median(values) for label, values in rows.items()}
    print(f"{args.blob.name}, {args.rounds} rounds, {os.cpu_count()} cores, median seconds")
    for label, value in medians.items():
        print(f"  {label:42} {value:6.2f}   rounds " + " ".join(f"{v:.2f}" for v in rows[label]))
    cores = os.cpu_count() or 1
    busiest = max(v for k, v in medians.items() if k.startswith("ours:") and "thread(s)" in k)
    spread = medians["ours: all threads (CPU)"] / cores
    print(f"  floor of ours: busiest thread {busiest:.2f} s; all CPU over {cores} cores {spread:.2f} s")
    print(f"  ours: wall / floor {medians['ours: extraction (wall)'] / max(busiest, spread):.2f}")


if __name__ == "__main__":
    main()
