"""The publish job of one flat image: build it unless it is built, then publish each of its names
that is not published as it resolves now.

One job per flat image, not per name: thousands of tags of one image are one process, and one
ready job for Snakemake's scheduler (whose every pass looks at every ready job). Each name is still
its own unit of work (`run_job`): its own running marker, stage times and failure record, as when
a job published one name, so one name that cannot be published does not stop the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .errors import UnpackedError
from .jobs import Job, Steps, run_job
from .placeholders import failed_inputs, is_placeholder, leave_placeholders
from .safefs import write_atomic
from .state import ResolvedImage, is_published, load_flat_names, load_image
from .store import Store

log = logging.getLogger(__name__)


class FlattenOnce:
    """The flatten step of every name of the flat image: runs once; a failure is raised once."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work
        self.done = False
        self.failed = False

    def __call__(self) -> None:
        if self.done:
            return
        try:
            self.work()
        except BaseException:
            self.failed = True
            raise
        self.done = True


def publish_flat(
    settings: dict[str, Any],
    store: Store,
    config_digest: str,
    inputs: list[Path],
    outputs: list[Path],
    flatten: Callable[[Store, ResolvedImage], None],
    publish: Callable[[ResolvedImage], None],
) -> int:
    """Publish the names of the flat image `config_digest`; return the job's exit code.

    `flatten` builds the flat image from an image of it, `publish` links one name. The job's output
    (`outputs`) is written only when every name is published: a name that failed leaves it missing,
    and the next run retries that name alone (the others are published as they are).
    """
    sources = load_flat_names(store, config_digest)
    names = sorted(sources)
    stale = [name for name in names if not is_published(store, name, sources[name], config_digest)]
    if not stale:
        log.info("%s: all %d name(s) already published as they resolve now", config_digest, len(names))
        return _done(store, config_digest, names, outputs)
    images = {name: _image(store, name, config_digest) for name in {names[0], *stale}}
    failed = failed_inputs(inputs)
    if failed:  # an ignored failure upstream: nothing to build from, and nothing to report twice
        log.warning("publish: not run, its input %s stands for an ignored failure", failed[0])
        markers = [store.published_marker(name) for name in stale]
        leave_placeholders(store, [*markers, *outputs], f"input {failed[0]} failed")
        return 0
    # The image whose layers the workflow gave this job (its first name's): it builds the flat image.
    step = FlattenOnce(lambda: flatten(store, images[names[0]]))
    worst = 0
    for name in stale:
        job = Job("publish", name, name, inputs, [store.published_marker(name)])
        steps: Steps = [("flatten", step), ("publish", partial(publish, images[name]))]
        worst = max(worst, run_job(settings, store, job, steps))
        if step.failed:
            # Recorded once, for every name of the flat image (`failures.images_affected`).
            log.error("%s: the flat image was not built; none of its %d name(s) published", config_digest, len(names))
            break
    published = sum(1 for name in stale if is_published(store, name, sources[name], config_digest))
    log.info(
        "%s: %d name(s) published, %d already were, %d not",
        config_digest,
        published,
        len(names) - len(stale),
        len(stale) - published,
    )
    if worst:
        return worst
    if any(is_placeholder(store.published_marker(name)) for name in stale):
        leave_placeholders(store, outputs, "a name of this image failed (ignored: it matches ignoreErrors)")
        return 0
    return _done(store, config_digest, names, outputs)


def _image(store: Store, name: str, config_digest: str) -> ResolvedImage:
    image = load_image(store, name)
    if image is None or image.config_digest != config_digest:
        raise UnpackedError(f"{name}: its state does not match {store.flat_names(config_digest)}; run the sync again")
    return image


def _done(store: Store, config_digest: str, names: list[str], outputs: list[Path]) -> int:
    """The job's output: which names it stands for (for whoever reads the work directory)."""
    body = json.dumps({"config_digest": config_digest, "names": names}, indent=1).encode()
    for path in outputs:
        write_atomic(path, body)
    return 0
