"""The image state and every record the workflow keeps, typed, with their file formats in one place.

- `ResolvedImage` (with its `LayerRecord`s): what resolution found for one published name, the
  input of every job; `<work>/state/images/<name>.json`.
- `Resolution`: this run's images, the entries that failed to resolve (`Failure`) and the
  tags that lack some wanted platforms (`Notice`); `<work>/state/resolved.json` is its index.
- `JobFailure`: a job that failed, with the images it leaves out of date; `<work>/failures/`.
- `PublishedMarker`: what the publish job leaves for each name it published (compared with the
  resolution before the DAG); `FlatMarker`: what it records of the flat image it built (or found
  built); the flat image's names (`save_flat_names`, the job's input) and the job's output.
- `SyncRecord`: `.metadata/<name>/record.json`, what users read about a published name.

A recipe entry is `reference.ImageRef`. Every file carries `format` (FORMAT); files written before
it existed are format 1. A file of a newer format is refused: an older unpacked must not misread
what a newer one wrote. Equal content is written as equal bytes (`fsutil.json_bytes`), and only when
it changed, so Snakemake's checksums see exactly the images that changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnpackedError
from .fsutil import json_bytes
from .safefs import write_atomic, write_if_changed
from .store import Store

FORMAT = 1


class StateError(UnpackedError):
    """A state file cannot be read as this version of unpacked writes it."""


@dataclass(frozen=True)
class LayerRecord:
    digest: str
    diff_id: str
    media_type: str
    size: int


@dataclass(frozen=True)
class ResolvedImage:
    """One published name: the recipe entry (tag expanded) and the image it resolved to."""

    reference: str  # the recipe entry, tag expanded: https://registry/repository:tag
    name: str  # where it is published below the root: registry/repository:tag (or .multiarch/...)
    registry: str  # as written in the recipe
    repository: str  # as the registry API names it (library/ added on Docker Hub)
    source_digest: str  # what the tag pointed to (an index for multi-arch images)
    manifest_digest: str  # the single-platform manifest unpacked
    config_digest: str  # the image config: names the flat image
    platform: str  # os/architecture[/variant] chosen
    platforms: tuple[str, ...]  # the wanted platforms when it was resolved
    layers: tuple[LayerRecord, ...]
    # Only on a main name resolved with several platforms: its .multiarch names and what it lacks.
    multiarch: tuple[str, ...] | None = None
    missing_platforms: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": FORMAT,
            "reference": self.reference,
            "name": self.name,
            "registry": self.registry,
            "repository": self.repository,
            "source_digest": self.source_digest,
            "manifest_digest": self.manifest_digest,
            "config_digest": self.config_digest,
            "platform": self.platform,
            "platforms": list(self.platforms),
            "layers": [vars(layer) for layer in self.layers],
        }
        if self.multiarch is not None:
            document["multiarch"] = list(self.multiarch)
        if self.missing_platforms is not None:
            document["missing_platforms"] = list(self.missing_platforms)
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ResolvedImage:
        _check_format(document)
        optional = {key: tuple(document[key]) for key in ("multiarch", "missing_platforms") if key in document}
        return cls(
            reference=document["reference"],
            name=document["name"],
            registry=document["registry"],
            repository=document["repository"],
            source_digest=document["source_digest"],
            manifest_digest=document["manifest_digest"],
            config_digest=document["config_digest"],
            platform=document["platform"],
            platforms=tuple(document["platforms"]),
            layers=tuple(LayerRecord(**layer) for layer in document["layers"]),
            **optional,
        )

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    def uses(self, digest: str) -> bool:
        """True if `digest` is this image's config or one of its layers."""
        return digest == self.config_digest or digest in self.layer_digests


@dataclass(frozen=True)
class Failure:
    """A recipe entry (tag expanded) that failed: to resolve, or in one of its jobs."""

    reference: str
    error: str
    ignored: bool  # matches the recipe's ignoreErrors: does not fail the run


@dataclass(frozen=True)
class Notice:
    """A tag published for some of the wanted platforms only (not a failure)."""

    reference: str
    missing_platforms: tuple[str, ...]


@dataclass
class Resolution:
    images: dict[str, ResolvedImage] = field(default_factory=dict)  # by published name
    failures: list[Failure] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)

    @property
    def unignored_failures(self) -> list[Failure]:
        return [failure for failure in self.failures if not failure.ignored]


@dataclass(frozen=True)
class JobFailure:
    action: str  # the job's command: fetch-blob, extract-layer, flatten, publish
    key: str  # what it ran for: a digest or a published name
    error: str
    images: tuple[str, ...]  # every published name the failure leaves out of date
    time: float


@dataclass(frozen=True)
class PublishedMarker:
    name: str
    config_digest: str
    source_digest: str

    def is_for(self, source_digest: str, config_digest: str) -> bool:
        """True if the name was published for exactly this state (not an older version of the tag)."""
        return (self.source_digest, self.config_digest) == (source_digest, config_digest)


@dataclass(frozen=True)
class FlatMarker:
    config_digest: str
    files: int | None = None  # regular files in the flat image, when known (kept: the builder's count)
    kept: bool = False  # it existed already (complete: only ever created by a rename)


@dataclass(frozen=True)
class SyncRecord:
    """`.metadata/<name>/record.json`."""

    reference: str
    source_digest: str
    manifest_digest: str
    config_digest: str
    platform: str
    last_synced: str  # UTC, 2026-11-28T06:26:16Z
    last_changed: str


# -- reading and writing ----------------------------------------------------------------------------


def _check_format(document: dict[str, Any]) -> None:
    found = document.get("format", 1)
    if found != FORMAT:
        msg = f"state of format {found!r}, but this unpacked reads format {FORMAT}: written by another version?"
        raise StateError(msg)


def _read(path: Path | str) -> dict[str, Any] | None:
    """A JSON object from `path`; None if it is missing or damaged (it is then written again)."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.loads(handle.read())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def load_image(store: Store, name: str) -> ResolvedImage | None:
    """The state of `name`, or None if it has none (or a damaged one)."""
    document = _read(store.state(name))
    if document is None:
        return None
    try:
        return ResolvedImage.from_json(document)
    except (KeyError, TypeError):  # damaged: resolved again
        return None


def save_image(store: Store, image: ResolvedImage) -> bool:
    """Write `image`'s state file if its content changed; True if it did."""
    return write_if_changed(store.state(image.name), json_bytes(image.to_json()))


def save_flat_names(store: Store, config_digest: str, names: dict[str, str]) -> bool:
    """Write which names point to the flat image (name -> source digest) if that changed; True if it did.

    The input of the flat image's publish job: rewritten when a name is added, leaves or moves."""
    document = {"config_digest": config_digest, "names": dict(sorted(names.items())), "format": FORMAT}
    return write_if_changed(store.flat_names(config_digest), json_bytes(document))


def _written_before_the_dag(path: Path, key: str) -> dict[str, Any]:
    """The mapping `key` of a state file the main process writes before the DAG (a job's input)."""
    document = _read(path)
    if document is None or not isinstance(document.get(key), dict):
        raise StateError(f"{path}: missing or damaged; run the sync again (it is written before the DAG)")
    section: dict[str, Any] = document[key]
    return section


def load_flat_names(store: Store, config_digest: str) -> dict[str, str]:
    """The names of the flat image (name -> source digest) as the last resolution saved them."""
    names = _written_before_the_dag(store.flat_names(config_digest), "names")
    return {str(name): str(source) for name, source in names.items()}


def save_flat_published(store: Store, config_digest: str, names: list[str], path: Path | None = None) -> None:
    """The output of the flat image's publish job (`path`, by default the Store's): its names."""
    document = {"config_digest": config_digest, "names": names, "format": FORMAT}
    write_atomic(path or store.flat_published(config_digest), json_bytes(document))


def save_batch_published(store: Store, batch_digest: str, flats: list[str], path: Path | None = None) -> None:
    """The output of a batch's publish job (`path`, by default the Store's): its flat images."""
    document = {"flats": sorted(flats), "format": FORMAT}
    write_atomic(path or store.batch_published(batch_digest), json_bytes(document))


def save_batch(store: Store, flats: dict[str, list[str]]) -> str:
    """Write a batch of flat images (config digest -> the inputs of its publish job); its digest.

    Named by its content: the same flat images with the same inputs are the same batch, in a
    dry-run and in the run after it."""
    document = {"flats": dict(sorted(flats.items())), "format": FORMAT}
    data = json_bytes(document)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    write_if_changed(store.batch(digest), data)
    return digest


def load_batch(store: Store, batch_digest: str) -> dict[str, list[str]]:
    """The flat images of a batch and the inputs of each (config digest -> paths)."""
    flats = _written_before_the_dag(store.batch(batch_digest), "flats")
    return {str(config): [str(item) for item in inputs] for config, inputs in flats.items()}


def batch_inputs(store: Store, batch_digest: str) -> list[str]:
    """The inputs of a batch's publish job: those of each of its flat images, and the batch file."""
    flats = load_batch(store, batch_digest)
    paths = dict.fromkeys(path for inputs in flats.values() for path in inputs)
    return [*paths, str(store.batch(batch_digest))]


def image_paths(store: Store) -> list[Path]:
    """Every state file on disk, also of images the last resolution did not reach."""
    return store.state_files()


def load_image_file(path: Path) -> ResolvedImage | None:
    document = _read(path)
    try:
        return ResolvedImage.from_json(document) if document is not None else None
    except (KeyError, TypeError):
        return None


def save_resolution(store: Store, resolution: Resolution) -> list[ResolvedImage]:
    """Every image's state file (rewritten only if it changed), then the index of this run; the
    images whose state changed."""
    changed = [image for image in resolution.images.values() if save_image(store, image)]
    index: dict[str, Any] = {
        "format": FORMAT,
        "images": sorted(resolution.images),
        "failures": [vars(failure) for failure in resolution.failures],
    }
    if resolution.notices:
        index["notices"] = [{**vars(n), "missing_platforms": list(n.missing_platforms)} for n in resolution.notices]
    write_if_changed(store.resolved, json_bytes(index))
    return changed


def load_resolution(store: Store) -> Resolution:
    """The last resolution, for offline runs, jobs, reports and operator commands."""
    index = _read(store.resolved)
    if index is None:
        return Resolution()
    _check_format(index)
    images = {}
    for name in index["images"]:
        image = load_image(store, name)
        if image is not None:
            images[name] = image
    return Resolution(
        images=images,
        failures=[Failure(**failure) for failure in index.get("failures", [])],
        notices=[Notice(n["reference"], tuple(n["missing_platforms"])) for n in index.get("notices", [])],
    )


def save_job_failure(store: Store, failure: JobFailure) -> None:
    document = {**vars(failure), "images": list(failure.images), "format": FORMAT}
    write_atomic(store.failure_record(failure.action, failure.key), json.dumps(document, indent=1).encode())


def load_job_failures(store: Store) -> list[JobFailure]:
    failures = []
    for path in store.failure_records():
        document = _read(path)
        if document is not None:
            document.pop("format", None)
            failures.append(JobFailure(**{**document, "images": tuple(document["images"])}))
    return failures


def save_published_marker(store: Store, image: ResolvedImage) -> None:
    marker = PublishedMarker(image.name, image.config_digest, image.source_digest)
    write_atomic(store.published_marker(image.name), json.dumps(vars(marker), indent=1).encode())


def load_published_marker(store: Store, name: str) -> PublishedMarker | None:
    """The marker of `name`; None if it is missing. A damaged one raises StateError."""
    path = store.published_marker(name)
    if not path.exists():
        return None
    document = _read(path)
    try:
        assert document is not None
        return PublishedMarker(document["name"], document["config_digest"], document["source_digest"])
    except (AssertionError, KeyError) as err:
        raise StateError(f"{path}: damaged publish marker") from err


def is_published(store: Store, name: str, source_digest: str, config_digest: str) -> bool:
    """True if the publish job ran for exactly this state (not for an older version of the tag)."""
    try:
        marker = load_published_marker(store, name)
    except StateError:
        return False
    return marker is not None and marker.is_for(source_digest, config_digest)


def save_flat_marker(store: Store, marker: FlatMarker) -> None:
    # Unset fields are left out; `files=0` is a count (0 == False, so `not in (None, False)` dropped it).
    document = {key: value for key, value in vars(marker).items() if value is not None and value is not False}
    write_atomic(store.flat_marker(marker.config_digest), json.dumps(document, indent=1).encode())


def load_flat_files(store: Store, config_digest: str) -> int | None:
    """The file count a flat image's marker records, or None (no marker, or it does not say)."""
    document = _read(store.flat_marker(config_digest))
    files = None if document is None else document.get("files")
    return files if isinstance(files, int) and not isinstance(files, bool) else None


def record_json(record: SyncRecord) -> bytes:
    return json_bytes(vars(record))


def load_record(path: Path | str) -> SyncRecord | None:
    """A name's published record, or None if missing or unreadable."""
    document = _read(path)
    if document is None:
        return None
    try:
        return SyncRecord(**{key: document[key] for key in SyncRecord.__dataclass_fields__})
    except KeyError:
        return None
