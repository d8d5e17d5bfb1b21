localrules:
    report_views,


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


rule report_views:
    """The service in `snakemake --report`: the status table and plots. The end of every run writes
    them (`unpacked record-run`); the DAG asks for them once they exist, so this rule runs only
    when one is asked for by name."""
    output:
        table=report(
            STORE.report_file("status.html"),
            category="Status",
            labels={"view": "table"},
            caption="report/status.rst",
        ),
        csv=report(
            STORE.report_file("status.csv"),
            category="Status",
            labels={"view": "table (CSV)"},
            caption="report/status.rst",
        ),
        age=report(
            STORE.report_file("age.svg"),
            category="Plots",
            labels={"view": "age since last sync"},
            caption="report/plots.rst",
        ),
        sizes=report(
            STORE.report_file("sizes.svg"),
            category="Plots",
            labels={"view": "image sizes"},
            caption="report/plots.rst",
        ),
        runs=report(
            STORE.report_file("runs.svg"),
            category="Plots",
            labels={"view": "changes and failures per run"},
            caption="report/plots.rst",
        ),
        stages=report(
            STORE.report_file("stages.svg"),
            category="Plots",
            labels={"view": "time per stage"},
            caption="report/plots.rst",
        ),
    log:
        STORE.pattern("log.report_views"),
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
    shell:
        "{params.unpacked} views --report-only --settings {params.settings} 2> {log}"
