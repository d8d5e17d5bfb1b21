rule publish_image:
    """Publishes every name of one flat image (the tags of an image share it): builds the flat tree
    unless it is built, extracting the layers no other image uses, then links each name that is
    not published as it resolves now. One job per image, not per name: a job's process costs more
    than a small extraction, and Snakemake's scheduling grows with the square of the ready jobs.
    Its names come from one file (state/flats/<hex>.json), rewritten when one is added, leaves or
    moves: the command line does not grow with thousands of tags of one image."""
    input:
        layers=get_layers,
        config=get_config_blob,
        names=get_flat_names,
    output:
        marker=STORE.pattern("flat_published"),
    log:
        STORE.pattern("log.publish_image"),
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
        names=get_publishing,
        only=get_only_option,
    message:
        "publish_image sha256:{wildcards.hex}: {params.names}"
    shell:
        "{params.unpacked} publish --settings {params.settings} --flat sha256:{wildcards.hex}"
        " --inputs {input:q} --outputs {output:q}{params.only} 2> {log}"


rule publish_batch:
    """Publishes several small flat images (limits.images_per_job, small_image_bytes), as their
    own publish_image jobs would, one after the other in one process: their imports and
    Snakemake's scheduling are paid once. Each image keeps its own failure record; one that fails
    stops no other, and the next run forms a new job for what is left. Which images a batch holds,
    with the inputs of each, is a state file written before the DAG (state/batches/<hex>.json).
    """
    input:
        get_batch_inputs,
    output:
        marker=STORE.pattern("batch_published"),
    log:
        STORE.pattern("log.publish_batch"),
    params:
        unpacked=UNPACKED,
        settings=SETTINGS,
        names=get_batch_publishing,
    message:
        "publish_batch sha256:{wildcards.hex}: {params.names}"
    shell:
        "{params.unpacked} publish --settings {params.settings} --batch sha256:{wildcards.hex}"
        " --outputs {output:q} 2> {log}"
