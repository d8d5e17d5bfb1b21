rule extract_layer:
    input:
        blob=STORE.pattern("blob"),
    output:
        index=STORE.pattern("layer_marker"),
    log:
        STORE.pattern("log.extract_layer"),
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
        diff_id=get_diff_id,
    shell:
        "{params.unpacked} extract-layer --settings {params.settings} --digest sha256:{wildcards.hex}"
        " --diff-id {params.diff_id} --inputs {input:q} --outputs {output:q} 2> {log}"
