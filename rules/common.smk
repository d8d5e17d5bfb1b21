import logging
import shutil
import subprocess
import sys

from snakemake.common import NOTHING_TO_BE_DONE_MSG
from snakemake.exceptions import WorkflowError

from unpacked.failures import clear_job_failures
from unpacked.history import mark_jobs_started, mark_nothing_to_do
from unpacked.workflow import configure

# Parsing only checks the config and reads the recipe. Registries are contacted (once, in the main
# process; jobs and cluster nodes reuse its state) when the DAG is first built: `--lint`,
# `--list-rules` and `--unlock` never resolve, and never take the run lock.
CONFIGURED = configure(config, main_process=workflow.is_main_process)
# Every path comes from the Store: rules take their patterns from it (STORE.pattern("blob"), ...).
STORE = CONFIGURED.store
# Named by the settings' digest: another invocation cannot change what a running job reads. Rules
# pass it as a param, not an input: the profile's rerun-triggers leave params out, so a changed
# setting does not rebuild every image (without that profile, every job would run again).
SETTINGS = str(CONFIGURED.settings_path)
# The package's CLI: on PATH when its environment is active, else through this interpreter.
UNPACKED = (
    "unpacked" if shutil.which("unpacked") else f"{sys.executable} -m unpacked.cli"
)


wildcard_constraints:
    hex="[0-9a-f]{64}",
    xx="[0-9a-f]{2}",


class NothingToDo(logging.Filter):
    """Notes Snakemake's "Nothing to be done": such a run ends without onsuccess, and its history
    line (written when the process exits) must tell it from a run that stopped on an error.
    """

    def filter(self, record):
        if record.getMessage() == NOTHING_TO_BE_DONE_MSG:
            mark_nothing_to_do()
        return True


logging.getLogger("snakemake.logging").addFilter(NothingToDo())


def plan():
    """The Plan, built the first time the DAG asks. Whether this is a dry-run, and whether jobs
    are to run at all (no executor for --report, --dag, --summary), is known only then
    (`workflow.dryrun` is False while the Snakefile is parsed, even with -n)."""
    CONFIGURED.dry_run = workflow.dryrun
    CONFIGURED.executing = workflow.executor_plugin is not None
    return CONFIGURED.plan()


def get_targets(wildcards):
    """Every published image, plus a failing report job if some entries could not be resolved."""
    return plan().targets()


def get_blob_owner(wildcards):
    return plan().blob_owner[wildcards.hex]


def get_diff_id(wildcards):
    return plan().diff_ids[wildcards.hex]


def get_layers(wildcards):
    return plan().layers_of(wildcards.hex)


def get_config_blob(wildcards):
    return plan().config_blob_of(wildcards.hex)


def get_flat_names(wildcards):
    return plan().flat_names_of(wildcards.hex)


def get_publishing(wildcards):
    return plan().publishing(wildcards.hex)


def get_only_option(wildcards):
    return plan().only_option(wildcards.hex)


def get_batch_inputs(wildcards):
    return plan().batch_inputs(wildcards.hex)


def get_batch_publishing(wildcards):
    return plan().batch_publishing(wildcards.hex)


def start_run():
    """A run that executes jobs (never a dry-run) starts with no failure records; one that syncs
    only some tags (`only`) keeps the other images' records for the summary."""
    mark_jobs_started()
    if not CONFIGURED.settings["only"].strip():
        clear_job_failures(STORE)


def finish_run(succeeded):
    """Commit the publisher's last batch of images (a run that executed jobs only), then print the
    summary. A failed final commit fails the run: those images are published again next time.
    """
    failed = False
    batches = CONFIGURED.settings["publisher"]["type"] == "hook"
    if batches and not workflow.dryrun:
        done = subprocess.run(
            [*UNPACKED.split(), "publish-finish", "--settings", SETTINGS], check=False
        )
        failed = done.returncode != 0
    if not workflow.dryrun:
        record_run("failed" if failed or not succeeded else "ok")
    print_summary()
    if failed:
        raise WorkflowError("the last publish transaction did not commit (see above)")


def record_run(status):
    """The run's history line, the index page in the root, the report's files and the metrics."""
    subprocess.run(
        [*UNPACKED.split(), "record-run", "--settings", SETTINGS, "--status", status],
        check=False,
    )


def print_summary():
    """The run's failures, mapped to recipe entries. The exit status is Snakemake's own: a run
    fails when a job fails (see scripts/unpacked/placeholders.py); this only reports."""
    subprocess.run([*UNPACKED.split(), "summary", "--settings", SETTINGS], check=False)
