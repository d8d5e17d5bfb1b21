"""Command-line entry points called by the workflow's rules (and usable by operators).

    unpacked resolve        expand tags and resolve manifests (what the Snakefile does at parse time)
    unpacked fetch-blob     download one verified blob into the store
    unpacked extract-layer  extract one layer blob
    unpacked flatten        build one flat image from its extracted layers
    unpacked publish        flatten (unless built), link the image's names to it and write their metadata
    unpacked summary        print the last run's failures; exit 1 unless all are ignorable
    unpacked gc             remove unreferenced flats, layers and blobs; --prune unpublishes dropped names
    unpacked verify         compare flat images (and layers) with fresh builds from their records; --repair
    unpacked sync-one       sync some tags of the recipe only (what the push webhook runs)
    unpacked serve-hook     receive registry notifications and push webhooks; sync the pushed tags
    unpacked watch          run the sync every N seconds (jitter, backoff after failures), until SIGTERM
    unpacked publish-finish commit the hook publisher's last batch (run at the end of every sync)
    unpacked status         one row per name: digests, size, sync times, state, error (--running: jobs now)
    unpacked history        the last runs: start, end, who, what changed with digests, what failed
    unpacked record-run     end of a run: its history line, the index page, report files, metrics
    unpacked views          write the index page, report files and metrics now
    unpacked slurm-status   a Slurm job's state, for the profiles/slurm-sbatch status command
    unpacked slurm-submit   sbatch a Snakemake job script to run as `unpacked cluster-job` (slurm-sbatch)
    unpacked cluster-job    run the job of a Snakemake job script without starting Snakemake

Errors are caught here, once, and printed as one line naming the image and what to do. A job
command exits 1 when it fails, or 0 after leaving placeholder outputs when its failure only touches
`ignoreErrors` images (see placeholders.py): that is the whole of how a run's exit status is decided.
This module only parses arguments and prints: the work is done by `jobs` and `sync` (the job
commands), `gc`, `verify` and `failures`, imported by each command when it runs, so that a job's
process loads only what it needs.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UnpackedError
from .store import Store, store_for

if TYPE_CHECKING:
    from .state import ResolvedImage

log = logging.getLogger("unpacked")
# The commands the workflow's jobs run: jobs.run_job records their failures and sets their exit code.
JOB_COMMANDS = ("fetch-blob", "extract-layer", "flatten", "publish")


def _settings(path: Path) -> dict[str, Any]:
    try:
        settings: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        msg = (
            f"{path}: no saved settings; run the workflow (snakemake) first (a job that sees this on a "
            "cluster node was given other settings than the run that scheduled it: was the config edited?)"
        )
        raise UnpackedError(msg) from None
    return settings


def _image(store: Store, name: str) -> ResolvedImage:
    from .state import load_image

    image = load_image(store, name)
    if image is None:
        raise UnpackedError(f"{name}: no resolved state; run the workflow (not a single job) first")
    return image


def cmd_fetch_blob(args: argparse.Namespace) -> None:
    from .auth import RealmCache
    from .source import RegistrySource
    from .sync import fetch_blob

    settings = _settings(args.settings)
    store = store_for(settings)
    realms = RealmCache()
    realms.load(store.realms)  # fetch the token first instead of collecting a 401
    fetch_blob(store, RegistrySource(settings, realms), _image(store, args.image), args.digest)


def cmd_extract_layer(args: argparse.Namespace) -> None:
    from .sync import extract_layer_blob

    store = store_for(_settings(args.settings))
    extract_layer_blob(store, args.digest, args.diff_id, f"layer {args.digest}")


def cmd_flatten(args: argparse.Namespace) -> None:
    store = store_for(_settings(args.settings))
    flatten_for(store, _image(store, args.image))


def flatten_for(store: Store, image: ResolvedImage) -> None:
    from .sync import build_flat, layer_by_digest

    build_flat(store, image, layer_by_digest)
    for digest in image.layer_digests:  # extracted here or by another tag's job: no longer failed
        store.failure_record("extract-layer", digest).unlink(missing_ok=True)


def cmd_publish(args: argparse.Namespace) -> int:
    """The publish job of one flat image, or of a batch of small ones: each of their names is a unit
    of work of its own."""
    from .flat_job import publish_batch, publish_flat
    from .publish import make_publisher
    from .sync import publish_image

    settings = _settings(args.settings)
    store = store_for(settings)
    # Made by the first name's publish step: a failure there is that name's, recorded as such.
    publisher = functools.cache(lambda: make_publisher(settings, store))

    def publish(image: ResolvedImage) -> None:
        publish_image(store, publisher(), image)

    if args.batch:
        return publish_batch(settings, store, args.batch, args.outputs, flatten_for, publish)
    return publish_flat(settings, store, args.flat, (args.inputs, args.outputs), args.only, flatten_for, publish)


def cmd_resolve(args: argparse.Namespace) -> None:
    from .workflow import prepare

    resolution = prepare(args.config, main_process=True).resolution
    print(f"{len(resolution.images)} image(s) resolved, {len(resolution.failures)} failure(s)")


def cmd_summary(args: argparse.Namespace) -> None:
    from .failures import collect, notices_text, summary_text
    from .recipe import load_recipe
    from .state import load_resolution

    settings = _settings(args.settings)
    store = store_for(settings)
    found = collect(store, load_recipe(Path(settings["recipe"])), args.resolution_only)
    if not args.resolution_only:
        notes = notices_text(load_resolution(store).notices)
        if notes:
            print(notes, file=sys.stderr)
    if not found:
        print("unpacked: all images in sync")
        return
    print(summary_text(found), file=sys.stderr)
    if not all(failure.ignored for failure in found):
        raise SystemExit(1)


def cmd_status(args: argparse.Namespace) -> None:
    from .state import load_resolution
    from .status import parse_age, render, select, table

    store = store_for(_settings(args.settings))
    if args.running:
        _print_running(store)
        return
    try:
        stale = parse_age(args.stale) if args.stale else None
    except ValueError as err:
        raise UnpackedError(f"--stale: {err}") from None
    frame = select(table(store, load_resolution(store)), args.names, args.failed, stale)
    sys.stdout.write(render(frame, args.format))


def _print_running(store: Store) -> None:
    from .running import running_jobs

    jobs = running_jobs(store)
    if not jobs:
        print("no jobs running")
    for job in jobs:
        what = job.image or job.key
        mark = "  (stale: its process is gone)" if job.stale else ""
        print(f"{job.started}  {job.action:14} {what}  pid {job.pid} on {job.host}{mark}")


def cmd_history(args: argparse.Namespace) -> None:
    from .history import read, text

    lines = read(store_for(_settings(args.settings)), last=args.last)
    if args.json:
        sys.stdout.write("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    else:
        sys.stdout.write(text(lines))


def cmd_record_run(args: argparse.Namespace) -> None:
    from .history import close_journal
    from .publish import make_publisher
    from .running import prune_stale
    from .state import load_resolution
    from .views import write_all

    settings = _settings(args.settings)
    store = store_for(settings)
    resolution = load_resolution(store)
    line = close_journal(store, resolution, None if args.status == "no-jobs" else args.status)
    prune_stale(store)  # markers of this host's jobs a kill -9 left behind
    # The plots cost seconds: a run that changed nothing leaves the last ones (`unpacked views` redraws).
    write_all(store, resolution, make_publisher(settings, store), report=args.status in ("ok", "failed"))
    if line is not None:
        counts = ", ".join(f"{key} {value}" for key, value in line["counts"].items())
        log.info("run recorded in %s: %s", store.history_dir, counts)


def cmd_views(args: argparse.Namespace) -> None:
    from .publish import make_publisher
    from .state import load_resolution
    from .views import write_all

    settings = _settings(args.settings)
    store = store_for(settings)
    # --report-only: what the report_views rule makes, which may run beside publish jobs (-F): a
    # transaction of its own for the index page would collide with theirs.
    publisher = None if args.report_only else make_publisher(settings, store)
    if not write_all(store, load_resolution(store), publisher, always_index=True):
        raise SystemExit(1)


def cmd_gc(args: argparse.Namespace) -> None:
    from .gc import collect_garbage, summary
    from .history import now_utc, record_gc
    from .publish import make_publisher
    from .recipe import load_recipe
    from .workflow import hold_run_lock

    settings = _settings(args.settings)
    store = store_for(settings)
    hold_run_lock(store)  # never while a sync runs in this work directory
    recipe = load_recipe(Path(settings["recipe"])) if args.prune else None
    publisher = make_publisher(settings, store)
    started = now_utc()
    if not args.dry_run:
        publisher.recover()  # a transaction a crash left open would refuse gc's own
    plan = collect_garbage(
        store, publisher, args.grace_days, recipe, args.max_fraction, args.force, dry_run=args.dry_run
    )
    for line in plan.lines():
        print(("would remove " if args.dry_run else "removed ") + line)
    print(f"unpacked gc: {summary(plan)}{' (dry run)' if args.dry_run else ''}")
    record_gc(store, started, {key: len(paths) for key, paths in vars(plan).items()}, args.dry_run)


def cmd_verify(args: argparse.Namespace) -> None:
    from .publish import make_publisher
    from .state import load_resolution
    from .verify import verify_images
    from .workflow import hold_run_lock

    settings = _settings(args.settings)
    store = store_for(settings)
    hold_run_lock(store)  # a repair must not race a sync
    if args.repair:
        make_publisher(settings, store).recover()  # a transaction a crash left open would refuse the repair's
    globs = args.names or ["*"]
    images = load_resolution(store).images
    chosen = [image for name, image in sorted(images.items()) if any(fnmatch.fnmatchcase(name, g) for g in globs)]
    report = verify_images(store, chosen, make_publisher(settings, store), args.layers, args.repair)
    for finding in report.damaged:
        print(finding.text(), file=sys.stderr)
    checked = f"{report.flats} flat image(s)" + (f" and {report.layers} layer(s)" if args.layers else "")
    repaired = len(report.damaged) - len(report.unrepaired)
    print(f"unpacked verify: checked {checked}: {len(report.damaged)} damaged, {repaired} repaired")
    if report.unrepaired:
        print("run `unpacked verify --repair` to replace the damaged trees with fresh builds", file=sys.stderr)
        raise SystemExit(1)


def _sync_command(words: list[str]) -> list[str]:
    """The sync command given after `--` (argparse keeps the `--`), or Snakemake on every core."""
    from .hook import DEFAULT_SYNC_COMMAND

    command = words[1:] if words[:1] == ["--"] else words
    return command or list(DEFAULT_SYNC_COMMAND)


def cmd_sync_one(args: argparse.Namespace) -> None:
    import subprocess

    from .hook import DEFAULT_SYNC_COMMAND, only_command
    from .reference import parse_reference

    words: list[str] = args.words
    cut = words.index("--") if "--" in words else len(words)
    if cut == 0:
        raise UnpackedError("sync-one: name at least one tag, e.g. unpacked sync-one registry.example/repo:1.0")
    refs = [parse_reference(text) for text in words[:cut]]  # refused here, before Snakemake starts
    command = only_command([*DEFAULT_SYNC_COMMAND, *words[cut + 1 :]], [ref.published_name for ref in refs])
    log.info("sync-one: %s", " ".join(command))
    raise SystemExit(subprocess.run(command, check=False).returncode)


def cmd_publish_finish(args: argparse.Namespace) -> None:
    from .publish import make_publisher

    settings = _settings(args.settings)
    make_publisher(settings, store_for(settings)).finish_run()


def cmd_serve_hook(args: argparse.Namespace) -> None:
    from .config import load_config_file, validate_config
    from .hook import serve

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise UnpackedError(f"serve-hook: --listen {args.listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    try:
        secret = args.secret_file.read_text().strip()
    except OSError as err:
        raise UnpackedError(f"serve-hook: cannot read the secret file {args.secret_file}: {err.strerror}") from None
    recipe = Path(validate_config(load_config_file(args.config))["recipe"])
    serve((host, int(port)), secret, recipe, _sync_command(args.sync_command), args.registry)


def cmd_watch(args: argparse.Namespace) -> None:
    from .watch import WatchSettings, watch

    if args.interval <= 0 or not 0 <= args.jitter < 1 or args.runs < 0:
        raise UnpackedError("watch: --interval must be positive, --jitter in [0, 1), --runs at least 0")
    settings = WatchSettings(args.interval, args.jitter, args.max_backoff, args.runs)
    raise SystemExit(watch(_sync_command(args.sync_command), settings))


def cmd_slurm_status(args: argparse.Namespace) -> None:
    from .slurm_status import job_state

    print(job_state(args.job_id))


def cmd_cluster_job(args: argparse.Namespace) -> None:
    from .direct_job import run

    raise SystemExit(run(args.script))


def _run_job(args: argparse.Namespace) -> int:
    """Run one of the workflow's job commands; return its exit code."""
    from .jobs import Job, run_job

    if args.command == "publish":  # each name of the flat image runs as a unit of its own
        code: int = args.func(args)
        return code
    settings = _settings(args.settings)
    key = args.image if args.command == "flatten" else args.digest
    job = Job(args.command, key, getattr(args, "image", None), args.inputs, args.outputs)
    return run_job(settings, store_for(settings), job, [(args.command, lambda: args.func(args))])


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
        if name in JOB_COMMANDS:  # what Snakemake gave the job: placeholders are looked for there
            command.add_argument("--inputs", type=Path, nargs="*", default=[], help="the job's input files")
            command.add_argument("--outputs", type=Path, nargs="*", default=[], help="the job's output files")
        return command

    fetch = job("fetch-blob", cmd_fetch_blob, "download one verified blob")
    fetch.add_argument("--image", required=True)
    fetch.add_argument("--digest", required=True)
    extract = job("extract-layer", cmd_extract_layer, "extract one layer blob")
    extract.add_argument("--digest", required=True)
    extract.add_argument("--diff-id", required=True)
    flatten = job("flatten", cmd_flatten, "build one flat image")
    flatten.add_argument("--image", required=True)
    publish = job("publish", cmd_publish, "build one flat image (unless built) and publish its names")
    which = publish.add_mutually_exclusive_group(required=True)
    which.add_argument("--flat", help="the image's config digest, sha256:<hex>")
    which.add_argument("--batch", help="the digest of a batch of small images (state/batches/<hex>.json)")
    publish.add_argument("--only", nargs="+", metavar="NAME", help="publish these names of it only (sync-one)")
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
    one = sub.add_parser("sync-one", help="sync these tags only (each asked for by the recipe), nothing else")
    one.add_argument(
        "words",
        nargs=argparse.REMAINDER,
        metavar="REF [REF ...] [-- SNAKEMAKE_OPTION ...]",
        help="registry/repository:tag (a scheme may precede it); after --, more Snakemake options",
    )
    one.set_defaults(func=cmd_sync_one)
    hook = sub.add_parser("serve-hook", help="sync pushed tags on registry notifications and push webhooks")
    hook.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to listen on (default 127.0.0.1:8080)")
    hook.add_argument("--secret-file", type=Path, required=True, help="file holding the shared secret (16+ chars)")
    hook.add_argument("--config", type=Path, default=Path("config/config.yaml"), help="where the recipe is named")
    hook.add_argument("--registry", help="registry name for events that do not name one (or to override it)")
    hook.add_argument(
        "sync_command", nargs=argparse.REMAINDER, help="after --: the sync command (default: snakemake --cores all)"
    )
    hook.set_defaults(func=cmd_serve_hook)
    watcher = sub.add_parser("watch", help="run the sync every --interval seconds, one run at a time, until stopped")
    watcher.add_argument("--interval", type=float, default=300, help="seconds between runs (default 300)")
    watcher.add_argument("--jitter", type=float, default=0.1, help="random fraction of the interval, either way")
    watcher.add_argument("--max-backoff", type=float, default=3600, help="longest wait after failed runs (s)")
    watcher.add_argument("--runs", type=int, default=0, help="stop after this many runs (default: never)")
    watcher.add_argument(
        "sync_command", nargs=argparse.REMAINDER, help="after --: the sync command (default: snakemake --cores all)"
    )
    watcher.set_defaults(func=cmd_watch)
    status = sub.add_parser("slurm-status", help="a Slurm job's state for cluster-generic (running/success/failed)")
    status.add_argument("job_id", help="the job id as `sbatch --parsable` printed it")
    status.set_defaults(func=cmd_slurm_status)
    direct = sub.add_parser("cluster-job", help="run a cluster job script's job without starting Snakemake")
    direct.add_argument("script", type=Path, help="the job script Snakemake wrote (its properties line)")
    direct.set_defaults(func=cmd_cluster_job)
    # Listed for --help; main() hands its words to sbatch before parsing.
    sub.add_parser("slurm-submit", help="SBATCH_OPTION ... JOBSCRIPT: sbatch a job script as `unpacked cluster-job`")
    show = job("status", cmd_status, "one row per name: digests, size, sync times, state, last error")
    show.add_argument("names", nargs="*", help="published names or globs (default: all)")
    show.add_argument("--failed", action="store_true", help="only names whose last run failed")
    show.add_argument("--stale", metavar="AGE", help="only names not synced for AGE (90, 30m, 12h, 2d, 1w)")
    show.add_argument("--format", choices=["table", "csv", "json", "markdown", "html"], default="table")
    show.add_argument("--running", action="store_true", help="the jobs running now, and for which image")
    past = job("history", cmd_history, "the last runs: when, who, what changed, what failed")
    past.add_argument("-n", "--last", type=int, default=10, help="how many runs (default 10)")
    past.add_argument("--json", action="store_true", help="the JSON lines themselves")
    record = job("record-run", cmd_record_run, "close the run's history line, write index page, report, metrics")
    record.add_argument(
        "--status",
        choices=["ok", "failed", "no-jobs", "not-run", "interrupted"],
        required=True,
        help="no-jobs: nothing to do; not-run: stopped before any job; interrupted: no end-of-run hook ran",
    )
    views = job("views", cmd_views, "write the index page, the report's files and the metrics now")
    views.add_argument("--report-only", action="store_true", help="the report's files and the metrics, not the page")
    job("publish-finish", cmd_publish_finish, "commit the publisher's open batch (the end of a run does)")
    resolve = sub.add_parser("resolve", help="resolve tags and manifests")
    resolve.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    resolve.set_defaults(func=cmd_resolve)
    return top


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else argv
    # slurm-submit passes sbatch's options on as they are (argparse would take them for its own).
    if [word for word in words[:2] if word not in ("-v", "--verbose")][:1] == ["slurm-submit"]:
        from .direct_job import submit

        submit(words[words.index("slurm-submit") + 1 :])
    args = parser().parse_args(words)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command in JOB_COMMANDS:
            raise SystemExit(_run_job(args))
        args.func(args)
    except UnpackedError as err:
        log.error("%s", err)
        raise SystemExit(1) from None
    except Exception as err:  # an unexpected failure still names the command
        log.error("%s: %s: %s", args.command, type(err).__name__, err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
