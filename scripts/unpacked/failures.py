"""Failure records and the end-of-run summary.

Resolution failures are listed in `state/resolved.json`; a job that fails writes
`<work>/failures/<action>-<key>.json`, kept until the next run starts executing (never by a dry-run).
The summary maps them back to recipe entries. The run's exit status is Snakemake's (see
placeholders.py): a failure that only touches `ignoreErrors` images does not fail its job.
"""

from __future__ import annotations

import time

from .fsutil import discard
from .recipe import Recipe
from .reference import parse_reference
from .state import (
    Failure,
    JobFailure,
    Notice,
    Resolution,
    is_published,
    load_job_failures,
    load_resolution,
    save_job_failure,
)
from .store import Store


def clear_job_failures(store: Store) -> None:
    """Forget the previous run's job failures (called when a run starts executing jobs: Snakemake's
    `onstart`, which a dry-run never calls)."""
    discard(store.failures, store.work_trash)  # never half of them: a kill leaves all or none


def record_job_failure(store: Store, action: str, key: str, error: str, images: list[str]) -> None:
    save_job_failure(store, JobFailure(action, key, error, tuple(images), time.time()))


def images_affected(resolution: Resolution, action: str, key: str) -> list[str]:
    """Every resolved image a failed job leaves out of date, not only the one it ran for.

    `key` is what the job ran for: a published name (flatten, publish) or a digest (fetch, extract).
    """
    images = resolution.images
    if action == "publish":
        return [key]
    if action == "flatten":
        config = images[key].config_digest if key in images else None
        return [name for name, image in images.items() if image.config_digest == config] or [key]
    return [name for name, image in images.items() if image.uses(key)] or [key]


def all_ignored(resolution: Resolution, recipe: Recipe, names: list[str]) -> bool:
    """True if every image in `names` is resolved and matches the recipe's `ignoreErrors`."""
    images = resolution.images
    return bool(names) and all(
        name in images and recipe.is_ignored(parse_reference(images[name].reference)) for name in names
    )


def collect(store: Store, recipe: Recipe, resolution_only: bool = False) -> list[Failure]:
    """Every failure of this run, mapped back to recipe entries."""
    resolution = load_resolution(store)
    found = list(resolution.failures)
    if resolution_only:
        return found
    records = load_job_failures(store)
    recorded = {name for record in records for name in record.images}
    for name, image in sorted(resolution.images.items()):
        # An image whose jobs never ran (e.g. an interrupted run) is not in sync either.
        if name not in recorded and not is_published(store, name, image.source_digest, image.config_digest):
            ignored = recipe.is_ignored(parse_reference(image.reference))
            found.append(Failure(image.reference, "not published yet", ignored))
    shown: set[tuple[str, str]] = set()
    for record in records:
        for name in record.images:
            reference = resolution.images[name].reference if name in resolution.images else name
            text = f"{record.action}: {record.error}"
            if (reference, text) in shown:  # tags of one image that each failed to build it alike
                continue
            shown.add((reference, text))
            ignored = recipe.is_ignored(parse_reference(reference))
            found.append(Failure(reference, text, ignored))
    return found


def summary_text(found: list[Failure]) -> str:
    lines = [f"{len(found)} image(s) failed:"]
    for failure in found:
        mark = " (ignored: matches ignoreErrors)" if failure.ignored else ""
        lines.append(f"  {failure.reference}{mark}\n      {failure.error}")
    return "\n".join(lines)


# A tag that lacks some wanted platforms is reported, not failed; long lists are cut in the summary
# (the whole list is in <work>/state/resolved.json).
NOTICES_SHOWN = 20


def notices_text(notices: list[Notice]) -> str:
    """The end-of-run note on tags that lack some of the wanted platforms ("" if none)."""
    if not notices:
        return ""
    lines = [f"{len(notices)} image(s) lack some wanted platform(s) (published for the others):"]
    for notice in notices[:NOTICES_SHOWN]:
        lines.append(f"  {notice.reference}: no {', '.join(notice.missing_platforms)}")
    if len(notices) > NOTICES_SHOWN:
        lines.append(f"  ... and {len(notices) - NOTICES_SHOWN} more (see state/resolved.json)")
    return "\n".join(lines)
