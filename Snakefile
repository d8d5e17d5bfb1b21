# unpacked: keep a tree of unpacked container images in sync with a recipe.
#
# When the DAG is first built, before any job, rules/common.smk resolves every recipe entry against
# its registry (tag globs expanded, one HEAD per tag, GET only for new digests) and rewrites a small
# state file only for images that changed upstream. The DAG is then static, and `snakemake -n` lists
# exactly the images that will change. Commands that build no DAG (--lint, --list-rules, --unlock)
# contact no registry.
#
# The layout of <work> and <output_root> is owned by scripts/unpacked/store.py and drawn once, in
# README.md ("Output layout").


from snakemake.utils import min_version
from unpacked.config import check_config_file

min_version("9.19")

# Refuse a bad config file (not UTF-8, an alias bomb) before Snakemake's loader walks it.
check_config_file("config/config.yaml")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/extract.smk"
include: "rules/publish.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_targets,


onstart:
    start_run()


onsuccess:
    finish_run(succeeded=True)


onerror:
    finish_run(succeeded=False)
