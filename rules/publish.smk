rule publish_image:
    input:
        state=get_state_file,
        flat=get_flat_marker,
    output:
        marker=f"{WORK}/published/{{name}}.json",
    log:
        f"{WORK}/logs/publish_image/{{name}}.log",
    conda:
        "../envs/unpacked.yaml"
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
    shell:
        "{params.unpacked} publish --settings {params.settings} --image {wildcards.name:q}"
        " --marker {output.marker} 2> {log}"
