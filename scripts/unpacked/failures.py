"""Failure records and the end-of-run summary.

Resolution failures are listed in `state/resolved.json`; a job that fails writes
`<work>/failures/<action>-<key>.json`. The summary maps them back to recipe entries and decides the
exit code: a run fails unless every failed input matches the recipe's `ignoreErrors`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from .fsutil import discard, write_atomic
from .recipe import Recipe
from .reference import parse_reference
from .resolve import load_resolution
from .store import Store


def failures_dir(store: Store) -> Path:
    return store.work / "failures"


def clear_job_failures(store: Store) -> None:
    """Forget the previous run's job failures (called once per run, before the DAG is built)."""
    discard(failures_dir(store), store.work_trash)  # never half of them: a kill leaves all or none


def _record_path(store: Store, action: str, key: str) -> Path:
    # Keys are digests or published names: a hash keeps distinct keys apart in one flat directory.
    return failures_dir(store) / f"{action}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def record_job_failure(store: Store, action: str, key: str, error: str, images: list[str]) -> None:
    document = {"action": action, "key": key, "error": error, "images": images, "time": time.time()}
    write_atomic(_record_path(store, action, key), json.dumps(document, indent=1).encode())


def clear_job_failure(store: Store, action: str, key: str) -> None:
    _record_path(store, action, key).unlink(missing_ok=True)


def is_published(store: Store, name: str, state: dict[str, Any]) -> bool:
    """True if the publish job ran for exactly this state (not for an older version of the tag)."""
    try:
        marker = json.loads(store.published_marker(name).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return all(marker.get(key) == state[key] for key in ("source_digest", "config_digest"))


def failures_recorded(store: Store) -> bool:
    """True if a job of this run left a failure record."""
    return any(failures_dir(store).glob("*.json"))


def collect(store: Store, recipe: Recipe, resolution_only: bool = False) -> list[dict[str, Any]]:
    """Every failure of this run: {reference, error, ignored}."""
    resolution = load_resolution(store)
    found = list(resolution.failures)
    if resolution_only:
        return found
    records = [json.loads(path.read_text()) for path in sorted(failures_dir(store).glob("*.json"))]
    recorded = {name for record in records for name in record["images"]}
    for name, state in sorted(resolution.images.items()):
        # An image whose jobs never ran (e.g. an interrupted run) is not in sync either.
        if name not in recorded and not is_published(store, name, state):
            ignored = recipe.is_ignored(parse_reference(state["reference"]))
            found.append({"reference": state["reference"], "error": "not published yet", "ignored": ignored})
    for record in records:
        for name in record["images"]:
            state = resolution.images.get(name, {})
            reference = state.get("reference", name)
            ignored = recipe.is_ignored(parse_reference(reference))
            found.append(
                {"reference": reference, "error": f"{record['action']}: {record['error']}", "ignored": ignored}
            )
    return found


def summary_text(found: list[dict[str, Any]]) -> str:
    lines = [f"{len(found)} image(s) failed:"]
    for failure in found:
        mark = " (ignored: matches ignoreErrors)" if failure["ignored"] else ""
        lines.append(f"  {failure['reference']}{mark}\n      {failure['error']}")
    return "\n".join(lines)


# A tag that lacks some wanted platforms is reported, not failed; long lists are cut in the summary
# (the whole list is in <work>/state/resolved.json).
NOTICES_SHOWN = 20


def notices_text(notices: list[dict[str, Any]]) -> str:
    """The end-of-run note on tags that lack some of the wanted platforms ("" if none)."""
    if not notices:
        return ""
    lines = [f"{len(notices)} image(s) lack some wanted platform(s) (published for the others):"]
    for notice in notices[:NOTICES_SHOWN]:
        lines.append(f"  {notice['reference']}: no {', '.join(notice['missing_platforms'])}")
    if len(notices) > NOTICES_SHOWN:
        lines.append(f"  ... and {len(notices) - NOTICES_SHOWN} more (see state/resolved.json)")
    return "\n".join(lines)
