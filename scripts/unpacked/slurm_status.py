"""`unpacked slurm-status JOBID`: a Slurm job's state for Snakemake's cluster-generic executor.

Prints `running`, `success` or `failed`, the three answers that executor understands. Works without
an accounting database: `squeue` knows queued jobs and, until `MinJobAge` passes, finished ones;
`scontrol` answers for the same window; `sacct` (when slurmdbd runs) for any job after that.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

# Slurm job states that are not final (squeue --help, "JOB STATE CODES").
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",  # ended, but not yet cleaned up on its node: its outputs may still be closing
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "RESV_DEL_HOLD",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "SPECIAL_EXIT",  # requeued and held by the site's epilog
    }
)
QUERY_SECONDS = 30

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def verdict(state: str) -> str:
    """Snakemake's word for a Slurm state (`CANCELLED by 0` counts as CANCELLED)."""
    word = state.strip().split(" ")[0].rstrip("+").upper()
    if word in ACTIVE_STATES:
        return "running"
    return "success" if word == "COMPLETED" else "failed"


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=QUERY_SECONDS, check=False)


def _scontrol_state(text: str) -> str | None:
    for field in text.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


def job_state(job_id: str, run: Runner = _run) -> str:
    """`running`, `success` or `failed` for `job_id` (as `sbatch --parsable` printed it)."""
    job = job_id.split(";")[0].strip()
    queries: list[tuple[list[str], Callable[[str], str | None]]] = [
        (["squeue", "--noheader", "--states=all", "--format=%T", f"--jobs={job}"], _first_line),
        (["scontrol", "show", "job", job], _scontrol_state),
        (["sacct", "--noheader", "--parsable2", "--allocations", "--format=State", f"--jobs={job}"], _first_line),
    ]
    for command, parse in queries:
        try:
            done = run(command)
        except (OSError, subprocess.TimeoutExpired) as err:
            if command[0] == "squeue" and isinstance(err, subprocess.TimeoutExpired):
                log.warning("slurm-status: squeue timed out for job %s, assuming it still runs", job)
                return "running"  # an overloaded controller: the job may well be running
            log.warning("slurm-status: %s failed (%s)", command[0], err)
            continue
        state = parse(done.stdout) if done.returncode == 0 else None
        if state:
            return verdict(state)
        if command[0] == "squeue" and done.returncode != 0 and "invalid job id" not in done.stderr.lower():
            # The controller did not answer (restart, overload): the job may well be running. Waiting
            # is right; reporting it failed would rerun it beside itself.
            log.warning("slurm-status: squeue failed for job %s, assuming it still runs: %s", job, done.stderr.strip())
            return "running"
        log.debug("slurm-status: %s knows nothing of job %s: %s", command[0], job, done.stderr.strip())
    # No tool knows the job: it left squeue/scontrol (MinJobAge) and there is no accounting. Its
    # outputs decide on the next run; saying "failed" makes Snakemake remove them and retry now.
    log.warning("slurm-status: no Slurm command knows job %s any more; reporting it failed", job)
    return "failed"


def _first_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else None
