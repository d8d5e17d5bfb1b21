"""One workflow job around its work: placeholders in, a failure record and an exit code out.

The exit code is the whole of how a run's status is decided (see placeholders.py): 1 when the job
failed, 0 when it succeeded or when its failure touches only images matching `ignoreErrors`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UnpackedError
from .placeholders import failed_inputs, leave_placeholders
from .running import marked_running
from .safefs import write_atomic
from .store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    action: str  # the CLI command: fetch-blob, extract-layer, flatten, publish
    key: str  # what it is for: a digest (fetch, extract) or a published name (flatten, publish)
    image: str | None  # the image a fetch is for (named when no resolved image uses the blob)
    inputs: list[Path]  # what Snakemake gave it
    outputs: list[Path]


# A job's work, one or more steps, each named by the action a failure of it is recorded as (the
# publish job flattens, then publishes).
Steps = list[tuple[str, Callable[[], None]]]


def run_job(settings: dict[str, Any], store: Store, job: Job, steps: Steps) -> int:
    """Run `steps` as the job `job`; return the job's exit code."""
    failed = failed_inputs(job.inputs)
    if failed:
        # An ignored failure upstream: nothing to build from, and nothing to report twice.
        leave_placeholders(store, job.outputs, f"input {failed[0]} failed")
        log.warning("%s: not run, its input %s stands for an ignored failure", job.action, failed[0])
        return 0
    # Seen by `unpacked status --running` while the job runs; a kill -9 leaves it behind, as stale.
    with marked_running(store, job.action, job.key, job.image):
        return _run_steps(settings, store, job, steps)


def _run_steps(settings: dict[str, Any], store: Store, job: Job, steps: Steps) -> int:
    seconds: dict[str, float] = {}
    try:
        return _timed_steps(settings, store, job, steps, seconds)
    finally:
        _save_stage_times(store, job, seconds)


def _save_stage_times(store: Store, job: Job, seconds: dict[str, float]) -> None:
    """This job's time per step, for the run's history line (the report's time per stage)."""
    try:
        write_atomic(store.stage_times(job.action, job.key), json.dumps(seconds).encode())
    except (OSError, UnpackedError) as err:  # a full disk fails the work itself, not this note about it
        log.warning("could not record the job's times: %s", err)


def _timed_steps(settings: dict[str, Any], store: Store, job: Job, steps: Steps, seconds: dict[str, float]) -> int:
    for action, work in steps:
        started = time.monotonic()
        try:
            work()
        except UnpackedError as err:
            log.error("%s", err)
            failed_action, key = err.step or (action, job.key)
            return _failed(settings, store, job, failed_action, key, err)
        except Exception as err:  # an unexpected failure still names the job and is recorded
            log.error("%s: %s: %s", action, type(err).__name__, err)
            return _failed(settings, store, job, action, job.key, err)
        finally:
            seconds[action] = seconds.get(action, 0.0) + time.monotonic() - started
        # A step that succeeds takes back the failure an earlier (e.g. offline) attempt recorded.
        store.failure_record(action, job.key).unlink(missing_ok=True)
    return 0


def _failed(settings: dict[str, Any], store: Store, job: Job, action: str, key: str, err: Exception) -> int:
    """Record the failure for the end-of-run summary; 0 (placeholders left) if it only touches
    ignored images, else 1."""
    # Imported here: only a failing job needs the recipe (and its YAML loader) and the resolution.
    from .failures import all_ignored, images_affected, record_job_failure
    from .recipe import load_recipe
    from .state import load_resolution

    try:
        resolution = load_resolution(store)
        affected = images_affected(resolution, action, key)
        if action == "fetch-blob" and affected == [key] and job.image:
            affected = [job.image]
        record_job_failure(store, action, key, str(err), affected)
        if job.outputs and all_ignored(resolution, load_recipe(Path(settings["recipe"])), affected):
            leave_placeholders(store, job.outputs, f"{action}: {err}")
            log.warning(
                "the failure only touches images matching ignoreErrors (%s): the run goes on", ", ".join(affected)
            )
            return 0
    except Exception as inner:  # the original error matters more than this record
        log.warning("could not record the failure: %s", inner)
    return 1
