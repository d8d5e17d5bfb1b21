rule publish_image:
    input:
        state=get_state_file,
        flat=get_flat_marker,
    output:
        marker=STORE.pattern("published_marker"),
    log:
        STORE.pattern("log.publish_image"),
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
    shell:
        "{params.unpacked} publish --settings {params.settings} --image {wildcards.name:q}"
        " --inputs {input:q} --outputs {output:q} 2> {log}"
