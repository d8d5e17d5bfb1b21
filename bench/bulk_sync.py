"""Benchmark: a bulk first sync of many small distinct images, the whole `snakemake --cores 2` (P6).

    .venv/bin/python bench/bulk_sync.py [--images 200] [--files 20] [--rounds 1]

Pushes `--images` images to a real `docker-registry` on 127.0.0.1, each a shared base layer plus a
small layer of its own (`--files` files of a few hundred bytes), then times, in fresh work and output
directories, a first sync (`snakemake --cores 2` on the repository's Snakefile and default profile)
and a no-op sync right after it. Prints the jobs Snakemake ran (from its log), the seconds per image
and per job, and the peak memory of the main process. Cost here is per-job overhead: the bytes are tiny.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import oci
from support.registry import LocalRegistry
from support.workflow import snakemake_command, workflow_env, write_config


def populate(reg: LocalRegistry, images: int, files: int) -> list[str]:
    """`images` images under bench/bulk, tags i000...; returns their recipe lines."""
    base = oci.TarLayer().add_dir("etc").add_file("etc/os-release", b"ID=bench\n")
    for number in range(50):
        base.add_file(f"usr/lib/base{number}", os.urandom(2000))
    base_tar = base.tar_bytes()
    client = oci.Client(reg)
    lines = []
    for number in range(images):
        own = oci.TarLayer().add_dir("app")
        for file in range(files):
            own.add_file(f"app/f{file}", f"image {number} file {file}\n".encode() * 10)
        image = oci.build_image([base_tar, own.tar_bytes()])
        oci.push(reg, "bench/bulk", f"i{number:03d}", image, client=client)
        lines.append(f"http://{reg.host}/bench/bulk:i{number:03d}")
    return lines


def sync(directory: Path) -> tuple[float, int, int, str]:
    """Wall seconds, jobs run, peak RSS (MB) of the main process, and the log of one sync."""
    command = snakemake_command(directory)  # --cores 2, the repository's Snakefile and default profile
    env = workflow_env()
    log_path = directory / "sync.log"
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would block Snakemake
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"sync in {directory} failed: {text[-3000:]}")
    done = re.findall(r"(\d+) of (\d+) steps", text)
    jobs = int(done[-1][0]) if done else 0
    return elapsed, jobs, usage.ru_maxrss // 1024, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--images-per-job",
        type=int,
        nargs="+",
        default=[16],
        help="limits.images_per_job; several values are run alternately in each round (1: a job per image)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp, LocalRegistry(workdir=Path(tmp) / "reg") as reg:
        top = Path(tmp)
        started = time.monotonic()
        recipe = populate(reg, args.images, args.files)
        print(f"pushed {len(recipe)} images in {time.monotonic() - started:.1f} s")
        firsts: dict[int, list[tuple[float, int, int]]] = {size: [] for size in args.images_per_job}
        noops: dict[int, list[tuple[float, int, int]]] = {size: [] for size in args.images_per_job}
        for round_number in range(args.rounds):
            for size in args.images_per_job:
                directory = top / f"run{round_number}-{size}"
                limits = {"images_per_job": size}
                write_config(directory, recipe, {reg.host: {"insecure": True}}, limits=limits)
                first = sync(directory)
                published = sum(1 for _ in (directory / "output" / reg.host / "bench").iterdir())
                if published != len(recipe):
                    raise SystemExit(f"published {published} of {len(recipe)} images")
                noop = sync(directory)
                firsts[size].append(first[:3])
                noops[size].append(noop[:3])
                print(
                    f"round {round_number + 1}, images_per_job {size}: first sync {first[0]:.1f} s "
                    f"({first[1]} jobs, main {first[2]} MB), no-op {noop[0]:.1f} s ({noop[1]} jobs)"
                )
        for size in args.images_per_job:
            wall = statistics.median(f[0] for f in firsts[size])
            jobs = firsts[size][0][1]
            print(f"\n{len(recipe)} images, images_per_job {size}, first sync with --cores 2, median of {args.rounds}:")
            per_image, per_job = wall / len(recipe), wall / max(jobs, 1)
            print(f"  {wall:.1f} s, {jobs} jobs, {per_image:.3f} s per image, {per_job:.3f} s per job")
            noop, peak = statistics.median(n[0] for n in noops[size]), max(f[2] for f in firsts[size])
            print(f"  no-op sync: {noop:.1f} s; main process peak {peak} MB")


if __name__ == "__main__":
    main()
