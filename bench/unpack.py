"""Benchmark: one image from a loopback registry to an unpacked tree, ours against references.

    .venv/bin/python bench/unpack.py [--files 20000] [--rounds 3] [--big-files 0 --big-mb 20]

(P2 (c), a 1 GB image of 50,000 files with some multi-MB files: `--files 50000 --big-files 40`.)
(P2 (a), a real root filesystem: `--rootfs minbase.tar --layers 1` or `--layers 3`, from a tar of a
`debootstrap` tree made beforehand; see docs/benchmarks.md. The benchmark itself only talks to 127.0.0.1.)
(`--scratch /dev/shm`: the registry's storage and every variant's output on a tmpfs, which takes the
disk's noise out and leaves the work each variant does. Outputs stay until the end: it needs about 7
times the unpacked image per round, in memory.)

Builds a synthetic image (seeded random files in two gzip layers, the second deleting and replacing
some of the first), pushes it to a real `docker-registry` on 127.0.0.1, then times, alternating the
variants round by round in fresh directories (never deleting the previous output right before a run;
see docs/benchmarks.md for the traps on this machine kind):

- ours:        the core `unpack_image` (fetch, extract every layer, flatten: what the jobs run)
- ours, no file threads: the same with every file created by the tar reader itself
- skopeo+umoci: `skopeo copy docker://... oci:...` then `umoci raw unpack`
- curl+tar:    per layer `curl | gzip -dc | tar -x` (no whiteout handling: a lower bound)
- tar -x, local: GNU tar on the uncompressed layers already on disk: file creation alone, the floor
  of any extractor that writes these files on this disk

and a second image sharing the first layer, which for us costs only its new layer plus one link per
file (the first layer is already extracted). Prints medians, peak memory and ratios to ours.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from unpacked.config import validate_config

from support import oci
from support.registry import LocalRegistry
from support.unpack import resolved


def synthetic_layers(files: int, big_files: int = 0, big_mb: int = 20, seed: int = 1) -> tuple[bytes, bytes, bytes]:
    """A base layer of `files` files in 100-file directories (the first `big_files` of `big_mb` MB
    each), an update layer, another top layer. Half of each file is random, half zeros."""
    rng = random.Random(seed)
    base = oci.TarLayer()
    for number in range(files):
        directory = f"data/d{number // 100}"
        if number % 100 == 0:
            base.add_dir(directory)
        size = big_mb << 20 if number < big_files else rng.choice((200, 1500, 6000, 30000))
        base.add_file(f"{directory}/f{number}", rng.randbytes(size // 2) + bytes(size // 2), mode=0o644)
    update = oci.TarLayer()
    for number in range(0, files, 10):
        update.add_whiteout(f"data/d{number // 100}/f{number}")
    update.add_file("etc/version", b"2\n")
    other = oci.TarLayer().add_file("etc/other", b"another image\n")
    return base.tar_bytes(), update.tar_bytes(), other.tar_bytes()


def rootfs_layers(path: Path, count: int) -> tuple[list[bytes], bytes]:
    """The tar `path` (a root filesystem) cut into `count` layers in its own order (a directory comes
    before what it holds, so every layer finds its parents below it), and a small top layer."""
    with tarfile.open(path) as source:
        members = [m for m in source.getmembers() if m.name not in (".", "./")]
        layers = []
        for number in range(count):
            chunk = members[number * len(members) // count : (number + 1) * len(members) // count]
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
                for member in chunk:
                    layer.addfile(member, source.extractfile(member) if member.isreg() else None)
            layers.append(buffer.getvalue())
    return layers, oci.TarLayer().add_file("etc/other", b"another image\n").tar_bytes()


# Our variants' own account of their time (imports, work), by variant, round by round.
STAGES: dict[str, list[dict[str, float]]] = {}


def timed(command: list[str], cwd: Path | None = None, variant: str = "") -> tuple[float, int]:
    """Wall seconds and peak RSS (KB) of one command, started with the disk's write-back done.

    Without the `sync`, a run pays for the previous run's 200 MB still being written to disk.
    With `variant`, the command prints its stages as JSON, kept in STAGES.
    """
    subprocess.run(["sync"], check=True)
    started = time.monotonic()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], cwd=cwd, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {done.stderr[-2000:]}")
    if variant:
        STAGES.setdefault(variant, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    return elapsed, int(done.stderr.strip().splitlines()[-1])


OURS = r"""
import json, sys, time
started = time.monotonic()
from pathlib import Path
from unpacked.state import ResolvedImage
from unpacked.store import Store
from unpacked.source import RegistrySource
from unpacked.sync import unpack_image
import unpacked.extract

unpacked.extract.CREATE_THREADS = int(sys.argv[3])
image = ResolvedImage.from_json(json.loads(sys.argv[2]))
# Validated settings, as a job reads them (the run's saved JSON): a job never loads the config schema.
settings = json.loads(sys.argv[4])
imported = time.monotonic()
# The core API the workflow's jobs run: blobs and layers already in the store cost nothing.
unpack_image(Store(Path(sys.argv[1]) / "work", Path(sys.argv[1]) / "root"), RegistrySource(settings), image)
# Where the process's time went: its imports, then the work (the rest is the interpreter's start and exit).
print(json.dumps({"imports": imported - started, "work": time.monotonic() - imported}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-files", type=int, default=0, help="how many of the files are big (P2 (c): 40)")
    parser.add_argument("--big-mb", type=int, default=20, help="size of each big file, MB")
    parser.add_argument("--threads", type=int, default=2, help="threads creating small files (ours)")
    parser.add_argument("--rootfs", type=Path, help="a tar of a root filesystem instead of synthetic files")
    parser.add_argument("--layers", type=int, default=1, help="how many layers the --rootfs is cut into")
    parser.add_argument("--scratch", type=Path, default=None, help="where everything goes (e.g. /dev/shm)")
    args = parser.parse_args()

    if args.rootfs:
        layers, other = rootfs_layers(args.rootfs, args.layers)
        first, second = oci.build_image(layers), oci.build_image([*layers, other])
        what = f"{args.rootfs.name} in {args.layers} layer(s), {sum(map(len, layers)) / 1e6:.0f} MB uncompressed"
    else:
        base, update, other = synthetic_layers(args.files, args.big_files, args.big_mb)
        layers = [base, update]
        first = oci.build_image([base, update])
        second = oci.build_image([base, other])
        what = f"{args.files} files, {len(base) / 1e6:.0f} MB uncompressed base layer"
    results: dict[str, list[tuple[float, int]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-unpack-", dir=args.scratch) as tmp,
        LocalRegistry(workdir=Path(tmp) / "reg") as reg,
    ):
        top = Path(tmp)
        oci.push(reg, "bench/image", "1", first)
        oci.push(reg, "bench/image", "2", second)
        python = sys.executable
        local_tars = [top / f"layer{number}.tar" for number in range(len(layers))]
        for path, data in zip(local_tars, layers, strict=True):
            path.write_bytes(data)
        threads = str(args.threads)
        settings = json.dumps(validate_config({"registries": {reg.host: {"insecure": True}}}))
        for round_number in range(args.rounds):
            run = top / f"round{round_number}"
            run.mkdir()
            for variant in ("ours", "ours, no file threads", "skopeo+umoci", "curl+tar", "tar -x, local"):
                out = run / variant.replace(" ", "_").replace(",", "")  # names go into shell commands
                out.mkdir()
                if variant == "ours":
                    state = json.dumps(resolved(first, f"{reg.host}/bench/image:1").to_json())
                    command = [python, "-c", OURS, str(out), state, threads, settings]
                    results.setdefault(variant, []).append(timed(command, variant=variant))
                    state = json.dumps(resolved(second, f"{reg.host}/bench/image:2").to_json())
                    command = [python, "-c", OURS, str(out), state, threads, settings]
                    second_image = "ours, 2nd image sharing a layer"
                    results.setdefault(second_image, []).append(timed(command, variant=second_image))
                elif variant == "ours, no file threads":
                    state = json.dumps(resolved(first, f"{reg.host}/bench/image:1").to_json())
                    command = [python, "-c", OURS, str(out), state, "0", settings]
                    results.setdefault(variant, []).append(timed(command))
                elif variant == "skopeo+umoci":
                    script = (
                        f"skopeo copy -q --src-tls-verify=false docker://{reg.host}/bench/image:1 oci:{out}/layout:1"
                        f" && umoci raw unpack --rootless --image {out}/layout:1 {out}/rootfs"
                    )
                    results.setdefault(variant, []).append(timed(["sh", "-c", script]))
                elif variant == "tar -x, local":
                    untar = " && ".join(f"tar -x -C {out} -f {tar}" for tar in local_tars)
                    results.setdefault(variant, []).append(timed(["sh", "-c", untar]))
                else:
                    pipes = " && ".join(
                        f"curl -s http://{reg.host}/v2/bench/image/blobs/{b.digest} | gzip -dc | tar -x -C {out}"
                        for b in first.layers
                    )
                    results.setdefault(variant, []).append(timed(["sh", "-c", pipes]))
        ours = statistics.median(t for t, _ in results["ours"])
        print(f"{what}, {args.rounds} rounds")
        print(f"{'variant':34} {'median s':>9} {'peak MB':>8} {'time / ours':>12}  rounds s")
        for variant, runs in results.items():
            median = statistics.median(t for t, _ in runs)
            peak = max(m for _, m in runs) / 1024
            rounds = " ".join(f"{t:.2f}" for t, _ in runs)
            print(f"{variant:34} {median:9.2f} {peak:8.0f} {median / ours:12.2f}  {rounds}")
        for variant, stages in STAGES.items():
            parts = ", ".join(f"{key} {statistics.median(s[key] for s in stages):.2f} s" for key in stages[0])
            print(f"{variant}, in the process (medians): {parts}")


if __name__ == "__main__":
    main()
