rule report_unresolved:
    """Fails the run, after every other job, when recipe entries could not be resolved."""
    output:
        never=f"{WORK}/failures/unresolved",
    log:
        f"{WORK}/logs/report_unresolved.log",
    conda:
        "../envs/unpacked.yaml"
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
    shell:
        "{params.unpacked} summary --settings {params.settings} --resolution-only 2> {log}"
