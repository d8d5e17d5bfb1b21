"""What the end of every run writes for people: the index page in the root, the report's files, and a
Prometheus text file.

- `<root>/.metadata/index.html` and `index.json`: every name, what it points to, when it was last
  synced and last changed, its state and error, and when the tree was last synced. On CernVM-FS this
  answers "is my image there, and since when?" without any log. Each is written whole under another
  name and renamed: a reader (or a kill -9) sees the old page or the new one, never part of one.
  Through a transaction publisher it is written in a transaction of its own, and only when what it
  says about an image changed or it is older than INDEX_REFRESH_SECONDS (a transaction is expensive
  there: a run that changed nothing opens none).
- `<work>/report/`: the status table (HTML, CSV) and four SVG plots, for `snakemake --report`
  (rules/report.smk marks them). Plots are matplotlib SVG: static, no JavaScript, no network, one
  dependency with wheels everywhere; the Vega-Lite route (altair + vl-convert) needs a bundled
  JavaScript engine to make a static picture.
- `<work>/unpacked.prom`: images by state, last run and last successful run, failures, bytes, for
  node_exporter's textfile collector (link or copy it into the collector's directory).
"""

from __future__ import annotations

import calendar
import html
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .history import now_utc, read
from .safefs import write_atomic
from .state import Resolution
from .status import counts, render, table
from .store import Store

if TYPE_CHECKING:
    import pandas as pd

    from .publish import DirectoryPublisher

log = logging.getLogger(__name__)

INDEX_REFRESH_SECONDS = 3600
# Past this many names the per-image plots show the extremes only (a plot of 5,000 bars says nothing).
PLOTTED_NAMES = 60
# Room for the names left of the bars, and for the run times below them.
NAME_MARGINS = {"left": 0.42, "right": 0.97}
RUN_MARGINS = {"left": 0.08, "right": 0.97, "top": 0.92, "bottom": 0.3}


Runs = list[dict[str, Any]]
# How far back the views look in the history: the last run that succeeded, the plots' runs.
RUNS_READ = 500
RUNS_PLOTTED = 100


def sync_runs(store: Store) -> Runs:
    """The history's last sync runs, oldest first: read once for all the views."""
    return [line for line in read(store, last=RUNS_READ) if line.get("kind") == "sync"]


def _last_runs(runs: Runs) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The last sync run and the last one that succeeded."""
    last = runs[-1] if runs else None
    good = next((line for line in reversed(runs) if line.get("status") == "ok"), None)
    return last, good


def _points_to(link: Path) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def index_document(store: Store, frame: pd.DataFrame, runs: Runs) -> dict[str, Any]:
    last, good = _last_runs(runs)
    images = []
    for row in frame.to_dict(orient="records"):
        images.append(
            {
                "name": row["name"],
                "points_to": _points_to(store.link(row["name"])),  # what users get: maybe an older version
                "platform": row.get("platform") or None,
                "last_synced": row.get("last_synced") or None,
                "last_changed": row.get("last_changed") or None,
                "state": row["state"],
                "error": row.get("error") or None,
            }
        )
    return {
        "format": 1,
        "last_run": {"end": last.get("end"), "status": last.get("status")} if last else None,
        "last_successful_run": good.get("end") if good else None,
        "counts": counts(frame),
        "images": images,
    }


def index_html(document: dict[str, Any], generated: str) -> str:
    escape = html.escape
    last = document["last_run"] or {}
    good = document["last_successful_run"] or "never"
    rows = []
    for image in document["images"]:
        state = image["state"]
        rows.append(
            "<tr class='{cls}'><td>{name}</td><td>{state}</td><td>{synced}</td><td>{changed}</td>"
            "<td><code>{target}</code></td><td>{error}</td></tr>".format(
                cls=escape(state.replace(" ", "-")),
                name=escape(image["name"]),
                state=escape(state),
                synced=escape(image["last_synced"] or ""),
                changed=escape(image["last_changed"] or ""),
                target=escape(image["points_to"] or ""),
                error=escape(image["error"] or ""),
            )
        )
    summary = ", ".join(f"{count} {state}" for state, count in document["counts"].items() if count)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>unpacked images</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}
td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;font-size:90%}}
tr.failed td{{background:#fdd}}tr.changed-upstream td,tr.not-published td{{background:#ffd}}
tr.missing-on-disk td{{background:#fdd}}</style></head><body>
<h1>Unpacked images</h1>
<p>Last sync: {escape(str(last.get("end") or "none yet"))} ({escape(str(last.get("status") or ""))}).
Last successful sync: {escape(good)}. Page written {escape(generated)} (UTC).</p>
<p>{escape(summary or "no images")}. The same list as JSON: <a href="index.json">index.json</a>.</p>
<table><thead><tr><th>name</th><th>state</th><th>last synced</th><th>last changed</th><th>points to</th>
<th>error</th></tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


# What changes with every run even when no image did: left out when deciding whether a transaction
# publisher's page needs a transaction (it is refreshed at least every INDEX_REFRESH_SECONDS).
_RUN_FIELDS = ("generated", "last_run", "last_successful_run")


def _index_is_fresh(path: Path, document: dict[str, Any]) -> bool:
    """True if the page on disk says the same about every image and is younger than
    INDEX_REFRESH_SECONDS."""
    try:
        old = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False
    same = {k: v for k, v in old.items() if k not in _RUN_FIELDS} == {
        k: v for k, v in document.items() if k not in _RUN_FIELDS
    }
    return same and age < INDEX_REFRESH_SECONDS


def write_index(
    store: Store, publisher: DirectoryPublisher, frame: pd.DataFrame, runs: Runs, always: bool = False
) -> bool:
    """Write index.json and index.html into the root's .metadata/; True if it did."""
    # Never made here: a root without .metadata/ may be an unmounted mount point (markers.py), and
    # one made here would hide that from the next run's check. The first publish makes it.
    if not store.metadata_root.is_dir():
        return False
    document = index_document(store, frame, runs)
    transactional = not store.build_in_root
    if transactional and not always and _index_is_fresh(store.index_json, document):
        return False
    generated = now_utc()
    with publisher.transaction():
        write_atomic(store.index_json, (json.dumps({**document, "generated": generated}, indent=1) + "\n").encode())
        write_atomic(store.index_html, index_html(document, generated).encode())
    return True


def _plot(path: Path, draw: Any, margins: dict[str, float], height: float = 5.0) -> None:
    """Draw on a fresh figure with `draw(axes)` and write it as SVG, atomically. Fixed `margins`
    (fractions of the figure) and text kept as text: tight_layout and glyphs drawn as paths cost
    about 0.3 s and 0.1 s per plot, at the end of every run that ran jobs."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, height))
    try:
        draw(axes)
        figure.subplots_adjust(**margins)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg")
    finally:
        plt.close(figure)
    write_atomic(path, buffer.getvalue())


def _extremes(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    ordered = frame.dropna(subset=[column]).sort_values(column, ascending=False)
    return ordered.head(PLOTTED_NAMES)


def _no_data(axes: Any, what: str) -> None:
    axes.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=axes.transAxes)


def _plot_per_name(frame: pd.DataFrame, column: str, scale: float, path: Path, words: tuple[str, str, str]) -> None:
    """Horizontal bars of `column` / `scale` for the names with the largest values. `words`: what
    is shown when there is nothing, the axis label, the title's start."""
    shown = _extremes(frame, column)
    nothing, label, title = words

    def draw(axes: Any) -> None:
        if shown.empty:
            _no_data(axes, nothing)
            return
        axes.barh(shown["name"], shown[column].astype(float) / scale)
        axes.invert_yaxis()
        axes.set_xlabel(label)
        axes.set_title(f"{title} ({len(shown)} of {len(frame)} names)")
        axes.tick_params(axis="y", labelsize=7)

    # A fifth of an inch per name, and fixed room above and below for the title and the axis.
    height = max(3.0, 0.2 * len(shown) + 1.2)
    margins = {**NAME_MARGINS, "top": 1 - 0.5 / height, "bottom": 0.6 / height}
    _plot(path, draw, margins, height)


def plot_ages(frame: pd.DataFrame, path: Path) -> None:
    _plot_per_name(frame, "age_seconds", 3600.0, path, ("synced images", "hours since last sync", "Oldest syncs"))


def plot_sizes(frame: pd.DataFrame, path: Path) -> None:
    words = ("resolved images", "MiB (compressed layers)", "Largest images")
    _plot_per_name(frame, "size_bytes", float(2**20), path, words)


def plot_runs(runs: list[dict[str, Any]], path: Path) -> None:
    def draw(axes: Any) -> None:
        if not runs:
            _no_data(axes, "runs")
            return
        labels = [str(run.get("end") or run.get("start") or "?") for run in runs]
        changed = [run.get("counts", {}).get("changed", 0) for run in runs]
        failed = [run.get("counts", {}).get("failures", 0) for run in runs]
        positions = range(len(runs))
        axes.bar([p - 0.2 for p in positions], changed, width=0.4, label="changed", color="tab:blue")
        axes.bar([p + 0.2 for p in positions], failed, width=0.4, label="failures", color="tab:red")
        axes.set_xticks(list(positions), labels, rotation=60, ha="right", fontsize=6)
        axes.set_ylabel("names")
        axes.set_title(f"Changes and failures per run (last {len(runs)} runs)")
        axes.legend()

    _plot(path, draw, RUN_MARGINS)


def plot_stages(runs: list[dict[str, Any]], path: Path) -> None:
    timed = [run for run in runs if run.get("stage_seconds")]

    def draw(axes: Any) -> None:
        if not timed:
            _no_data(axes, "timed jobs")
            return
        stages = sorted({stage for run in timed for stage in run["stage_seconds"]})
        bottoms = [0.0] * len(timed)
        positions = list(range(len(timed)))
        for stage in stages:
            values = [float(run["stage_seconds"].get(stage, 0.0)) for run in timed]
            axes.bar(positions, values, bottom=bottoms, label=stage)
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
        labels = [str(run.get("end") or "?") for run in timed]
        axes.set_xticks(positions, labels, rotation=60, ha="right", fontsize=6)
        axes.set_ylabel("job seconds (summed over jobs)")
        axes.set_title("Time per stage per run")
        axes.legend()

    _plot(path, draw, RUN_MARGINS)


def write_report(store: Store, frame: pd.DataFrame, runs: Runs) -> list[Path]:
    """The report's files under <work>/report/: the status table and the plots."""
    runs = runs[-RUNS_PLOTTED:]
    store.report_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(store.report_file("status.html"), render(frame, "html").encode())
    write_atomic(store.report_file("status.csv"), render(frame, "csv").encode())
    plot_ages(frame, store.report_file("age.svg"))
    plot_sizes(frame, store.report_file("sizes.svg"))
    plot_runs(runs, store.report_file("runs.svg"))
    plot_stages(runs, store.report_file("stages.svg"))
    return store.report_files()


def metrics_text(frame: pd.DataFrame, runs: Runs) -> str:
    last, good = _last_runs(runs)
    lines = [
        "# HELP unpacked_images Names by state at the end of the last run.",
        "# TYPE unpacked_images gauge",
    ]
    for state, count in counts(frame).items():
        lines.append(f'unpacked_images{{state="{state}"}} {count}')
    published = frame[frame["last_synced"] != ""]["size_bytes"].fillna(0).sum()
    lines += [
        "# HELP unpacked_published_bytes Compressed layer bytes of the resolved images that are published.",
        "# TYPE unpacked_published_bytes gauge",
        f"unpacked_published_bytes {int(published)}",
    ]
    for metric, run, what in (
        ("unpacked_last_run_timestamp_seconds", last, "End of the last sync run"),
        ("unpacked_last_successful_run_timestamp_seconds", good, "End of the last sync run that succeeded"),
    ):
        lines += [f"# HELP {metric} {what}.", f"# TYPE {metric} gauge", f"{metric} {_epoch(run)}"]
    failures = last.get("counts", {}).get("failures", 0) if last else 0
    lines += [
        "# HELP unpacked_last_run_failures Failures in the last sync run.",
        "# TYPE unpacked_last_run_failures gauge",
        f"unpacked_last_run_failures {failures}",
    ]
    return "\n".join(lines) + "\n"


def _epoch(run: dict[str, Any] | None) -> int:
    if not run or not run.get("end"):
        return 0
    return calendar.timegm(time.strptime(str(run["end"]), "%Y-%m-%dT%H:%M:%SZ"))


def write_all(
    store: Store,
    resolution: Resolution,
    publisher: DirectoryPublisher | None,
    report: bool = True,
    always_index: bool = False,
) -> bool:
    """What the end of a run writes for people: the index page (unless `publisher` is None), the
    report's files (if `report`) and the metrics. Each is tried whatever became of the others (the
    metrics matter most when the root cannot be written); False if one failed (it is logged)."""
    frame = table(store, resolution)
    runs = sync_runs(store)
    writers: list[tuple[str, Any]] = [
        ("metrics", lambda: write_atomic(store.metrics_file, metrics_text(frame, runs).encode()))
    ]
    if publisher is not None:
        writers.append(("index page", lambda: write_index(store, publisher, frame, runs, always=always_index)))
    if report:
        writers.append(("report files", lambda: write_report(store, frame, runs)))
    ok = True
    for what, write in writers:
        try:
            write()
        except Exception as err:  # one view failing leaves the others to be written
            log.error("could not write the %s: %s", what, err)
            ok = False
    return ok
