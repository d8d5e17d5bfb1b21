rule extract_layer:
    input:
        blob=ancient(f"{WORK}/blobs/sha256/{{hex}}"),
    output:
        index=f"{WORK}/layers/{{xx}}/{{hex}}/layer.json",
    params:
        diff_id=get_diff_id,
        work=WORK,
    log:
        f"{WORK}/logs/extract_layer/{{xx}}/{{hex}}.log",
    shell:
        "unpacked extract-layer --work {params.work} --digest sha256:{wildcards.hex}"
        " --diff-id {params.diff_id} 2> {log}"
