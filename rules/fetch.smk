rule fetch_blob:
    output:
        blob=STORE.pattern("blob"),
    log:
        STORE.pattern("log.fetch_blob"),
    resources:
        registry_conn=1,
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
        image=get_blob_owner,
    shell:
        "{params.unpacked} fetch-blob --settings {params.settings} --image {params.image:q}"
        " --digest sha256:{wildcards.hex} --outputs {output:q} 2> {log}"
