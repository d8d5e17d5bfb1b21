"""Benchmark: the whole `snakemake --cores 2` over many published tags, first sync then no-op (P1).

    .venv/bin/python bench/noop_sync.py [--repos 50] [--tags-per-repo 200]

Tags one tiny image `repos` x `tags_per_repo` times in a real `docker-registry` on 127.0.0.1 (as
`bench/resolve_noop.py` does), then times a first sync (one flat image: one publish job for all names) and a
no-op sync right after it (resolution, DAG, nothing to do), counting the registry's requests of the
no-op run: one HEAD per tag is the aim.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bulk_sync import sync
from resolve_noop import populate, registry_requests

from support.registry import LocalRegistry
from support.workflow import write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=50)
    parser.add_argument("--tags-per-repo", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-noop-") as tmp, LocalRegistry(workdir=Path(tmp) / "reg") as reg:
        started = time.monotonic()
        pairs = populate(reg, args.repos, args.tags_per_repo)
        print(f"pushed {len(pairs)} tags in {time.monotonic() - started:.1f} s", flush=True)
        directory = Path(tmp) / "run"
        recipe = [f"http://{reg.host}/{repo}:{tag}" for repo, tag in pairs]
        write_config(directory, recipe, {reg.host: {"insecure": True}})
        first = sync(directory)
        print(f"first sync: {first[0]:.1f} s, {first[1]} jobs, main process {first[2]} MB", flush=True)
        before = registry_requests(reg)
        noop = sync(directory)
        time.sleep(0.2)  # let the registry flush its access log
        requests = registry_requests(reg) - before
        print(f"no-op sync: {noop[0]:.1f} s, {noop[1]} jobs, {requests} registry requests, main {noop[2]} MB")


if __name__ == "__main__":
    main()
