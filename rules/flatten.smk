rule flatten_image:
    input:
        layers=get_layers_of_flat,
        config=get_config_blob,
    output:
        marker=f"{WORK}/flats/{{hex}}.json",
    log:
        f"{WORK}/logs/flatten_image/{{hex}}.log",
    conda:
        "../envs/unpacked.yaml"
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
        image=get_config_owner,
    shell:
        "{params.unpacked} flatten --settings {params.settings} --image {params.image:q}"
        " --marker {output.marker} 2> {log}"
