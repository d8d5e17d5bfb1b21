rule publish_image:
    input:
        state=get_state_file,
        flat=ancient(get_flat_marker),
    output:
        marker=f"{WORK}/published/{{name}}.json",
    params:
        work=WORK,
    log:
        f"{WORK}/logs/publish_image/{{name}}.log",
    shell:
        "unpacked publish --work {params.work} --image {wildcards.name:q}"
        " --marker {output.marker} 2> {log}"
