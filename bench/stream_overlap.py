"""Benchmark of a design not built: a layer fetched and extracted in one pass, against one after the other.

    .venv/bin/python bench/stream_overlap.py --tar layer.tar [--rounds 6] [--scratch /dev/shm]

Issue 9 names "fetching and extracting a layer in one streaming job" as a lever. This measures what
the overlap itself would give, before weighing what it costs (one job doing two steps, a blob that
must be fetched again when extraction fails). The layer (an uncompressed tar, gzipped here) is pushed
to a real `docker-registry` on 127.0.0.1; then, alternating round by round, each in a fresh process:

- one after the other: `fetch_blob` (what a fetch job runs: download, sha256, rename) then
  `extract_layer_blob` (what an extract job runs), in one process (so no second start-up is counted);
- overlapped: the registry client downloads into a file while the extractor reads that file as it
  grows (the download's own digest check and the extractor's diff_id check both still run).

It calls two private functions (the download loop and the extractor's stream reader): a prototype,
not an interface.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from unpacked.config import validate_config

from support import oci
from support.registry import LocalRegistry
from support.unpack import resolved

ONE_PASS = r"""
import io, json, sys, threading, time
from pathlib import Path
from unpacked.auth import RealmCache
from unpacked.extract import _extract_stream
from unpacked.mirrors import make_client
from unpacked.reference import parse_reference
from unpacked.source import RegistrySource
from unpacked.state import ResolvedImage
from unpacked.store import Store
from unpacked.sync import extract_layer_blob, fetch_blob

work, mode = Path(sys.argv[1]), sys.argv[4]
image, settings = ResolvedImage.from_json(json.loads(sys.argv[2])), json.loads(sys.argv[3])
layer = image.layers[0]
started = time.monotonic()
if mode == "one after the other":
    store = Store(work, work / "root")
    fetch_blob(store, RegistrySource(settings), image, layer.digest)
    extract_layer_blob(store, layer.digest, layer.diff_id, "bench")
else:
    client = make_client(parse_reference(image.reference), settings, RealmCache())
    part = work / "blob.part"
    done = threading.Event()
    out = open(part, "wb")

    def download():
        got = client._fetch_blob(image.repository, layer.digest, layer.size, out, "bench")
        assert got == layer.digest, got
        out.flush()
        done.set()

    threading.Thread(target=download, daemon=True).start()

    class Growing(io.RawIOBase):
        # The blob file as the download writes it: waits for more bytes until the download is done.
        def __init__(self):
            self.file = open(part, "rb", buffering=0)
        def readable(self): return True
        def seekable(self): return True
        def seek(self, offset, whence=0): return self.file.seek(offset, whence)
        def tell(self): return self.file.tell()
        def readinto(self, buffer):
            while True:
                finished = done.is_set()
                n = self.file.readinto(buffer)
                if n or finished:
                    return n
                time.sleep(0.001)

    (work / "rootfs").mkdir()
    _extract_stream(io.BufferedReader(Growing(), 1 << 20), str(work / "rootfs"), layer.diff_id, "bench", 1 << 40)
print(time.monotonic() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tar", type=Path, required=True, help="an uncompressed layer tar")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--scratch", type=Path, default=None, help="where the store goes (e.g. /dev/shm)")
    args = parser.parse_args()

    image = oci.build_image([args.tar.read_bytes()])
    modes = ("one after the other", "overlapped")
    times: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    with (
        tempfile.TemporaryDirectory(prefix="bench-stream-", dir=args.scratch) as tmp,
        LocalRegistry(workdir=Path(tmp) / "reg") as reg,
    ):
        oci.push(reg, "bench/image", "1", image)
        settings = json.dumps(validate_config({"registries": {reg.host: {"insecure": True}}}))
        state = json.dumps(resolved(image, f"{reg.host}/bench/image:1").to_json())
        for round_number in range(args.rounds):
            for mode in modes if round_number % 2 == 0 else reversed(modes):
                work = Path(tmp) / f"round{round_number}-{modes.index(mode)}"
                work.mkdir()
                subprocess.run(["sync"], check=True)
                started = time.monotonic()
                done = subprocess.run(
                    [sys.executable, "-c", ONE_PASS, str(work), state, settings, mode],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                times[mode].append((time.monotonic() - started, float(done.stdout)))
                subprocess.run(["rm", "-rf", str(work)], check=True)
    print(f"{args.tar.name}, {args.rounds} rounds; seconds: process (of which the fetch and extraction)")
    for mode, rounds in times.items():
        process = statistics.median(t for t, _ in rounds)
        inner = statistics.median(t for _, t in rounds)
        print(f"  {mode:22} {process:.2f} ({inner:.2f})   rounds " + " ".join(f"{t:.2f}" for t, _ in rounds))
    first, second = (statistics.median(t for t, _ in times[mode]) for mode in modes)
    print(f"  overlapped / one after the other: {second / first:.2f}")


if __name__ == "__main__":
    main()
