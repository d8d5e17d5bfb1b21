"""Benchmark: the demo recipe synced locally and through each Slurm profile, on a real one-node Slurm.

    .venv/bin/python bench/cluster_sync.py [--rounds 3]

Starts a private Slurm (munged, slurmctld, slurmd on 127.0.0.1, tests/support/slurm.py) and a real
`docker-registry`, pushes the demo's image (a busybox root filesystem plus a layer that deletes a
file) as demo/busybox:1.0 and 1.1, then times a first sync of the recipe `demo/busybox:1.*`, in fresh
directories, alternating: `snakemake --cores 2` (profiles/default), `--workflow-profile
profiles/slurm` and `--workflow-profile profiles/slurm-sbatch`. Prints medians and ratios to local.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import oci
from support.registry import LocalRegistry
from support.slurm import LocalSlurm
from support.umoci_images import make_busybox_rootfs
from support.workflow import REPO, SNAKEMAKE, workflow_env, write_config

VARIANTS = ("local", "slurm", "slurm-sbatch")


def demo_image(workdir: Path) -> oci.Image:
    rootfs = make_busybox_rootfs(workdir / "rootfs")
    (rootfs / "etc").mkdir(exist_ok=True)
    (rootfs / "etc" / "obsolete.conf").write_text("old\n")
    second = oci.TarLayer().add_file("etc/motd", b"hello from the demo\n").add_whiteout("etc/obsolete.conf")
    return oci.build_image([oci.tree_layer(rootfs), second.tar_bytes()])


def timed_sync(variant: str, directory: Path, slurm: LocalSlurm) -> float:
    if variant == "local":
        command = [str(SNAKEMAKE), "--workflow-profile", "profiles/default", "--cores", "2"]
    else:
        command = [str(SNAKEMAKE), "--workflow-profile", f"profiles/{variant}"]
    env = workflow_env()
    env.update(SLURM_CONF=slurm.env["SLURM_CONF"], PATH=f"{slurm.bin}:{env['PATH']}")
    started = time.monotonic()
    done = subprocess.run(
        [*command, "--directory", str(directory)], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        top = Path(tmp)
        with LocalRegistry(workdir=top / "registry") as registry, LocalSlurm(top / "slurm") as slurm:
            image = demo_image(top / "image")
            for tag in ("1.0", "1.1", "2.0"):
                oci.push(registry, "demo/busybox", tag, image)
            recipe = [f"http://{registry.host}/demo/busybox:1.*"]
            for round_number in range(args.rounds):
                for variant in VARIANTS:
                    directory = top / f"round{round_number}" / variant
                    write_config(directory, recipe, {registry.host: {"insecure": True}})
                    times[variant].append(timed_sync(variant, directory, slurm))
                    print(f"round {round_number} {variant}: {times[variant][-1]:.1f} s", flush=True)
    local = statistics.median(times["local"])
    print(f"{'variant':14} {'median s':>9} {'/ local':>8}  rounds s")
    for variant, runs in times.items():
        median = statistics.median(runs)
        print(f"{variant:14} {median:9.1f} {median / local:8.2f}  {' '.join(f'{t:.1f}' for t in runs)}")


if __name__ == "__main__":
    main()
