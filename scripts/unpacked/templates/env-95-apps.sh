#!/bin/sh
# SCIF apps: with SINGULARITY_APPNAME set, put the app's directories first in PATH and
# LD_LIBRARY_PATH and source the app's own environment.

if [ -n "${SINGULARITY_APPNAME:-}" ]; then
    export SINGULARITY_APPNAME
    if [ ! -d "/scif/apps/${SINGULARITY_APPNAME}/" ]; then
        echo "Could not locate the container application: ${SINGULARITY_APPNAME}"
        exit 1
    fi
    SCIF_APPS="/scif/apps"
    SCIF_APPROOT="/scif/apps/${SINGULARITY_APPNAME}"
    export SCIF_APPROOT SCIF_APPS
    PATH="${SCIF_APPROOT}:/scif/apps/singularity:$PATH"
    if [ -d "${SCIF_APPROOT}/bin" ]; then
        PATH="${SCIF_APPROOT}/bin:$PATH"
    elif [ -d "/scif/apps/singularity/bin" ]; then
        PATH="/scif/apps/singularity/bin:$PATH"
    fi
    if [ -d "${SCIF_APPROOT}/lib" ]; then
        LD_LIBRARY_PATH="${SCIF_APPROOT}/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    elif [ -d "/scif/apps/singularity/lib" ]; then
        LD_LIBRARY_PATH="/scif/apps/singularity/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
    if [ -f "${SCIF_APPROOT}/scif/env/01-base.sh" ]; then
        . "${SCIF_APPROOT}/scif/env/01-base.sh"
    elif [ -f "/scif/apps/singularity/scif/env/01-base.sh" ]; then
        . "/scif/apps/singularity/scif/env/01-base.sh"
    fi
    if [ -f "${SCIF_APPROOT}/scif/env/90-environment.sh" ]; then
        . "${SCIF_APPROOT}/scif/env/90-environment.sh"
    elif [ -f "/scif/apps/singularity/scif/env/90-environment.sh" ]; then
        . "/scif/apps/singularity/scif/env/90-environment.sh"
    fi
    export PATH
fi
