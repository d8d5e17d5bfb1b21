rule fetch_blob:
    output:
        blob=f"{WORK}/blobs/sha256/{{hex}}",
    params:
        image=get_blob_owner,
        work=WORK,
    log:
        f"{WORK}/logs/fetch_blob/{{hex}}.log",
    resources:
        registry_conn=1,
    shell:
        "unpacked fetch-blob --work {params.work} --image {params.image:q}"
        " --digest sha256:{wildcards.hex} 2> {log}"
