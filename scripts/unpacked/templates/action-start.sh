#!/bin/sh

# The instance's PID 1 waits for this signal before it goes on: do not remove.
kill -CONT 1

for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done

if [ -x "/.singularity.d/startscript" ]; then
    exec "/.singularity.d/startscript"
fi
