"""Running the project's Snakemake workflow from tests, as a user would: `snakemake --cores 2`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def workflow_env(**extra: str) -> dict[str, str]:
    """The environment of a user who activated the project's virtualenv."""
    return dict(os.environ, PATH=f"{SNAKEMAKE.parent}:{os.environ['PATH']}", **extra)


def snakemake_command(directory: Path, *args: str) -> list[str]:
    """`snakemake --cores 2` on the repository's Snakefile and default profile, in `directory`."""
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
