"""Running the project's Snakemake workflow from tests, as a user would: `snakemake --cores 2`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from . import oci

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

# Set by the test session (conftest) to the id of a running test that lacks the `workflow` marker:
# such a test may not start Snakemake, so that `pytest -m "not workflow"` stays fast. None elsewhere.
UNMARKED_TEST: str | None = None


# A publish job shows its message: the flat image and the names it will publish (rules/publish.smk).
PUBLISH_JOB = re.compile(r"^Job \d+: (publish_image|publish_batch) (sha256:[0-9a-f]{64}): (.*)$")
# A batch's message starts with how many images it holds.
BATCH_COUNT = re.compile(r"^\d+ images: ")


def parse_jobs(text: str) -> list[tuple[str, str]]:
    """(rule, detail) of every job in Snakemake's output (with -n: that it would run). The detail is
    the job's wildcards, or for a publish job the names its message lists."""
    jobs: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append((match.group(1), ""))
        elif match := PUBLISH_JOB.match(line):
            jobs.append((match.group(1), BATCH_COUNT.sub("", match.group(3))))
        elif (match := re.match(r"^wildcards: (.*)$", line)) and jobs and jobs[-1][1] == "":
            jobs[-1] = (jobs[-1][0], match.group(1))
    return jobs


def rules_run(output: str) -> list[str]:
    """The rule of every job a Snakemake run (or dry-run) printed, sorted."""
    return sorted(rule for rule, _ in parse_jobs(output))


def published_by(jobs: list[tuple[str, str]]) -> list[str]:
    """The names the publish jobs among `jobs` publish, sorted (a message lists up to 20 of them)."""
    publishing = ("publish_image", "publish_batch")
    names = [name for rule, detail in jobs if rule in publishing for name in detail.split(", ")]
    return sorted(names)


def published_in(output: str) -> list[str]:
    """The names the publish jobs in Snakemake's `output` publish (or, with -n, would), sorted."""
    return published_by(parse_jobs(output))


def workflow_env(**extra: str) -> dict[str, str]:
    """The environment of a user who activated the project's virtualenv."""
    return dict(os.environ, PATH=f"{SNAKEMAKE.parent}:{os.environ['PATH']}", **extra)


def snakemake_command(directory: Path, *args: str) -> list[str]:
    """`snakemake --cores 2` on the repository's Snakefile and default profile, in `directory`."""
    if UNMARKED_TEST is not None:
        raise AssertionError(f"{UNMARKED_TEST} runs Snakemake: mark it with @pytest.mark.workflow")
    return [
        str(SNAKEMAKE),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--workflow-profile",
        str(REPO / "profiles" / "default"),
        "--directory",
        str(directory),
        "--cores",
        "2",
        *args,
    ]


def run_workflow(directory: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        snakemake_command(directory, *args),
        capture_output=True,
        text=True,
        env=env or workflow_env(),
        timeout=600,
        check=False,
    )


def write_config(directory: Path, recipe: object, registries: dict[str, dict], **settings: object) -> None:
    """`config/recipe.yaml` (a YAML/JSON document, or text as it is) and `config/config.yaml`.

    The published tree goes to `output/`, the work directory to `work/`, unless `settings` say else.
    """
    (directory / "config").mkdir(parents=True, exist_ok=True)
    text = recipe if isinstance(recipe, str) else json.dumps(recipe)
    (directory / "config" / "recipe.yaml").write_text(text)
    config = {"recipe": "config/recipe.yaml", "output_root": "output", "work_dir": "work", "registries": registries}
    (directory / "config" / "config.yaml").write_text(json.dumps(config | settings))


class Workdir:
    """A workflow directory with its registries' settings: `configure` writes the recipe, `run` syncs."""

    def __init__(self, directory: Path, registries: dict[str, dict], env: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.registries = registries
        (directory / "config").mkdir(parents=True, exist_ok=True)
        self.env = env or workflow_env()

    @property
    def root(self) -> Path:
        return self.directory / "output"

    def configure(self, recipe: object, **settings: object) -> None:
        write_config(self.directory, recipe, self.registries, **settings)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_workflow(self.directory, *args, env=self.env)


def good_image(text: str) -> oci.Image:
    """One layer with `etc/id` holding `text`."""
    return oci.build_image([oci.TarLayer().add_dir("etc").add_file("etc/id", text.encode()).tar_bytes()])


def bad_diff_id_image() -> oci.Image:
    """A layer whose uncompressed digest does not match the config's diff_id."""
    tar = oci.TarLayer().add_file("etc/id", b"corrupt\n").tar_bytes()
    honest = oci.LayerBlob.from_tar(tar, "gzip", "oci")
    lying = oci.LayerBlob(honest.data, honest.media_type, oci.sha256(b"something else"))
    return oci.build_image([lying])


def tree(root: Path) -> list[str]:
    """Every path under `root`, relative and sorted ([] if it does not exist)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
