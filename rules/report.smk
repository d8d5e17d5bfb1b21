rule report_unresolved:
    """Fails the run, after every other job, when recipe entries could not be resolved."""
    input:
        settings=ancient(SETTINGS),
    output:
        never=f"{WORK}/failures/unresolved",
    log:
        f"{WORK}/logs/report_unresolved.log",
    conda:
        "../envs/unpacked.yaml"
    params:
        unpacked=UNPACKED,
    shell:
        "{params.unpacked} summary --settings {input.settings} --resolution-only 2> {log}"
