"""Cluster jobs without a Snakemake per job: `unpacked slurm-submit` and `unpacked cluster-job`.

Snakemake's job script starts a whole Snakemake in every cluster job (parse the Snakefile, build the
job's DAG, run its shell command): about 3 s per job, longer than most of this workflow's jobs.
profiles/slurm-sbatch submits through `unpacked slurm-submit`, which is `sbatch` with the same
options, but whose job is `unpacked cluster-job <Snakemake's job script>`. That rebuilds the rule's
command (the words of its `shell:` in rules/, one builder per rule below) from the properties
Snakemake writes into the script (rule, wildcards, params, input, output, log), does what
Snakemake's job does around it (wait for the inputs on a shared file system, remove stale outputs,
make their directories, send stderr to the job's log), and runs it in its own process. The main
Snakemake process still checks the outputs and records the job, as for any cluster job. A job it
does not know (another rule, or properties Snakemake cut short) runs Snakemake's script unchanged.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

# How long a job waits for its inputs to appear (a shared file system's attribute cache), as
# Snakemake's `--latency-wait` in the profile.
INPUT_WAIT_SECONDS = 30.0

Properties = dict[str, Any]


def _fetch_blob(job: Properties) -> list[str]:
    return [
        "fetch-blob",
        *("--settings", job["params"]["settings"]),
        *("--image", job["params"]["image"]),
        *("--digest", f"sha256:{job['wildcards']['hex']}"),
        *("--outputs", *job["output"]),
    ]


def _extract_layer(job: Properties) -> list[str]:
    return [
        "extract-layer",
        *("--settings", job["params"]["settings"]),
        *("--digest", f"sha256:{job['wildcards']['hex']}"),
        *("--diff-id", job["params"]["diff_id"]),
        *("--inputs", *job["input"]),
        *("--outputs", *job["output"]),
    ]


def _publish_image(job: Properties) -> list[str]:
    return [
        "publish",
        *("--settings", job["params"]["settings"]),
        *("--flat", f"sha256:{job['wildcards']['hex']}"),
        *("--inputs", *job["input"]),
        *("--outputs", *job["output"]),
        *shlex.split(job["params"].get("only", "")),  # `--only NAME ...` when the run syncs some tags only
    ]


def _publish_batch(job: Properties) -> list[str]:
    # No --inputs: the job reads each image's inputs from its batch file.
    return [
        "publish",
        *("--settings", job["params"]["settings"]),
        *("--batch", f"sha256:{job['wildcards']['hex']}"),
        *("--outputs", *job["output"]),
    ]


def _batch_inputs(job: Properties) -> list[str] | None:
    """The inputs of a publish_batch job, from its batch file: a batch of images with several
    layers each easily has more than the 100 inputs Snakemake writes into the properties."""
    from .errors import UnpackedError
    from .state import batch_inputs
    from .store import store_for

    try:
        settings = json.loads(Path(job["params"]["settings"]).read_text())
        return batch_inputs(store_for(settings), f"sha256:{job['wildcards']['hex']}")
    except (OSError, ValueError, KeyError, TypeError, UnpackedError):
        return None  # Snakemake's own job script then runs it


def _report_unresolved(job: Properties) -> list[str]:
    return ["summary", "--settings", job["params"]["settings"], "--resolution-only"]


# The rules of rules/*.smk and the CLI words of their `shell:` (tests/test_slurm.py compares the two
# on a real run, job by job).
COMMANDS: dict[str, Callable[[Properties], list[str]]] = {
    "fetch_blob": _fetch_blob,
    "extract_layer": _extract_layer,
    "publish_image": _publish_image,
    "publish_batch": _publish_batch,
    "report_unresolved": _report_unresolved,
}


def command_of(job: Properties) -> list[str] | None:
    """The `unpacked` arguments of this job, or None when Snakemake must run it."""
    build = COMMANDS.get(job.get("rule", ""))
    if job.get("rule") == "publish_batch" and job.get("input") is None and job.get("params") is not None:
        job["input"] = _batch_inputs(job)  # filled in: `run` waits for them as for any job's inputs
    # Snakemake leaves params out when they are not JSON, and input/output past 100 files.
    if build is None or any(job.get(key) is None for key in ("params", "input", "output")):
        return None
    try:
        return build(job)
    except (KeyError, TypeError):
        return None


def properties_of(script: str) -> Properties:
    """The job properties from a Snakemake job script (its `# properties = {...}` line)."""
    for line in script.splitlines():
        if line.startswith("# properties = "):
            properties: Properties = json.loads(line.removeprefix("# properties = "))
            return properties
    msg = "no '# properties = ' line: not a Snakemake job script"
    raise ValueError(msg)


def _wait_for(paths: list[str], seconds: float) -> list[str]:
    """The paths still missing after waiting up to `seconds` for them."""
    deadline = time.monotonic() + seconds
    missing = [path for path in paths if not os.path.exists(path)]
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing = [path for path in missing if not os.path.exists(path)]
    return missing


def _prepare(job: Properties) -> None:
    """What Snakemake's job does before the command: stale outputs and log go, their directories exist."""
    for path in [*job["output"], *job.get("log", [])]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not os.path.isdir(path):
            Path(path).unlink(missing_ok=True)


def _stderr_to(log_path: str) -> None:
    """Send this process's stderr (and so the command's log lines) to the job's log, as `2> {log}`."""
    sys.stderr.flush()
    descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(descriptor, 2)
    os.close(descriptor)


def _read_script(script_path: Path) -> str:
    """The job script, waited for as the inputs are (it was written on the submitting host)."""
    _wait_for([str(script_path)], INPUT_WAIT_SECONDS)
    return script_path.read_text()


def run(script_path: Path) -> int:
    """Run the job a Snakemake job script describes and return its exit code; a job this module
    cannot rebuild (another rule, properties cut short or missing) runs the script itself: this
    process becomes Snakemake's job."""
    try:
        job = properties_of(_read_script(script_path))
    except ValueError:  # a site's own job script template, without the properties line
        job = {}
    arguments = command_of(job)
    if arguments is None:
        os.execv("/bin/sh", ["/bin/sh", str(script_path)])
    logs = list(job.get("log", []))
    missing = _wait_for(list(job["input"]), INPUT_WAIT_SECONDS)
    _prepare(job)
    if logs:
        _stderr_to(logs[0])
    # The first line of the job's log says how it ran (Snakemake's own job would not write it).
    print(f"unpacked cluster-job: {job['rule']}: {shlex.join(['unpacked', *arguments])}", file=sys.stderr)
    if missing:
        print(f"{job['rule']}: inputs missing after {INPUT_WAIT_SECONDS:.0f} s: {', '.join(missing)}", file=sys.stderr)
        return 1
    from .cli import main  # the command's own imports are all it loads

    try:
        main(arguments)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


USAGE = "usage: unpacked slurm-submit [SBATCH_OPTION ...] JOBSCRIPT"


def submit_command(sbatch_arguments: list[str], cwd: str) -> list[str]:
    """The `sbatch` command for these options and job script (the last word): its job runs
    `cluster-job` on the script, in `cwd` (where Snakemake's relative paths start), through this
    very interpreter (the nodes share the project's environment; no PATH lookup on the node)."""
    *options, script = sbatch_arguments
    job = shlex.join([sys.executable, "-m", "unpacked.cli", "cluster-job", os.path.join(cwd, script)])
    return ["sbatch", *options, f"--chdir={cwd}", "--wrap", f"exec {job}"]


def submit(sbatch_arguments: list[str]) -> NoReturn:
    """exec `sbatch` (see submit_command). The script stays where Snakemake wrote it, under the
    working directory every node already shares, until the run ends."""
    if not sbatch_arguments or sbatch_arguments[-1] in ("-h", "--help"):
        sys.exit(USAGE)
    if not os.path.isfile(sbatch_arguments[-1]):
        sys.exit(f"unpacked slurm-submit: {sbatch_arguments[-1]}: no such job script\n{USAGE}")
    os.execvp("sbatch", submit_command(sbatch_arguments, os.getcwd()))
