rule extract_layer:
    input:
        blob=f"{WORK}/blobs/sha256/{{hex}}",
    output:
        index=f"{WORK}/layers/{{xx}}/{{hex}}/layer.json",
    log:
        f"{WORK}/logs/extract_layer/{{xx}}/{{hex}}.log",
    conda:
        "../envs/unpacked.yaml"
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
        diff_id=get_diff_id,
    shell:
        "{params.unpacked} extract-layer --settings {params.settings} --digest sha256:{wildcards.hex}"
        " --diff-id {params.diff_id} 2> {log}"
