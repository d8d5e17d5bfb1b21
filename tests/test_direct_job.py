"""`unpacked cluster-job`: a Snakemake job script's job run without Snakemake (profiles/slurm-sbatch).

Its real use, on Slurm, is in test_slurm.py (every rule's command compared with its shell, job by
job). Here, on job scripts written the way Snakemake writes them: what it does around the command
(log, stale outputs, inputs that never appear) and when it hands the job back to Snakemake's script.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from unpacked import direct_job
from unpacked.state import save_batch
from unpacked.store import Store

from support.workflow import SNAKEMAKE

UNPACKED = str(SNAKEMAKE.with_name("unpacked"))


def job_script(directory: Path, properties: dict[str, Any], body: str = "exit 0") -> Path:
    """A job script as Snakemake's default template writes it (properties line, then its command)."""
    script = directory / "snakejob.sh"
    script.write_text(f"#!/bin/sh\n# properties = {json.dumps(properties)}\n{body}\n")
    return script


def report_job(settings: str, log: str = "logs/report.log") -> dict[str, Any]:
    return {
        "type": "single",
        "rule": "report_unresolved",
        "input": [],
        "output": ["failures/unresolved"],
        "wildcards": {},
        "params": {"unpacked": "unpacked", "settings": settings},
        "log": [log],
    }


def cluster_job(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [UNPACKED, "cluster-job", str(script)], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_known_job_runs_its_command_with_its_log_and_exit_code(tmp_path: Path) -> None:
    job = report_job("state/no-such-settings.json")
    (tmp_path / "failures").mkdir()
    (tmp_path / "failures" / "unresolved").write_text("from an earlier run")
    done = cluster_job(job_script(tmp_path, job, body="echo snakemake ran; exit 0"), tmp_path)
    assert done.returncode == 1, done
    assert "snakemake ran" not in done.stdout, "the job went through Snakemake's command"
    log = (tmp_path / "logs" / "report.log").read_text()
    assert log.startswith("unpacked cluster-job: report_unresolved: unpacked summary --settings"), log
    assert "state/no-such-settings.json: no saved settings" in log, log
    assert not (tmp_path / "failures" / "unresolved").exists(), "a stale output stays, as Snakemake removes it"


@pytest.mark.parametrize(
    "change",
    [
        {"rule": "some_other_rule"},
        {"input": None},  # Snakemake's properties leave out more than 100 inputs
        {"params": None},  # and params that are not JSON
    ],
    ids=["unknown rule", "inputs cut", "params cut"],
)
def test_a_job_it_cannot_rebuild_runs_snakemakes_script(tmp_path: Path, change: dict[str, Any]) -> None:
    job = report_job("settings.json") | change
    done = cluster_job(job_script(tmp_path, job, body="echo through snakemake > ran; exit 7"), tmp_path)
    assert done.returncode == 7, done
    assert (tmp_path / "ran").read_text() == "through snakemake\n"
    assert direct_job.command_of(job) is None


def test_inputs_that_never_appear_fail_the_job_without_running_it(tmp_path: Path) -> None:
    job = publish_job()
    for path in job["input"][:2]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("there")
    script = job_script(tmp_path, job)
    program = (
        "import sys; from pathlib import Path; from unpacked import direct_job;"
        "direct_job.INPUT_WAIT_SECONDS = 1; sys.exit(direct_job.run(Path(sys.argv[1])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1, done
    log = (tmp_path / "logs" / "publish.log").read_text()
    assert f"publish_image: inputs missing after 1 s: state/flats/{CONFIG}.json" in log
    assert not (tmp_path / "published_flats" / f"{CONFIG}.json").exists()


CONFIG = "c" * 64
LAYER = f"layers/ab/{'ab' * 32}/layer.json"


def publish_job() -> dict[str, Any]:
    """The properties Snakemake writes for a publish job: a layer, the config, the flat's names."""
    return {
        "rule": "publish_image",
        "input": [LAYER, f"blobs/sha256/{CONFIG}", f"state/flats/{CONFIG}.json"],
        "output": [f"published_flats/{CONFIG}.json"],
        "wildcards": {"hex": CONFIG},
        "params": {"unpacked": "unpacked", "settings": "settings.json", "names": "r/a:1, r/a:2"},
        "log": ["logs/publish.log"],
    }


def test_a_publish_job_runs_the_publish_command_of_its_flat_image() -> None:
    assert direct_job.command_of(publish_job()) == [
        *("publish", "--settings", "settings.json", "--flat", f"sha256:{CONFIG}"),
        *("--inputs", LAYER, f"blobs/sha256/{CONFIG}", f"state/flats/{CONFIG}.json"),
        *("--outputs", f"published_flats/{CONFIG}.json"),
    ]


def test_a_batch_job_past_100_inputs_waits_for_those_of_its_batch_file(tmp_path: Path) -> None:
    """Snakemake leaves `input` out of the properties past 100 files; a batch of images with several
    layers each has that many. The job still runs directly, waiting for what its batch file lists."""
    store = Store(tmp_path / "work", tmp_path / "output")
    inputs = {f"sha256:{n:064x}": [f"work/layers/ab/{n}/layer.json", f"work/blobs/sha256/{n}"] for n in range(60)}
    batch = save_batch(store, inputs)
    (tmp_path / "settings.json").write_text(json.dumps({"work_dir": str(store.work), "output_root": str(store.root)}))
    job = {
        "rule": "publish_batch",
        "input": None,
        "output": [str(store.batch_published(batch))],
        "wildcards": {"hex": batch.split(":")[1]},
        "params": {"unpacked": "unpacked", "settings": str(tmp_path / "settings.json"), "names": "60 images: ..."},
        "log": ["logs/batch.log"],
    }
    arguments = direct_job.command_of(job)
    assert arguments == [
        *("publish", "--settings", str(tmp_path / "settings.json"), "--batch", batch),
        *("--outputs", str(store.batch_published(batch))),
    ]
    expected = [path for paths in inputs.values() for path in paths]
    assert job["input"] == [*expected, str(store.batch(batch))] and len(job["input"]) == 121

    job["params"]["settings"] = str(tmp_path / "no-such-settings.json")  # the batch cannot be read
    job["input"] = None
    assert direct_job.command_of(job) is None, "Snakemake's own job script runs it"


def test_slurm_submit_needs_a_job_script() -> None:
    done = subprocess.run([UNPACKED, "slurm-submit"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "usage: unpacked slurm-submit" in done.stderr


def test_slurm_submit_runs_cluster_job_in_the_working_directory_with_this_python(tmp_path: Path) -> None:
    command = direct_job.submit_command(
        ["--parsable", "--comment=a b", ".snakemake/tmp.x/snakejob.publish_image.1.sh"], str(tmp_path / "w d")
    )
    assert command[:4] == ["sbatch", "--parsable", "--comment=a b", f"--chdir={tmp_path / 'w d'}"]
    assert command[4] == "--wrap"
    script = tmp_path / "w d" / ".snakemake/tmp.x/snakejob.publish_image.1.sh"
    assert shlex.split(command[5]) == ["exec", sys.executable, "-m", "unpacked.cli", "cluster-job", str(script)]


@pytest.mark.parametrize("words", [["--help"], ["--parsable", "no-such-script.sh"]], ids=["help", "no script"])
def test_slurm_submit_submits_nothing_without_a_job_script(tmp_path: Path, words: list[str]) -> None:
    fake_bin = tmp_path / "bin"  # an sbatch that would say it ran
    fake_bin.mkdir()
    (fake_bin / "sbatch").write_text("#!/bin/sh\necho submitted\n")
    (fake_bin / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    done = subprocess.run(
        [UNPACKED, "slurm-submit", *words], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0 and "submitted" not in done.stdout
    assert "usage: unpacked slurm-submit" in done.stderr


def test_a_script_without_properties_runs_as_it_is(tmp_path: Path) -> None:
    """A site's own job script template, without Snakemake's properties line, is left to itself."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho ran > ran\n")
    assert cluster_job(script, tmp_path).returncode == 0
    assert (tmp_path / "ran").read_text() == "ran\n"
