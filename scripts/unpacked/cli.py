"""Command-line entry points called by the workflow's rules (and usable by operators).

    unpacked resolve        expand tags and resolve manifests (what the Snakefile does at parse time)
    unpacked fetch-blob     download one verified blob into the store
    unpacked extract-layer  extract one layer blob
    unpacked flatten        build one flat image from its extracted layers
    unpacked publish        link a published name to its flat image and write its metadata
    unpacked summary        print this run's failures; exit 1 unless all are ignorable
    unpacked gc             remove unreferenced flats, layers and blobs; --prune unpublishes dropped names
    unpacked verify         compare flat images (and layers) with fresh builds from their records; --repair

Errors are caught here, once, and printed as one line naming the image and what to do.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .errors import UnpackedError
from .fsutil import naming_failures
from .store import Store

log = logging.getLogger("unpacked")
# The commands the workflow's jobs run: their failures are recorded for the end-of-run summary.
JOB_COMMANDS = ("fetch-blob", "extract-layer", "flatten", "publish")


def _settings(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        msg = (
            f"{path}: no saved settings; run the workflow (snakemake) first (a job that sees this on a "
            "cluster node was given other settings than the run that scheduled it: was the config edited?)"
        )
        raise UnpackedError(msg) from None


def _store(settings: dict[str, Any]) -> Store:
    from .workflow import store_for

    return store_for(settings)


def _state(store: Store, name: str) -> dict[str, Any]:
    try:
        return json.loads(store.state(name).read_text())
    except FileNotFoundError:
        raise UnpackedError(f"{name}: no resolved state; run the workflow (not a single job) first") from None


def cmd_fetch_blob(args: argparse.Namespace) -> None:
    from .mirrors import make_client
    from .reference import parse_reference
    from .transport import load_realms

    settings = _settings(args.settings)
    store = _store(settings)
    state = _state(store, args.image)
    dest = store.blob(args.digest)
    if dest.exists():
        return
    load_realms(store.realms)  # fetch the token first instead of collecting a 401
    client = make_client(parse_reference(state["reference"]), settings)
    declared = next((layer["size"] for layer in state["layers"] if layer["digest"] == args.digest), None)
    with naming_failures(dest):
        client.download_blob(state["repository"], args.digest, dest, declared)
    log.info("%s: fetched blob %s from %s", state["reference"], args.digest, state["registry"])


def cmd_extract_layer(args: argparse.Namespace) -> None:
    from .extract import extract_layer

    store = _store(_settings(args.settings))
    what = f"layer {args.digest}"
    with naming_failures(store.layer(args.digest)):
        extract_layer(store.blob(args.digest), args.diff_id, store.layer(args.digest), what)


def cmd_flatten(args: argparse.Namespace) -> None:
    from .flatten import flatten_image
    from .fsutil import write_atomic

    store = _store(_settings(args.settings))
    state = _state(store, args.image)
    config = json.loads(store.blob(state["config_digest"]).read_text())
    layers = [store.layer(layer["digest"]) for layer in state["layers"]]
    diff_ids = [layer["diff_id"] for layer in state["layers"]]
    dest = store.built_flat(state["config_digest"])
    if dest.is_dir():
        # Content-addressed and only ever created by a rename: an existing tree is complete and may
        # be in use (published), so it is kept rather than rebuilt and swapped under its users.
        log.info("%s: flat image %s already built; kept", state["reference"], dest)
        marker = {"config_digest": state["config_digest"], "kept": True}
    else:
        with naming_failures(dest):
            files = flatten_image(layers, diff_ids, config, dest, state["reference"])
        marker = {"config_digest": state["config_digest"], "files": files}
    write_atomic(Path(args.marker), json.dumps(marker, indent=1).encode())


def cmd_publish(args: argparse.Namespace) -> None:
    from .fsutil import write_atomic
    from .publish import make_publisher

    settings = _settings(args.settings)
    store = _store(settings)
    state = _state(store, args.image)
    publisher = make_publisher(settings, store)
    with naming_failures(store.link(args.image)), publisher.transaction():
        publisher.publish(state, store.built_flat(state["config_digest"]))
    marker = {"name": state["name"], "config_digest": state["config_digest"], "source_digest": state["source_digest"]}
    write_atomic(Path(args.marker), json.dumps(marker, indent=1).encode())


def cmd_resolve(args: argparse.Namespace) -> None:
    from .workflow import prepare

    resolution = prepare(args.config, main_process=True).resolution
    print(f"{len(resolution.images)} image(s) resolved, {len(resolution.failures)} failure(s)")


def cmd_summary(args: argparse.Namespace) -> None:
    from .failures import collect, notices_text, summary_text
    from .recipe import load_recipe
    from .resolve import load_resolution

    settings = _settings(args.settings)
    store = _store(settings)
    found = collect(store, load_recipe(Path(settings["recipe"])), args.resolution_only)
    if not args.resolution_only:
        notes = notices_text(load_resolution(store).notices)
        if notes:
            print(notes, file=sys.stderr)
    if not found:
        print("unpacked: all images in sync")
        return
    print(summary_text(found), file=sys.stderr)
    if not all(f["ignored"] for f in found):
        raise SystemExit(1)


def cmd_gc(args: argparse.Namespace) -> None:
    from . import gc
    from .publish import make_publisher
    from .recipe import load_recipe
    from .workflow import hold_run_lock

    settings = _settings(args.settings)
    store = _store(settings)
    hold_run_lock(store)  # never while a sync runs in this work directory
    # Links are counted before pruning: flats that only pruned links used go at the next collection.
    plan = gc.plan_collect(store, args.grace_days)
    if args.prune:
        plan.links = gc.plan_prune(store, load_recipe(Path(settings["recipe"]))).links
        gc.guard(plan, store, args.max_fraction, args.force)
    for line in plan.lines():
        print(("would remove " if args.dry_run else "removing ") + line)
    if not args.dry_run:
        gc.execute(plan, store, make_publisher(settings, store))
    print(f"unpacked gc: {gc.summary(plan)}{' (dry run)' if args.dry_run else ''}")


def cmd_verify(args: argparse.Namespace) -> None:
    import fnmatch

    from .publish import make_publisher
    from .resolve import load_resolution
    from .verify import verify_flat, verify_layer
    from .workflow import hold_run_lock

    settings = _settings(args.settings)
    store = _store(settings)
    hold_run_lock(store)  # a repair must not race a sync
    images = load_resolution(store).images
    globs = args.names or ["*"]
    chosen = [state for name, state in sorted(images.items()) if any(fnmatch.fnmatchcase(name, g) for g in globs)]
    publisher = make_publisher(settings, store)
    findings = []
    if args.layers:
        layers = {layer["digest"]: layer for state in chosen for layer in state["layers"]}
        findings += [verify_layer(store, layer, args.repair) for layer in layers.values()]
    flats = {state["config_digest"]: state for state in chosen}
    findings += [verify_flat(store, state, publisher, args.repair) for state in flats.values()]
    damaged = [f for f in findings if f is not None]
    for finding in damaged:
        print(finding.text(), file=sys.stderr)
    checked = f"{len(flats)} flat image(s)" + (f" and {len(layers)} layer(s)" if args.layers else "")
    print(f"unpacked verify: checked {checked}: {len(damaged)} damaged, {sum(f.repaired for f in damaged)} repaired")
    if any(not f.repaired for f in damaged):
        print("run `unpacked verify --repair` to replace the damaged trees with fresh builds", file=sys.stderr)
        raise SystemExit(1)


def _images_affected(args: argparse.Namespace, store: Store) -> list[str]:
    """Every resolved image a failed job leaves out of date, not only the one it ran for."""
    from .resolve import load_resolution

    if args.command == "publish":
        return [args.image]
    images = load_resolution(store).images
    if args.command == "flatten":
        config = images[args.image]["config_digest"] if args.image in images else None
        return [name for name, state in images.items() if state["config_digest"] == config] or [args.image]
    return [
        name
        for name, state in images.items()
        if args.digest == state["config_digest"] or any(layer["digest"] == args.digest for layer in state["layers"])
    ] or [getattr(args, "image", None) or args.digest]


def _failure_key(args: argparse.Namespace) -> str:
    return getattr(args, "image", None) if args.command in ("flatten", "publish") else args.digest


def _record_failure(args: argparse.Namespace, err: Exception) -> None:
    """Leave a failure record for the end-of-run summary (best effort)."""
    from .failures import record_job_failure

    try:
        store = _store(_settings(args.settings))
        record_job_failure(store, args.command, _failure_key(args), str(err), _images_affected(args, store))
    except Exception as inner:  # the original error matters more than this record
        log.warning("could not record the failure: %s", inner)


def _clear_failure(args: argparse.Namespace) -> None:
    """A job that succeeds takes back the failure an earlier (e.g. offline) attempt recorded."""
    from .failures import clear_job_failure

    clear_job_failure(_store(_settings(args.settings)), args.command, _failure_key(args))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="unpacked", description=__doc__.split("\n\n")[0])
    top.add_argument("-v", "--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True)

    def job(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.add_argument(
            "--settings", type=Path, default=Path("work/state/settings.json"), help="the run's saved settings"
        )
        command.set_defaults(func=func)
        return command

    fetch = job("fetch-blob", cmd_fetch_blob, "download one verified blob")
    fetch.add_argument("--image", required=True)
    fetch.add_argument("--digest", required=True)
    extract = job("extract-layer", cmd_extract_layer, "extract one layer blob")
    extract.add_argument("--digest", required=True)
    extract.add_argument("--diff-id", required=True)
    flatten = job("flatten", cmd_flatten, "build one flat image")
    flatten.add_argument("--image", required=True)
    flatten.add_argument("--marker", required=True)
    publish = job("publish", cmd_publish, "publish one image")
    publish.add_argument("--image", required=True)
    publish.add_argument("--marker", required=True)
    summary = job("summary", cmd_summary, "print this run's failures")
    summary.add_argument("--resolution-only", action="store_true", help="only entries that failed to resolve")
    collect = job("gc", cmd_gc, "remove unreferenced flat images, layers and blobs (and pruned names)")
    collect.add_argument("--grace-days", type=float, default=7, help="keep anything younger than this")
    collect.add_argument("--prune", action="store_true", help="also unpublish names no recipe entry asks for")
    collect.add_argument("--max-fraction", type=float, default=0.2, help="prune guard: most links removed at once")
    collect.add_argument("--force", action="store_true", help="prune past the guard")
    collect.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    check = job("verify", cmd_verify, "compare flat images (and layers) with fresh builds from their records")
    check.add_argument("names", nargs="*", help="published names or globs (default: every resolved image)")
    check.add_argument("--layers", action="store_true", help="also re-extract every layer from its blob")
    check.add_argument("--repair", action="store_true", help="replace damaged trees with the fresh builds")
    resolve = sub.add_parser("resolve", help="resolve tags and manifests")
    resolve.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    resolve.set_defaults(func=cmd_resolve)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
        if args.command in JOB_COMMANDS:
            _clear_failure(args)
    except UnpackedError as err:
        log.error("%s", err)
        if args.command in JOB_COMMANDS:
            _record_failure(args, err)
        raise SystemExit(1) from None
    except Exception as err:  # an unexpected failure still names the job and is recorded
        log.error("%s: %s: %s", args.command, type(err).__name__, err)
        if args.command in JOB_COMMANDS:
            _record_failure(args, err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
