"""Benchmark: `unpacked status` and the end-of-run views on a work directory of 5,000 names.

    .venv/bin/python bench/status.py [--names 5000] [--rounds 3]

Writes, with the package's own state functions, what 5,000 synced names leave on disk: a state file
and a publish marker per name, a record.json in the root's metadata, a link per name to one of 100
flat images (with their markers), a resolution naming them all, and 50 failed entries. Then times,
each as its own process (interpreter start included), `unpacked status --format json` (target:
under 2 s), `unpacked status` (the aligned table), `unpacked status --failed`, and `unpacked views`
(the index page, the report's table and four plots, the metrics). Prints medians and the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNPACKED = Path(sys.executable).with_name("unpacked")

from unpacked.fsutil import json_bytes
from unpacked.safefs import write_atomic
from unpacked.state import (
    Failure,
    FlatMarker,
    LayerRecord,
    Resolution,
    ResolvedImage,
    SyncRecord,
    record_json,
    save_flat_marker,
    save_image,
    save_published_marker,
    save_resolution,
)
from unpacked.store import Store

FLATS = 100


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def build(top: Path, names: int) -> Path:
    """A workflow directory whose work and root hold `names` synced names."""
    directory = top / "w"
    store = Store(directory / "work", directory / "output")
    store.metadata_root.mkdir(parents=True)
    images = {}
    for number in range(names):
        name = f"registry.example:5000/group{number % 50}/image{number}:1.{number % 7}"
        config = digest(f"config {number % FLATS}")
        layer = LayerRecord(
            digest(f"layer {number}"),
            digest(f"diff {number}"),
            "application/vnd.oci.image.layer.v1.tar+gzip",
            1000 + number,
        )
        image = ResolvedImage(
            f"https://{name}",
            name,
            "registry.example:5000",
            name.split("/", 1)[1].rsplit(":", 1)[0],
            digest(f"manifest {number}"),
            digest(f"manifest {number}"),
            config,
            "linux/amd64",
            ("linux/amd64",),
            (layer,),
        )
        images[name] = image
        save_image(store, image)
        save_published_marker(store, image)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - number * 60))
        record = SyncRecord(
            image.reference, image.source_digest, image.manifest_digest, config, "linux/amd64", stamp, stamp
        )
        write_atomic(store.record(name), record_json(record))
        flat = store.flat(config)
        if not flat.is_dir():
            flat.mkdir(parents=True)
            save_flat_marker(store, FlatMarker(config, files=1234))
        link = store.link(name)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(store.link_target(name, config), link)
    failures = [
        Failure(f"https://registry.example:5000/missing/image{n}:1", "not found (HTTP 404)", False) for n in range(50)
    ]
    save_resolution(store, Resolution(images=images, failures=failures))
    settings = {
        "work_dir": "work",
        "output_root": "output",
        "recipe": "recipe.yaml",
        "publisher": {"type": "directory"},
    }
    write_atomic(store.settings, json_bytes(settings))
    return directory


def timed(directory: Path, *args: str) -> tuple[float, int]:
    started = time.monotonic()
    done = subprocess.run(
        [str(UNPACKED), *args, "--settings", "work/state/settings.json"],
        cwd=directory,
        capture_output=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"unpacked {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return elapsed, len(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    variants = {
        "status --format json": ("status", "--format", "json"),
        "status (aligned table)": ("status",),
        "status --failed": ("status", "--failed"),
        "views (index, report, metrics)": ("views",),
    }
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        directory = build(Path(tmp), args.names)
        times: dict[str, list[float]] = {variant: [] for variant in variants}
        for _ in range(args.rounds):
            for variant, words in variants.items():
                elapsed, _size = timed(directory, *words)
                times[variant].append(elapsed)
        rows = json.loads(
            subprocess.run(
                [str(UNPACKED), "status", "--format", "json", "--settings", "work/state/settings.json"],
                cwd=directory,
                capture_output=True,
                check=True,
            ).stdout
        )
    print(
        f"{args.names} names + 50 unresolved entries ({len(rows)} rows); {platform.platform()}, {os.cpu_count()} cores"
    )
    print(f"{'command':34} {'median s':>9}  rounds s")
    for variant, runs in times.items():
        print(f"{variant:34} {statistics.median(runs):9.2f}  {' '.join(f'{t:.2f}' for t in runs)}")


if __name__ == "__main__":
    main()
