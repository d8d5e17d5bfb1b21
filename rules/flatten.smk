rule flatten_image:
    input:
        layers=get_layers_of_flat,
        config=get_config_blob,
    output:
        marker=STORE.pattern("flat_marker"),
    log:
        STORE.pattern("log.flatten_image"),
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
        image=get_config_owner,
    shell:
        "{params.unpacked} flatten --settings {params.settings} --image {params.image:q}"
        " --inputs {input:q} --outputs {output:q} 2> {log}"
