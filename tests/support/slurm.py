"""A real one-node Slurm cluster of its own: munged, slurmctld and slurmd on 127.0.0.1, free ports.

Everything (munge key and socket, slurm.conf, state, spool, logs) lives in a private directory, so
runs beside other test sessions, or a site's own Slurm, never meet. Commands find the cluster through
`SLURM_CONF` in `env`. Missing packages fail loudly with what to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .registry import free_port

NEEDED = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
# Client commands that get a wrapper pointing them at this cluster's slurm.conf: a site keeps it in
# /etc/slurm, where every process finds it; the Slurm executor plugin drops SLURM_* variables from
# the environment of its jobs, so the wrappers stand for that system-wide file.
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun", "sacct")


def require_slurm() -> None:
    missing = [tool for tool in NEEDED if shutil.which(tool, path=f"{os.environ['PATH']}:/usr/sbin") is None]
    if missing:
        raise AssertionError(f"missing {', '.join(missing)}: apt-get install slurm-wlm munge (.ci/run does)")


class LocalSlurm:
    """`with LocalSlurm(directory) as slurm:` a cluster with one idle node, `slurm.env` to reach it."""

    def __init__(self, directory: Path, cpus: int = 2, memory_mb: int = 4000) -> None:
        require_slurm()
        self.directory = directory
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.node = socket.gethostname().split(".")[0]
        self.conf = directory / "slurm.conf"
        self.bin = directory / "bin"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf), PATH=f"{self.bin}:{os.environ['PATH']}")
        self._daemons: list[subprocess.Popen[bytes]] = []

    def _sbin(self, tool: str) -> str:
        found = shutil.which(tool, path=f"{os.environ['PATH']}:/usr/sbin")
        assert found is not None
        return found

    def __enter__(self) -> LocalSlurm:
        try:
            self._start_cluster()
        except BaseException:
            self.__exit__(None, None, None)  # no daemon outlives a failed start
            raise
        return self

    def _start_cluster(self) -> None:
        d = self.directory
        for sub in ("munge", "state", "spool", "log", "bin"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for tool in CLIENTS:
            real = shutil.which(tool)
            if real is not None:
                wrapper = self.bin / tool
                wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {real} "$@"\n')
                wrapper.chmod(0o755)
        os.chmod(d / "munge", 0o755)  # munged checks that clients can reach its socket
        key, sock = d / "munge" / "munge.key", d / "munge" / "socket"
        subprocess.run([self._sbin("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        self._start(
            [
                self._sbin("munged"),
                "--foreground",
                "--force",  # as root, in a private directory
                f"--socket={sock}",
                f"--key-file={key}",
                f"--log-file={d / 'log' / 'munged.log'}",
                f"--pid-file={d / 'munge' / 'pid'}",
                f"--seed-file={d / 'munge' / 'seed'}",
            ]
        )
        self._wait(lambda: sock.exists(), "munged did not create its socket")
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "root")
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=unpackedtest",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    f"SlurmUser={user}",
                    f"SlurmdUser={user}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={sock}",
                    f"StateSaveLocation={d / 'state'}",
                    f"SlurmdSpoolDir={d / 'spool'}",
                    f"SlurmctldPidFile={d / 'slurmctld.pid'}",
                    f"SlurmdPidFile={d / 'slurmd.pid'}",
                    f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={d / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SchedulerType=sched/builtin",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "MinJobAge=300",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb}",
                    f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        self._start([self._sbin("slurmctld"), "-D", "-f", str(self.conf)])
        self._start([self._sbin("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self._idle, f"the Slurm node did not become idle; see {d / 'log'}")

    def _start(self, command: list[str]) -> None:
        log = open(self.directory / "log" / f"{Path(command[0]).name}.out", "ab")  # noqa: SIM115 - the daemon's
        self._daemons.append(
            subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        log.close()

    def _idle(self) -> bool:
        done = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=self.env, capture_output=True, text=True)
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def _wait(self, ready: object, message: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if callable(ready) and ready():
                return
            for daemon in self._daemons:
                if daemon.poll() is not None:
                    raise AssertionError(f"{daemon.args[0]} exited ({daemon.returncode}); {message}")
            time.sleep(0.2)
        raise AssertionError(message)

    def jobs(self) -> dict[int, str]:
        """Every job the controller still knows (any state): id -> `state name`."""
        done = subprocess.run(
            ["squeue", "--noheader", "--states=all", "--format=%i %T %j"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return {int(line.split()[0]): line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.strip()}

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        subprocess.run(["scancel", "--full", f"--user={os.geteuid()}"], env=self.env, capture_output=True, check=False)
        for daemon in reversed(self._daemons):
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGTERM)
        for daemon in reversed(self._daemons):
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
