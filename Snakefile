# unpacked: keep a tree of unpacked container images in sync with a recipe.
#
# Before the DAG is built, rules/common.smk resolves every recipe entry against its registry (tag
# globs expanded, one HEAD per tag, GET only for new digests) and rewrites a small state file only
# for images that changed upstream. The DAG below is then static, and `snakemake -n` lists exactly
# the images that will change.
#
#   <work>/blobs/sha256/<hex>              fetch_blob      verified blobs (layers, manifests, configs)
#   <work>/layers/<xx>/<hex>/               extract_layer   one extracted layer + layer.json
#   <output_root>/.flat/<xx>/<config hex>/  flatten_image   the runnable image tree
#   <output_root>/<registry>/<repo>:<tag>   publish_image   -> ../../.flat/<xx>/<config hex>
#   <output_root>/.metadata/<registry>/<repo>:<tag>/        manifest, config and sync record


from snakemake.utils import min_version
from unpacked.config import check_config_file

min_version("9.19")

# Refuse a bad config file (not UTF-8, an alias bomb) before Snakemake's loader walks it.
check_config_file("config/config.yaml")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/extract.smk"
include: "rules/flatten.smk"
include: "rules/publish.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_targets(),


onsuccess:
    report_failures(success=True)


onerror:
    report_failures(success=False)
