"""Where things live: the content-addressed work store and the published tree. The one owner of
every path the workflow reads or writes: the rules take their patterns from `Store.pattern`.

<work>/blobs/sha256/<hex>             manifests, configs and layer blobs, verified
<work>/layers/<hex[:2]>/<hex>/        one extracted layer: rootfs/ and layer.json (its marker)
<work>/flats/<config hex>.json        marker of a built flat image
<work>/published/<name>.json          marker of a published name
<work>/published_flats/<config hex>.json   output of the publish job of one flat image's names
<work>/state/images/<name>.json       resolved state of one published name
<work>/state/flats/<config hex>.json  the names that point to one flat image (its publish job's input)
<work>/state/batches/<hex>.json       small flat images one publish_batch job takes, with their inputs
<work>/published_batches/<hex>.json   output of a publish_batch job
<work>/state/resolved.json            the images of this run and the resolution failures
<work>/state/settings.json            the settings of the last run (for operator commands)
<work>/state/settings/<hex>.json      the settings a run's jobs read, named by their digest
<work>/state/run.lock                 held by the one process that syncs or collects
<work>/state/placeholders/<hash>      where a job left a placeholder output (see placeholders.py)
<work>/failures/<action>-<key hash>.json   a failed job of this run, and `unresolved` (see report.smk)
<work>/logs/<rule>/...                one log per job
<work>/history/<YYYY-MM>.jsonl        one line per run and gc (history.py); current.json: the open run
<work>/history/stages/<job>.json      the run's job times by stage, summed into its history line
<work>/report/                        status table and plots for `snakemake --report` (views.py)
<work>/unpacked.prom                  metrics for node_exporter's textfile collector (views.py)
<work>/running/<job id>.json          a job running now: what, for which image, where (see running.py)
<work>/publish.lock                   transaction publishers take turns here
<work>/publish-transaction.json       the hook publisher's open transaction and its images (batches)
<work>/flat/<hex[:2]>/<hex>/          flat images built for a transaction publisher to copy in
<work>/trash/                         what is being deleted (renamed here first, then removed)
<root>/.flat/<hex[:2]>/<hex>/         a flattened image, named by its config digest
<root>/<registry>/<repository>:<tag>  relative symlink to the flat image
<root>/.metadata/<name>               -> .<leaf>.meta/<key>/: manifest.json, config.json, record.json
<root>/.multiarch/<arch>[:<variant>]/<registry>/<repository>:<tag>   per-platform links, published under
                                      the name `.multiarch/<arch>/<registry>/...` (several platforms)
<root>/.metadata/index.html, index.json   every name, its target, sync times and state (views.py)
<root>/.trash/                        what is being deleted from the root
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .reference import validate_digest

_HEX_LOG = re.compile(r"^[0-9a-f]{64}\.log\Z")
# A metadata version directory is `.<leaf>.meta/<16 hex>/` beside the name's link.
METADATA_KEY_LENGTH = 16
_METADATA_KEY = re.compile(rf"^[0-9a-f]{{{METADATA_KEY_LENGTH}}}\Z")
# DUCC's directory of per-platform links: <root>/.multiarch/<arch>[:<variant>]/<registry>/<repo>:<tag>.
MULTIARCH_DIR = ".multiarch"
# One part of a platform (architecture or variant) as it may appear in a .multiarch directory name.
ARCH_PART = re.compile(r"^[A-Za-z0-9_]{1,32}\Z")


# The work directory's layout: {hex} is a digest's hex, {xx} its first two characters, {name} a
# published name. Snakemake patterns are these very strings, with the fields left as wildcards.
WORK_LAYOUT = {
    "blob": "blobs/sha256/{hex}",
    "layer": "layers/{xx}/{hex}",
    "layer_marker": "layers/{xx}/{hex}/layer.json",
    "flat_marker": "flats/{hex}.json",
    "flat_lock": "flats/{hex}.lock",
    "built_flat": "flat/{xx}/{hex}",
    "published_marker": "published/{name}.json",
    "flat_published": "published_flats/{hex}.json",
    "state": "state/images/{name}.json",
    "flat_names": "state/flats/{hex}.json",
    "batch": "state/batches/{hex}.json",
    "batch_published": "published_batches/{hex}.json",
    "unresolved": "failures/unresolved",
    "log.fetch_blob": "logs/fetch_blob/{hex}.log",
    "log.extract_layer": "logs/extract_layer/{xx}/{hex}.log",
    "log.publish_image": "logs/publish_image/{hex}.log",
    "log.publish_batch": "logs/publish_batch/{hex}.log",
    "log.report_unresolved": "logs/report_unresolved.log",
    "log.report_views": "logs/report_views.log",
    "run_settings": "state/settings/{name}.json",
}
# What `snakemake --report` shows of the service (views.py writes them, rules/report.smk marks them).
REPORT_FILES = ("status.html", "status.csv", "age.svg", "sizes.svg", "runs.svg", "stages.svg")
# The published tree's layout (links are the names themselves, `<root>/<name>`).
ROOT_LAYOUT = {
    "flat": ".flat/{xx}/{hex}",
    "metadata": ".metadata",
}


def digest_hex(digest: str) -> str:
    return validate_digest(digest).split(":", 1)[1]


@dataclass(frozen=True)
class Store:
    work: Path
    root: Path
    # Where flat images are built: inside the root for a directory publisher, in the work directory
    # when a transaction publisher copies them in.
    build_in_root: bool = True

    def pattern(self, what: str) -> str:
        """The Snakemake pattern of a work path (`blob`, `log.fetch_blob`, ...): wildcards left in."""
        return str(self.work / WORK_LAYOUT[what])

    def _at(self, what: str, digest: str | None = None, name: str | None = None) -> Path:
        fields = {"name": name}
        if digest is not None:
            hexd = digest_hex(digest)
            fields.update(hex=hexd, xx=hexd[:2])
        base, layout = self._layout(what)
        return base / layout.format(**fields)

    def _layout(self, what: str) -> tuple[Path, str]:
        """`root.flat` is in the published tree, anything else in the work directory."""
        if what.startswith("root."):
            return self.root, ROOT_LAYOUT[what.removeprefix("root.")]
        return self.work, WORK_LAYOUT[what]

    def _glob(self, what: str, last: str | None = None) -> list[Path]:
        base, layout = self._layout(what)
        parts = [re.sub(r"\{\w+\}", "*", part) for part in layout.split("/")]
        if last is not None:
            parts[-1] = last
        return sorted(base.glob("/".join(parts)))

    def on_disk(self, what: str) -> list[Path]:
        """Every product of one kind (`blob`, `layer`, `built_flat`, `root.flat`, `run_settings`...),
        named as the layout says: staging and other dot-named entries are not products."""
        return [path for path in self._glob(what) if not path.name.startswith(".")]

    def beside(self, what: str) -> list[Path]:
        """The dot-named entries beside the products of one kind: staging and leftovers of killed jobs."""
        return self._glob(what, ".*")

    def log(self, rule: str, digest: str) -> Path:
        """The log of the job of `rule` (fetch_blob, extract_layer, publish_image) for a digest."""
        return self._at(f"log.{rule}", digest)

    def old_publish_logs(self) -> list[Path]:
        """Publish logs named by a published name: the layout of one publish job per name (before
        one per flat image), which nothing writes any more."""
        base = self.work / "logs" / "publish_image"
        return sorted(path for path in base.rglob("*.log") if path.parent != base or not _HEX_LOG.match(path.name))

    def blob(self, digest: str) -> Path:
        return self._at("blob", digest)

    def layer(self, digest: str) -> Path:
        return self._at("layer", digest)

    def layer_rootfs(self, digest: str) -> Path:
        """The extracted layer's files."""
        return self.layer(digest) / "rootfs"

    def layer_marker(self, digest: str) -> Path:
        """Written last by an extraction: a layer directory without it is not a layer."""
        return self._at("layer_marker", digest)

    def state(self, name: str) -> Path:
        return self._at("state", name=name)

    def state_files(self) -> list[Path]:
        """Every image state file on disk (names hold slashes: the whole tree below)."""
        prefix, suffix = WORK_LAYOUT["state"].split("{name}")
        return sorted(self.work.glob(f"{prefix}**/*{suffix}"))

    @property
    def resolved(self) -> Path:
        return self.work / "state" / "resolved.json"

    @property
    def realms(self) -> Path:
        """Token realms learned from the registries (no secrets: URLs and service names)."""
        return self.work / "state" / "realms.json"

    @property
    def settings(self) -> Path:
        """The settings of the last run, for commands an operator runs by hand."""
        return self.work / "state" / "settings.json"

    def run_settings(self, key: str) -> Path:
        """Settings named by their digest: a file no other run can change under a running job."""
        return self._at("run_settings", name=key)

    @property
    def placeholders(self) -> Path:
        """One entry per placeholder output a job left, so the next run finds them without a scan."""
        return self.work / "state" / "placeholders"

    @property
    def run_lock(self) -> Path:
        return self.work / "state" / "run.lock"

    @property
    def publish_lock(self) -> Path:
        return self.work / "publish.lock"

    @property
    def publish_transaction(self) -> Path:
        return self.work / "publish-transaction.json"

    @property
    def failures(self) -> Path:
        return self.work / "failures"

    def failure_records(self) -> list[Path]:
        return sorted(self.failures.glob("*.json"))

    def failure_record(self, action: str, key: str) -> Path:
        # Keys are digests or published names: a hash keeps distinct keys apart in one flat directory.
        return self.failures / f"{action}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    @property
    def running_dir(self) -> Path:
        return self.work / "running"

    def running_markers(self) -> list[Path]:
        """The markers of the jobs running now (a dot-named file is one being written)."""
        return [path for path in sorted(self.running_dir.glob("*.json")) if not path.name.startswith(".")]

    def running_marker(self, job_id: str) -> Path:
        """Kept by a job while it runs; `job_id` is unique across hosts and processes."""
        return self.running_dir / f"{job_id}.json"

    @property
    def unresolved(self) -> Path:
        return self._at("unresolved")

    @property
    def work_trash(self) -> Path:
        return self.work / "trash"

    @property
    def root_trash(self) -> Path:
        return self.root / ".trash"

    def published_marker(self, name: str) -> Path:
        """Written by the publish job once `name` points at its current image."""
        return self._at("published_marker", name=name)

    def flat_names(self, config_digest: str) -> Path:
        """Which names point to the flat image, with their source digests (written before the DAG)."""
        return self._at("flat_names", config_digest)

    def flat_published(self, config_digest: str) -> Path:
        """The publish job's output: every name of this flat image was published by it. Only while
        each of those names still has its own marker (`markers.py` removes it otherwise)."""
        return self._at("flat_published", config_digest)

    def batch(self, batch_digest: str) -> Path:
        """Which small flat images one publish job takes, with each one's inputs (written before the
        DAG, named by the digest of its content)."""
        return self._at("batch", batch_digest)

    def batch_published(self, batch_digest: str) -> Path:
        """The output of the publish job of a batch: every flat image of it was published."""
        return self._at("batch_published", batch_digest)

    def flat_marker(self, config_digest: str) -> Path:
        """Written once the flat image is complete under its final name (by the publish job of its
        names)."""
        return self._at("flat_marker", config_digest)

    def flat_lock(self, config_digest: str) -> Path:
        """Held while the flat image is checked for and built: tags of one image publish side by side."""
        return self._at("flat_lock", config_digest)

    def flat(self, config_digest: str) -> Path:
        return self._at("root.flat", config_digest)

    def built_flat(self, config_digest: str) -> Path:
        if self.build_in_root:
            return self.flat(config_digest)
        return self._at("built_flat", config_digest)

    def link(self, name: str) -> Path:
        return self.root / name

    def link_target(self, name: str, config_digest: str) -> str:
        """`../../.flat/ab/ab12..`: one `..` per directory level of `name` below the root."""
        hexd = digest_hex(config_digest)
        flat = ROOT_LAYOUT["flat"].format(xx=hexd[:2], hex=hexd)  # strings: status calls this per name
        return "/".join([".."] * name.count("/") + [flat])

    @property
    def metadata_root(self) -> Path:
        """`.metadata/`: its absence in an existing root means the root is not what it seems."""
        return self._at("root.metadata")

    def metadata(self, name: str) -> Path:
        """The name's metadata directory as users read it (a link to its current version)."""
        return self.metadata_root / name

    def record(self, name: str) -> Path:
        """The name's sync record (digests, platform, sync times), inside its metadata directory."""
        return self.metadata(name) / "record.json"

    def metadata_versions_dir(self, name: str) -> Path:
        """Where the versions of `name`'s metadata live: `.<leaf>.meta/` beside its link."""
        meta = self.metadata(name)
        return meta.with_name(f".{meta.name}.meta")

    def metadata_version(self, name: str, key: str) -> Path:
        return self.metadata_versions_dir(name) / key

    def metadata_versions(self, name: str) -> list[Path]:
        """Every complete version directory of `name`'s metadata (staging names are not versions)."""
        versions = self.metadata_versions_dir(name)
        try:
            return sorted(versions / n for n in os.listdir(versions) if _METADATA_KEY.match(n))
        except FileNotFoundError:
            return []

    def marked_published(self) -> list[str]:
        """Every name with a publish marker (also names the last resolution did not reach)."""
        prefix, suffix = WORK_LAYOUT["published_marker"].split("{name}")
        base = str(self.work / prefix)
        names = []
        for directory, _dirs, files in os.walk(base):  # strings, not Paths: thousands of names
            below = os.path.relpath(directory, base)
            for file in files:
                if file.endswith(suffix) and not file.startswith("."):
                    names.append(os.path.normpath(os.path.join(below, file[: -len(suffix)])))
        return sorted(names)

    @property
    def history_dir(self) -> Path:
        return self.work / "history"

    def history_file(self, month: str) -> Path:
        """The history lines of one month (`2026-12`)."""
        return self.history_dir / f"{month}.jsonl"

    def history_files(self) -> list[Path]:
        """Every month's history file, oldest first."""
        return sorted(self.history_dir.glob("[0-9][0-9][0-9][0-9]-[0-9][0-9].jsonl"))

    @property
    def run_journal(self) -> Path:
        """The open run: when it started, who ran it, what it is about to change (history.py)."""
        return self.history_dir / "current.json"

    @property
    def stages_dir(self) -> Path:
        return self.history_dir / "stages"

    def stage_times(self, action: str, key: str) -> Path:
        """A job's time per step in this run, named like its failure record."""
        return self.stages_dir / self.failure_record(action, key).name

    @property
    def report_dir(self) -> Path:
        return self.work / "report"

    def report_file(self, name: str) -> Path:
        """One of REPORT_FILES."""
        return self.report_dir / name

    def report_files(self) -> list[Path]:
        return [self.report_file(name) for name in REPORT_FILES]

    @property
    def metrics_file(self) -> Path:
        return self.work / "unpacked.prom"

    @property
    def index_json(self) -> Path:
        return self.metadata_root / "index.json"

    @property
    def index_html(self) -> Path:
        return self.metadata_root / "index.html"


def store_for(settings: dict[str, Any]) -> Store:
    """The Store of a validated config (or a run's saved settings)."""
    # A directory publisher builds flats inside the output root, so publishing is a rename away.
    build_in_root = settings.get("publisher", {}).get("type", "directory") == "directory"
    return Store(Path(settings["work_dir"]), Path(settings["output_root"]), build_in_root)
