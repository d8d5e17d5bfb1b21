rule report_unresolved:
    """Fails the run, after every other job, when recipe entries could not be resolved."""
    output:
        never=STORE.pattern("unresolved"),
    log:
        STORE.pattern("log.report_unresolved"),
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
    shell:
        "{params.unpacked} summary --settings {params.settings} --resolution-only 2> {log}"
