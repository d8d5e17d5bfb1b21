rule flatten_image:
    input:
        layers=ancient(get_layers_of_flat),
        config=ancient(get_config_blob),
    output:
        marker=f"{WORK}/flats/{{hex}}.json",
    params:
        image=get_config_owner,
        work=WORK,
    log:
        f"{WORK}/logs/flatten_image/{{hex}}.log",
    shell:
        "unpacked flatten --work {params.work} --image {params.image:q}"
        " --marker {output.marker} 2> {log}"
