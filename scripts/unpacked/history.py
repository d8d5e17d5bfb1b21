"""Run history: one JSON line per run (and per gc) in `<work>/history/<YYYY-MM>.jsonl`.

A run that executes jobs opens a journal when its DAG is built (`<work>/history/current.json`: when
it started, who ran it, and each name the run is about to publish, with the digest published before
and the one it will publish); the end of the run (`unpacked record-run`, from the Snakefile's
onsuccess/onerror) closes it into one line: start, end, who, status, counts, each name changed with
its old and new digests, each failure with its error. A journal a killed run left open is closed as
`interrupted` by the next run. Dry-runs write nothing. Files are per month; the newest
KEEP_MONTHS are kept. This is also the feed for a notification hook or a dashboard: the line is
JSON, appended with one write.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from typing import Any

from .fsutil import json_bytes
from .safefs import write_atomic
from .state import Resolution, load_job_failures, load_record
from .store import Store

KEEP_MONTHS = 24
FORMAT = 1
# How the main Snakemake process's run went, for its line when no end-of-run hook writes it: set
# when its jobs start (Snakemake's onstart), or when Snakemake finds nothing to do (its log line).
_RUN = {"jobs_started": False, "nothing_to_do": False}


def mark_jobs_started() -> None:
    _RUN["jobs_started"] = True


def mark_nothing_to_do() -> None:
    _RUN["nothing_to_do"] = True


def ending_without_hook() -> str:
    """The status of a run whose end no hook recorded: `interrupted` (its jobs started), `no-jobs`
    (nothing to do), or `not-run` (it stopped before any job: a Snakemake lock, a DAG error)."""
    if _RUN["jobs_started"]:
        return "interrupted"
    return "no-jobs" if _RUN["nothing_to_do"] else "not-run"


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _published(store: Store, name: str) -> dict[str, str] | None:
    """What users of the root get for `name`: its record (written with each publish, before the
    link), not the work marker, which self-repair may have dropped while the image is still there."""
    record = load_record(store.record(name))
    return None if record is None else {"digest": record.source_digest, "config": record.config_digest}


def open_journal(store: Store, resolution: Resolution, only: set[str] | None) -> None:
    """At the start of a run that executes jobs: what it is about to change, before any job runs."""
    close_interrupted(store)
    _clear_stage_times(store)
    pending: dict[str, Any] = {}
    for name, image in resolution.images.items():
        if only is not None and image.reference not in only:
            continue
        before = _published(store, name)
        new = {"digest": image.source_digest, "config": image.config_digest}
        if before != new:
            pending[name] = {"reference": image.reference, "old": before, "new": new}
    journal = {"format": FORMAT, "kind": "sync", "start": now_utc(), "who": who(), "pending": pending}
    if only is not None:
        journal["only"] = sorted(only)
    write_atomic(store.run_journal, json_bytes(journal))


def _failures(store: Store, resolution: Resolution, jobs_ran: bool, only: list[str] | None) -> list[dict[str, Any]]:
    """This run's failures: of resolution, and of its jobs. A run that synced `only` some entries
    reports theirs alone (the others' records are older runs')."""
    wanted = None if only is None else set(only)
    found: list[dict[str, Any]] = [
        {"reference": failure.reference, "step": "resolve", "error": failure.error, "ignored": failure.ignored}
        for failure in resolution.failures
        if wanted is None or failure.reference in wanted
    ]
    # Without jobs, the job failure records on disk are an earlier run's.
    for failure in load_job_failures(store) if jobs_ran else []:
        names = list(failure.images)
        if wanted is not None:
            names = [
                name for name in names if name in resolution.images and resolution.images[name].reference in wanted
            ]
            if not names:
                continue
        found.append({"step": failure.action, "key": failure.key, "names": names, "error": failure.error})
    return found


def _clear_stage_times(store: Store) -> None:
    for path in store.stages_dir.glob("*.json"):
        path.unlink(missing_ok=True)


def stage_seconds(store: Store) -> dict[str, float]:
    """The run's job time per stage (fetch-blob, extract-layer, flatten, publish), summed over jobs."""
    total: dict[str, float] = {}
    for path in store.stages_dir.glob("*.json"):
        try:
            times = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for stage, seconds in times.items() if isinstance(times, dict) else ():
            if isinstance(seconds, (int, float)):
                total[stage] = round(total.get(stage, 0.0) + float(seconds), 3)
    return dict(sorted(total.items()))


def close_journal(store: Store, resolution: Resolution, status: str | None) -> dict[str, Any] | None:
    """At the end of a run: its history line (appended), or None if no journal is open. A run that
    had nothing to do has status None: it failed only if an entry did not resolve. `not-run`: it
    stopped before any job for another reason, a failure. `interrupted`: its jobs started, but no
    hook saw its end."""
    try:
        journal: dict[str, Any] = json.loads(store.run_journal.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        journal = {"kind": "sync", "start": None, "who": who(), "pending": {}}
    changed, not_done = [], []
    for name, change in sorted(journal.get("pending", {}).items()):
        if _published(store, name) == change["new"]:
            changed.append({"name": name, **change})
        else:
            not_done.append(name)
    jobs_ran = status not in (None, "not-run")
    failures = _failures(store, resolution, jobs_ran, journal.get("only"))
    if status == "not-run":
        failures.append({"step": "snakemake", "error": "the run stopped before any job ran: see Snakemake's log"})
        status = "failed"
    elif status is None:
        status = "failed" if resolution.unignored_failures else "ok"
    line = {
        "format": FORMAT,
        "kind": journal.get("kind", "sync"),
        "start": journal.get("start"),
        "end": now_utc(),
        "who": journal.get("who"),
        "status": status,
        "counts": {
            "images": len(resolution.images),
            "changed": len(changed),
            "not_published": len(not_done),
            "failures": len(failures),
        },
        "changed": changed,
        "failures": failures,
        "stage_seconds": stage_seconds(store),
        "jobs_ran": jobs_ran,
    }
    if "only" in journal:
        line["only"] = journal["only"]
    append(store, line)
    store.run_journal.unlink(missing_ok=True)
    _clear_stage_times(store)
    return line


def close_interrupted(store: Store) -> None:
    """A journal a killed run left open becomes an `interrupted` line (what it changed is not known)."""
    try:
        journal: dict[str, Any] = json.loads(store.run_journal.read_text())
    except FileNotFoundError:
        return
    except ValueError:
        journal = {}
    line = {
        "format": FORMAT,
        "kind": journal.get("kind", "sync"),
        "start": journal.get("start"),
        "end": None,
        "who": journal.get("who"),
        "status": "interrupted",
        "counts": {"pending": len(journal.get("pending", {}))},
        "changed": [],
        "failures": [],
    }
    append(store, line)
    store.run_journal.unlink(missing_ok=True)


def append(store: Store, line: dict[str, Any]) -> None:
    """Append one line to this month's file (one write: a reader never sees half a line), and drop
    the files of months past KEEP_MONTHS."""
    store.history_dir.mkdir(parents=True, exist_ok=True)
    path = store.history_file(time.strftime("%Y-%m", time.gmtime()))
    data = (json.dumps(line, sort_keys=True) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)
    for old in store.history_files()[:-KEEP_MONTHS]:
        old.unlink(missing_ok=True)


def read(store: Store, last: int | None = None) -> list[dict[str, Any]]:
    """The history lines, oldest first (the last `last` of them); a damaged line is skipped."""
    lines: list[dict[str, Any]] = []
    for path in reversed(store.history_files()):
        found = []
        for text in path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(text))
            except ValueError:
                continue
        lines = found + lines
        if last is not None and len(lines) >= last:
            break
    return lines[-last:] if last is not None else lines


def record_gc(store: Store, start: str, removed: dict[str, int], dry_run: bool) -> None:
    if dry_run:
        return
    line = {"format": FORMAT, "kind": "gc", "start": start, "end": now_utc(), "who": who(), "status": "ok"}
    append(store, {**line, "counts": removed, "changed": [], "failures": []})


def text(lines: list[dict[str, Any]]) -> str:
    """The runs as an operator reads them: one line each, then what changed and what failed."""
    if not lines:
        return "no runs recorded yet\n"
    out = []
    for line in lines:
        counts = ", ".join(f"{key} {value}" for key, value in line.get("counts", {}).items())
        out.append(f"{line.get('start')} -> {line.get('end')}  {line.get('kind')}  {line.get('status')}  {counts}")
        for change in line.get("changed", []):
            old = (change.get("old") or {}).get("digest") or "(new)"
            out.append(f"    changed {change['name']}: {_short(old)} -> {_short(change['new']['digest'])}")
        for failure in line.get("failures", []):
            what = failure.get("reference") or ", ".join(failure.get("names", [])) or failure.get("key") or "the run"
            ignored = " (ignored: matches ignoreErrors)" if failure.get("ignored") else ""
            out.append(f"    failed  {what}: {failure.get('step')}: {failure.get('error')}{ignored}")
    return "\n".join(out) + "\n"


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12] if digest.startswith("sha256:") else digest
