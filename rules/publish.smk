rule publish_image:
    """Builds the image's flat tree unless an earlier job (for another tag) did, extracting the
    layers no other image uses, then publishes the name: one job per name (a job's process costs
    more than a small extraction and flatten)."""
    input:
        state=get_state_file,
        layers=get_layers,
        config=get_config_blob,
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
