"""The publish job of one flat image: build it unless it is built, then publish each of its names
that is not published as it resolves now.

One job per flat image, not per name: thousands of tags of one image are one process, and one
ready job for Snakemake's scheduler (whose every pass looks at every ready job). Each name is still
its own unit of work (`run_job`): its own running marker, stage times and failure record, as when
a job published one name, so one name that cannot be published does not stop the others.

The job of a batch of small flat images (`publish_batch`) runs the job of each of them in turn.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from .errors import UnpackedError
from .jobs import Job, Steps, run_job
from .placeholders import failed_inputs, leave_placeholders
from .state import (
    ResolvedImage,
    is_published,
    load_batch,
    load_flat_names,
    load_image,
    save_batch_published,
    save_flat_published,
)
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
    job_files: tuple[list[Path], list[Path]],
    only: list[str] | None,
    flatten: Callable[[Store, ResolvedImage], None],
    publish: Callable[[ResolvedImage], None],
) -> int:
    """Publish the names of the flat image `config_digest` (with `only`: those of them only); return
    the job's exit code.

    `job_files` are the job's inputs and outputs. `flatten` builds the flat image from an image of
    it, `publish` links one name. The job's output is written only once every name is published: a
    name that failed leaves it missing (or a placeholder, if its failure is ignored), and the next
    run publishes that name alone (the check before the DAG finds the others published).
    """
    inputs, outputs = job_files
    sources = load_flat_names(store, config_digest)  # the job's input, written before the DAG
    names = sorted(sources)
    wanted = names if only is None else [name for name in names if name in only]
    stale = [name for name in wanted if not is_published(store, name, sources[name], config_digest)]
    if not stale:
        log.info("%s: all %d name(s) already published as they resolve now", config_digest, len(wanted))
        return _done(store, config_digest, names, outputs)
    failed = failed_inputs(inputs)
    if failed:
        return _inputs_failed(settings, store, stale, failed[0], outputs)
    # The image whose layers the workflow gave this job (its first name's) builds the flat image.
    step = FlattenOnce(lambda: flatten(store, _image(store, names[0], config_digest)))
    worst = 0
    for name in stale:
        job = Job("publish", name, name, inputs, [store.published_marker(name)])
        steps: Steps = [("flatten", step), ("publish", partial(_publish_name, store, name, config_digest, publish))]
        worst = max(worst, run_job(settings, store, job, steps))
        if step.failed:
            # Recorded once, for every name of the flat image (`failures.images_affected`).
            log.error("%s: the flat image was not built; none of its %d name(s) published", config_digest, len(names))
            break
    published = [name for name in stale if is_published(store, name, sources[name], config_digest)]
    log.info(
        "%s: %d name(s) published, %d already were, %d not",
        config_digest,
        len(published),
        len(wanted) - len(stale),
        len(stale) - len(published),
    )
    if worst:
        return worst
    if len(published) == len(stale):
        return _done(store, config_digest, names, outputs)
    # Every failure only touched images that match ignoreErrors: the run goes on, the next one retries.
    leave_placeholders(store, outputs, "a name of this image failed (ignored: it matches ignoreErrors)")
    return 0


def publish_batch(
    settings: dict[str, Any],
    store: Store,
    batch_digest: str,
    outputs: list[Path],
    flatten: Callable[[Store, ResolvedImage], None],
    publish: Callable[[ResolvedImage], None],
) -> int:
    """Publish each flat image of a batch as its own job would (`publish_flat`, with its own inputs
    and output), one after the other; return the job's exit code.

    One that fails stops no other. The batch's output is written once every one of them wrote its
    own (published, or a placeholder for an ignored failure); otherwise the next run forms new jobs
    for what is left.
    """
    flats = load_batch(store, batch_digest)
    worst = 0
    for number, (config_digest, inputs) in enumerate(flats.items(), start=1):
        job_files = ([Path(path) for path in inputs], [store.flat_published(config_digest)])
        try:
            with _also_logged_to(store.log("publish_image", config_digest)):
                log.info("%s: image %d of %d of publish_batch %s", config_digest, number, len(flats), batch_digest)
                code = _publish_one(settings, store, config_digest, job_files, flatten, publish)
        except OSError as err:  # its log cannot be opened (a full disk): the next image may still fit
            log.error("%s: not published: cannot write its log: %s", config_digest, err)
            code = 1
        worst = max(worst, code)
    if worst:
        return worst
    for path in outputs:
        save_batch_published(store, batch_digest, list(flats), path)
    return 0


def _publish_one(
    settings: dict[str, Any],
    store: Store,
    config_digest: str,
    job_files: tuple[list[Path], list[Path]],
    flatten: Callable[[Store, ResolvedImage], None],
    publish: Callable[[ResolvedImage], None],
) -> int:
    """`publish_flat` for one image of a batch; an error outside any name's bookkeeping (damaged
    state) fails this image only."""
    try:
        return publish_flat(settings, store, config_digest, job_files, None, flatten, publish)
    except Exception as err:
        log.error("%s: not published: %s: %s", config_digest, type(err).__name__, err)
        return 1


@contextlib.contextmanager
def _also_logged_to(path: Path) -> Iterator[None]:
    """What is logged meanwhile also goes to `path` (rewritten): the log of a flat image in a batch
    is where its own job would have written it, logs/publish_image/<hex>.log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(next((other.formatter for other in root.handlers if other.formatter), None))  # the job's
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _publish_name(store: Store, name: str, config_digest: str, publish: Callable[[ResolvedImage], None]) -> None:
    publish(_image(store, name, config_digest))


def _image(store: Store, name: str, config_digest: str) -> ResolvedImage:
    image = load_image(store, name)
    if image is None or image.config_digest != config_digest:
        raise UnpackedError(f"{name}: its state does not match {store.flat_names(config_digest)}; run the sync again")
    return image


def _inputs_failed(settings: dict[str, Any], store: Store, stale: list[str], failed: Path, outputs: list[Path]) -> int:
    """An input of the job is a placeholder: an ignored failure upstream, nothing to build from.

    It was ignored for the image whose layers the job was given; a name of this flat image that
    does not match ignoreErrors (the same image from another registry) fails, and is reported."""
    # Imported here: only this rare case needs the recipe (and its YAML loader) and the resolution.
    from .failures import all_ignored, record_job_failure
    from .recipe import load_recipe
    from .state import load_resolution

    reason = f"input {failed} failed"
    resolution, recipe = load_resolution(store), load_recipe(Path(settings["recipe"]))
    counted = [name for name in stale if not all_ignored(resolution, recipe, [name])]
    for name in counted:
        error = f"{reason}: a failure ignored for another image of the same flat image; see that image's error"
        record_job_failure(store, "publish", name, error, [name])
        log.error("%s: not published: %s", name, error)
    if counted:
        return 1
    log.warning("publish: not run, its input %s stands for an ignored failure", failed)
    leave_placeholders(store, [*[store.published_marker(name) for name in stale], *outputs], reason)
    return 0


def _done(store: Store, config_digest: str, names: list[str], outputs: list[Path]) -> int:
    """The job's output: the names it stands for."""
    for path in outputs:
        save_flat_published(store, config_digest, names, path)
    return 0
