#!/bin/sh

for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done

if [ -n "${SINGULARITY_APPNAME:-}" ]; then
    if [ -x "/scif/apps/${SINGULARITY_APPNAME}/scif/test" ]; then
        exec "/scif/apps/${SINGULARITY_APPNAME}/scif/test" "$@"
    elif [ -x "/scif/apps/singularity/scif/test" ]; then
        exec "/scif/apps/singularity/scif/test" "$@"
    fi
    echo "No tests for contained app: ${SINGULARITY_APPNAME}"
    exit 1
elif [ -x "/.singularity.d/test" ]; then
    exec "/.singularity.d/test" "$@"
fi
echo "No test found in container, executing /bin/sh -c true"
exec /bin/sh -c true
