#!/bin/sh

for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done

if [ -n "${SINGULARITY_APPNAME:-}" ]; then
    if [ -x "/scif/apps/${SINGULARITY_APPNAME}/scif/runscript" ]; then
        exec "/scif/apps/${SINGULARITY_APPNAME}/scif/runscript" "$@"
    elif [ -x "/scif/apps/singularity/scif/runscript" ]; then
        exec "/scif/apps/singularity/scif/runscript" "$@"
    fi
    echo "No Apptainer runscript for contained app: ${SINGULARITY_APPNAME}"
    exit 1
elif [ -x "/.singularity.d/runscript" ]; then
    exec "/.singularity.d/runscript" "$@"
fi
echo "No Apptainer runscript found, executing /bin/sh"
exec /bin/sh "$@"
