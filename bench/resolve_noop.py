"""Benchmark: a no-op resolution of 1,000 unchanged tags over 50 repositories, ours against DUCC's way.

    .venv/bin/python bench/resolve_noop.py [--repos 50] [--tags-per-repo 20] [--rounds 5]

Starts a real `docker-registry` on 127.0.0.1, pushes one tiny image and tags it 1,000 times (blobs
mounted across repositories, one manifest PUT per tag), resolves the recipe once (`unpacked resolve`,
what the Snakefile does before the DAG), then times no-op resolutions, alternating the variants round
by round in the same conditions:

- ours:             `unpacked resolve --config ...`: one HEAD per tag, concurrent (resolve_workers)
- ours, 1 worker:   the same with resolve_workers=1 (what concurrency buys)
- DUCC-style GET:   a sequential `requests` loop, one manifest GET per tag (DUCC fetches every
                    manifest on every run; its token request is free here, the registry has no auth)
- skopeo per tag:   `skopeo inspect --raw` per tag, on the first --skopeo-tags tags (one process per
                    tag, as a shell loop would do it), scaled to all tags

Each variant runs as its own process: wall time includes interpreter start. Requests are counted in
the registry's access log; peak memory is the process's maximum RSS (os.wait4). Prints medians and
ratios to ours, and the machine description for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import oci
from support.registry import LocalRegistry

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)

# The reference: DUCC's change detection, one GET of the manifest per tag, one after the other.
SEQUENTIAL_GET = """
import json, sys, requests
tags = json.load(open(sys.argv[1]))
session = requests.Session()
for url in tags:
    r = session.get(url, headers={"Accept": sys.argv[2]})
    r.raise_for_status()
    r.content
"""


def populate(reg: LocalRegistry, repos: int, tags_per_repo: int) -> list[tuple[str, str]]:
    """One tiny image under `repos` x `tags_per_repo` tags; returns (repository, tag) pairs."""
    layer = oci.TarLayer().add_dir("etc").add_file("etc/hello", b"hello\n").tar_bytes()
    image = oci.build_image([layer])
    first = "bench/repo00"
    oci.push(reg, first, "t000", image)
    session = requests.Session()
    pairs = []
    for r in range(repos):
        repo = f"bench/repo{r:02d}"
        if r:
            for digest in image.blobs:  # cross-repository mount: no bytes sent
                done = session.post(f"{reg.url}/v2/{repo}/blobs/uploads/?mount={digest}&from={first}")
                assert done.status_code == 201, (done.status_code, done.text)
        for t in range(tags_per_repo):
            tag = f"t{t:03d}"
            done = session.put(
                f"{reg.url}/v2/{repo}/manifests/{tag}",
                data=image.manifest,
                headers={"Content-Type": image.media_type},
            )
            assert done.status_code == 201, (done.status_code, done.text)
            pairs.append((repo, tag))
    return pairs


def run_measured(command: list[str], cwd: Path, reg: LocalRegistry) -> tuple[float, int, int]:
    """Wall seconds, requests the registry saw, peak RSS in MB of one command."""
    before = registry_requests(reg)
    log_path = cwd / "last-command.log"  # a file, not a pipe: a full pipe would block the child
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        stderr = log_path.read_text(errors="replace")
        raise SystemExit(f"{command} failed ({process.returncode}): {stderr[-3000:]}")
    time.sleep(0.2)  # let the registry flush its access log
    return elapsed, registry_requests(reg) - before, usage.ru_maxrss // 1024


def registry_requests(reg: LocalRegistry) -> int:
    log = reg.log
    return sum(log.count(f'"{method} /v2/') for method in ("GET", "HEAD", "POST", "PUT"))


def machine() -> dict[str, str]:
    def version(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())  # fmt: skip
    return {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": f"{int(meminfo[1]) // 1024} MB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "snakemake": version([str(Path(sys.executable).with_name("snakemake")), "--version"]),
        "registry": version(["docker-registry", "--version"]),
        "skopeo": version(["skopeo", "--version"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=50)
    parser.add_argument("--tags-per-repo", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="resolve_workers (default: the config default)")
    parser.add_argument("--skopeo-tags", type=int, default=100, help="tags inspected by skopeo per round")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-resolve-") as tmp, LocalRegistry(workdir=Path(tmp) / "reg") as reg:
        top = Path(tmp)
        started = time.monotonic()
        pairs = populate(reg, args.repos, args.tags_per_repo)
        print(f"pushed {len(pairs)} tags over {args.repos} repositories in {time.monotonic() - started:.1f} s")

        recipe = [f"http://{reg.host}/{repo}:{tag}" for repo, tag in pairs]
        (top / "recipe.yaml").write_text(json.dumps(recipe))
        configs = {}
        for variant, workers in (("ours", args.workers), ("ours, 1 worker", 1)):
            config = {
                "recipe": str(top / "recipe.yaml"),
                "work_dir": str(top / f"work-{workers}"),
                "output_root": str(top / f"output-{workers}"),
                "registries": {reg.host: {"insecure": True}},
            }
            if workers:
                config["resolve_workers"] = workers
            path = top / f"config-{workers}.yaml"
            path.write_text(json.dumps(config))
            configs[variant] = path
        urls = [f"{reg.url}/v2/{repo}/manifests/{tag}" for repo, tag in pairs]
        (top / "urls.json").write_text(json.dumps(urls))
        skopeo_script = "\n".join(
            f"skopeo inspect --raw --tls-verify=false docker://{reg.host}/{repo}:{tag} >/dev/null || exit 1"
            for repo, tag in pairs[: args.skopeo_tags]
        )
        (top / "skopeo.sh").write_text("set -e\n" + skopeo_script + "\n")
        unpacked = [sys.executable, "-m", "unpacked.cli", "resolve", "--config"]
        commands = {
            "ours": [*unpacked, str(configs["ours"])],
            "ours, 1 worker": [*unpacked, str(configs["ours, 1 worker"])],
            "DUCC-style GET": [sys.executable, "-c", SEQUENTIAL_GET, str(top / "urls.json"), MANIFEST_TYPES],
            "skopeo per tag": ["sh", str(top / "skopeo.sh")],
        }
        scale = {"skopeo per tag": len(pairs) / min(args.skopeo_tags, len(pairs))}

        for variant in ("ours", "ours, 1 worker"):  # the first sync: resolution only
            seconds, sent, rss = run_measured(commands[variant], top, reg)
            print(f"first resolution ({variant}): {seconds:.2f} s, {sent} requests, {rss} MB")
        results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in commands}
        for round_number in range(args.rounds):
            for name, command in commands.items():  # alternating, same conditions
                results[name].append(run_measured(command, top, reg))
            print(f"round {round_number + 1}: " + ", ".join(f"{n} {r[-1][0]:.2f} s" for n, r in results.items()))

        ours = statistics.median(r[0] for r in results["ours"])
        print(f"\nno-op resolution of {len(pairs)} tags, medians of {args.rounds} alternating rounds:")
        print(f"{'variant':<18} {'wall s':>8} {'requests':>9} {'peak MB':>8} {'time / ours':>12}")
        for name, runs in results.items():
            factor = scale.get(name, 1.0)
            wall = statistics.median(r[0] for r in runs) * factor
            sent = round(statistics.median(r[1] for r in runs) * factor)
            rss = max(r[2] for r in runs)
            note = f"  (measured on {args.skopeo_tags} tags, scaled)" if name in scale else ""
            print(f"{name:<18} {wall:>8.2f} {sent:>9} {rss:>8} {wall / ours:>11.1f}x{note}")
        print("\nmachine: " + json.dumps(machine(), indent=1))


if __name__ == "__main__":
    main()
