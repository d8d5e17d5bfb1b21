"""`unpacked status`: one row per published name and per recipe entry that is not published.

Read from what the last run left on disk (the resolution and each name's state file, the publish
markers, the flat images' markers, each name's record.json in the root, the run's failure
records): no registry is contacted, and 5,000 names take well under 2 s. The states:

- `ok`: published as the registry had it at the last run;
- `changed upstream`: the last run saw a new digest, and an older version is still what users get;
- `failed`: the last run failed on it (the error says where); an older version may still be published;
- `not published`: resolved but never published (a run not finished yet), or an entry that never resolved;
- `missing on disk`: marked published, but its link or flat image is gone (the next run repairs it).
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import TYPE_CHECKING, Any

from .errors import UnpackedError
from .progress import human_bytes
from .reference import parse_reference
from .state import (
    Failure,
    Resolution,
    ResolvedImage,
    SyncRecord,
    load_flat_files,
    load_image,
    load_job_failures,
    load_record,
)
from .store import MULTIARCH_DIR, Store

if TYPE_CHECKING:
    import pandas as pd

OK, CHANGED, FAILED, NOT_PUBLISHED, MISSING = "ok", "changed upstream", "failed", "not published", "missing on disk"
STATES = (OK, CHANGED, FAILED, NOT_PUBLISHED, MISSING)
COLUMNS = [
    "name",
    "registry",
    "repository",
    "tag",
    "platform",
    "manifest_digest",
    "config_digest",
    "size_bytes",
    "files",
    "layers",
    "last_synced",
    "last_changed",
    "state",
    "error",
    "age_seconds",
]
# Empty text, never NaN, where a row has nothing to say (an entry that never resolved has no digests).
TEXT_COLUMNS = [
    "platform",
    "manifest_digest",
    "config_digest",
    "last_synced",
    "last_changed",
    "error",
]
# What `--stale 2d` and friends mean.
_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """Seconds in `90`, `30m`, `12h`, `2d` or `1w`."""
    match = _AGE.match(text.strip())
    if match is None:
        msg = f"{text!r} is not an age: give a number with an optional unit s, m, h, d or w (e.g. 2d)"
        raise ValueError(msg)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _split_name(name: str) -> tuple[str, str, str]:
    """registry, repository, tag (or pinned digest) of a published name: `registry/repository:tag`
    or `registry/repository@sha256:<hex>`, after any `.multiarch/<arch>/` prefix."""
    parts = name.split("/")
    if parts[0] == MULTIARCH_DIR and len(parts) > 3:
        parts = parts[2:]
    last = parts[-1]  # a registry's port is in parts[0]: the leaf's `:` or `@` starts the tag
    leaf, _, tag = last.partition("@") if "@" in last else last.rpartition(":")
    return parts[0], "/".join([*parts[1:-1], leaf]), tag


def _name_of_entry(reference: str) -> str:
    """The name a recipe entry that never resolved would be published as."""
    try:
        return parse_reference(reference).published_name
    except UnpackedError:  # not expected (the recipe was checked), but a row is better than a crash
        return reference.split("://", 1)[-1]


def _job_errors(store: Store) -> dict[str, str]:
    """The last run's job failures, by every name they leave out of date."""
    errors: dict[str, str] = {}
    for failure in load_job_failures(store):
        for name in failure.images:
            errors.setdefault(name, f"{failure.action}: {failure.error}")
    return errors


def _files_of(store: Store, config_digest: str, cache: dict[str, int | None]) -> int | None:
    if config_digest not in cache:
        cache[config_digest] = load_flat_files(store, config_digest)
    return cache[config_digest]


def _link_target(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _state_of(store: Store, name: str, image: ResolvedImage, record: SyncRecord | None, flat_exists: bool) -> str:
    """The name's state from its record (what was last published, written before the link) and its
    link: two reads per name, no marker, no file of the image."""
    target = _link_target(os.path.join(store.root, name))  # a string: this runs once per name
    if record is not None and (record.source_digest, record.config_digest) == (
        image.source_digest,
        image.config_digest,
    ):
        on_disk = target == store.link_target(name, image.config_digest) and flat_exists
        return OK if on_disk else MISSING
    return CHANGED if target is not None else NOT_PUBLISHED


def image_row(
    store: Store,
    metadata_root: str,
    name: str,
    image: ResolvedImage,
    error: str | None,
    files: int | None,
    flat_exists: bool,
) -> dict[str, Any]:
    """One name's row; `metadata_root` is str(store.metadata_root), made once for all names."""
    registry, repository, tag = _split_name(name)
    record = load_record(os.path.join(metadata_root, name, "record.json"))  # store.record(name), as a string
    state = _state_of(store, name, image, record, flat_exists)
    if error is not None:
        state = FAILED  # an older version may still be published: its times stay shown
    shown = record is not None and state != NOT_PUBLISHED
    return {
        "name": name,
        "registry": registry,
        "repository": repository,
        "tag": tag,
        "platform": image.platform,
        "manifest_digest": image.manifest_digest,
        "config_digest": image.config_digest,
        "size_bytes": sum(layer.size for layer in image.layers),
        "files": files,
        "layers": len(image.layers),
        "last_synced": record.last_synced if shown and record else None,
        "last_changed": record.last_changed if shown and record else None,
        "state": state,
        "error": error or "",
    }


def _failure_text(failure: Failure) -> str:
    return failure.error + (" (ignored: matches ignoreErrors)" if failure.ignored else "")


def rows(store: Store, resolution: Resolution) -> list[dict[str, Any]]:
    """Every row of the status table, unsorted, but `age_seconds`: each resolved image,
    each name still published that the last resolution did not reach (its entry failed to resolve,
    e.g. the registry was down), and each entry that never resolved."""
    errors = _job_errors(store)
    images = dict(resolution.images)
    for name in store.marked_published():
        if name not in images:
            image = load_image(store, name)
            if image is not None:
                images[name] = image
    unresolved = {failure.reference: failure for failure in resolution.failures}
    files_cache: dict[str, int | None] = {}
    flats: dict[str, bool] = {}  # config digest -> its flat image is there (tags share flats)
    metadata_root = str(store.metadata_root)
    matched: set[str] = set()
    found = []
    for name, image in images.items():
        failure = unresolved.get(image.reference)  # a multi-arch entry has several names
        if failure is not None:
            matched.add(image.reference)
        error = errors.get(name) or (_failure_text(failure) if failure else None)
        files = _files_of(store, image.config_digest, files_cache)
        if image.config_digest not in flats:
            flats[image.config_digest] = store.flat(image.config_digest).is_dir()
        found.append(image_row(store, metadata_root, name, image, error, files, flats[image.config_digest]))
    for reference, failure in unresolved.items():  # entries that never resolved: no digests to show
        if reference in matched:
            continue
        name = _name_of_entry(reference)
        registry, repository, tag = _split_name(name)
        found.append(
            {
                "name": name,
                "registry": registry,
                "repository": repository,
                "tag": tag,
                "state": FAILED,
                "error": _failure_text(failure),
            }
        )
    for row in found:
        for column in TEXT_COLUMNS:
            row[column] = row.get(column) or ""
    return found


def table(store: Store, resolution: Resolution) -> pd.DataFrame:
    """The status as a DataFrame, one row per name, sorted by name."""
    import pandas as pd

    frame = pd.DataFrame(rows(store, resolution), columns=COLUMNS)
    frame = frame.astype({"size_bytes": "Int64", "files": "Int64", "layers": "Int64"})
    synced = pd.to_datetime(frame["last_synced"], format="%Y-%m-%dT%H:%M:%SZ", utc=True, errors="coerce")
    frame["age_seconds"] = (pd.Timestamp.now(tz="UTC") - synced).dt.total_seconds().clip(lower=0.0)
    return frame.sort_values("name", kind="stable").reset_index(drop=True)


def select(frame: pd.DataFrame, patterns: list[str], failed: bool, stale_seconds: float | None) -> pd.DataFrame:
    """The rows matching any name glob (all without), failed ones only, and/or not synced for so long."""
    keep = frame["name"].map(lambda name: not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns))
    if failed:
        keep &= frame["state"] == FAILED
    if stale_seconds is not None:
        # A name never synced is as stale as it gets.
        keep &= frame["age_seconds"].isna() | (frame["age_seconds"] > stale_seconds)
    return frame[keep].reset_index(drop=True)


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def size_text(count: float | None) -> str:
    """A size cell: `1.2 MiB`, or empty when unknown."""
    return "" if count is None or _missing(count) else human_bytes(float(count))


def human_age(seconds: float | None) -> str:
    if seconds is None or _missing(seconds):
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _short(digest: object) -> str:
    return str(digest).removeprefix("sha256:")[:12] if isinstance(digest, str) and digest else ""


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as an operator reads it: short digests, sizes and ages in units."""
    shown = frame.copy()
    for column in ("manifest_digest", "config_digest"):
        shown[column] = shown[column].map(_short)
    shown["size"] = shown["size_bytes"].map(size_text)
    shown["age"] = shown["age_seconds"].map(human_age)
    columns = ["name", "platform", "state", "manifest_digest", "config_digest", "size", "files", "layers"]
    columns += ["last_synced", "last_changed", "age", "error"]
    return shown[columns].astype(object).where(shown[columns].notna(), "")


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown pipe table (pandas' own needs the `tabulate` package)."""
    text = frame.astype(object).where(frame.notna(), "").astype(str)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for values in text.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |")
    return "\n".join(lines)


# The aligned table cuts errors here (the other formats carry them whole).
ERROR_SHOWN = 100


def aligned(frame: pd.DataFrame) -> str:
    """Left-aligned columns, two spaces apart; long errors cut."""
    cells = [[str(value) for value in values] for values in frame.itertuples(index=False)]
    error = list(frame.columns).index("error")
    for row in cells:
        if len(row[error]) > ERROR_SHOWN:
            row[error] = row[error][: ERROR_SHOWN - 3] + "..."
    header = [str(column) for column in frame.columns]
    widths = [max(len(text) for text in column) for column in zip(header, *cells, strict=True)]
    return "\n".join(
        "  ".join(t.ljust(w) for t, w in zip(row, widths, strict=True)).rstrip() for row in [header, *cells]
    )


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The table in one of: table (aligned text), csv, json, markdown, html."""
    if fmt == "csv":
        return str(frame.to_csv(index=False))
    if fmt == "json":
        return str(frame.to_json(orient="records", indent=1)) + "\n"
    if fmt == "markdown":
        return markdown(readable(frame)) + "\n"
    if fmt == "html":
        return str(frame.to_html(index=False, na_rep="", border=0)) + "\n"
    if frame.empty:
        return "no names to show (none match, or the workflow has not run in this work directory)\n"
    return aligned(readable(frame)) + "\n"


def counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many names are in each state (every state listed, zeros included)."""
    found = frame["state"].value_counts().to_dict()
    return {state: int(found.get(state, 0)) for state in STATES}
