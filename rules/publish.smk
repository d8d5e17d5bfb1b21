rule publish_image:
    input:
        settings=ancient(SETTINGS),
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
    shell:
        "{params.unpacked} publish --settings {input.settings} --image {wildcards.name:q}"
        " --marker {output.marker} 2> {log}"
