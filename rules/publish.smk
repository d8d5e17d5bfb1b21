rule publish_image:
    input:
        state=get_state_file,
        flat=get_flat_marker,
    output:
        marker=STORE.pattern("published_marker"),
    log:
        STORE.pattern("log.publish_image"),
    conda:
        "../envs/unpacked.yaml"
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
    shell:
        "{params.unpacked} publish --settings {params.settings} --image {wildcards.name:q}"
        " 2> {log}"
