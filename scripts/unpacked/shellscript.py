"""POSIX sh text for Apptainer sandboxes: quoting, the generated runscript and env script, and the
static scripts shipped as package data (`unpacked/templates/`).

Everything here is pure (text in, text out) apart from reading the templates. The text is sourced or
run by Apptainer's embedded POSIX shell interpreter, so it must stay plain POSIX sh.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib import resources

# The runtime looks for exactly this line: when the runscript holds it, Apptainer runs the whole
# script in its embedded shell interpreter, so `apptainer run` works in images without /bin/sh.
OCI_EVAL_LINE = 'eval "set ${SINGULARITY_OCI_RUN}"'

NOTHING_TO_RUN_MESSAGE = (
    "FATAL: this image defines neither ENTRYPOINT nor CMD, so there is nothing to run: "
    'give a command to "apptainer run", or use "apptainer exec"'
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Static scripts, relative to `.singularity.d`, and the template (in `unpacked/templates/`) that is
# written there byte for byte. Kept as files so they can be read, diffed and shellchecked as shell.
TEMPLATES: dict[str, str] = {
    "env/01-base.sh": "env-01-base.sh",
    "env/90-environment.sh": "env-90-environment.sh",
    "env/95-apps.sh": "env-95-apps.sh",
    "env/99-base.sh": "env-99-base.sh",
    "env/99-runtimevars.sh": "env-99-runtimevars.sh",
    "actions/exec": "action-exec.sh",
    "actions/run": "action-run.sh",
    "actions/shell": "action-shell.sh",
    "actions/start": "action-start.sh",
    "actions/test": "action-test.sh",
    "startscript": "startscript.sh",
}


@cache
def static_scripts() -> dict[str, str]:
    """The text of each static script, by its path relative to `.singularity.d` (read once).

    Read through `importlib.resources`, so it works from a wheel, an editable install or PYTHONPATH.
    Bytes are decoded as UTF-8 with newlines untouched: the files are written exactly as stored.
    """
    folder = resources.files("unpacked").joinpath("templates")
    return {relpath: folder.joinpath(name).read_bytes().decode() for relpath, name in TEMPLATES.items()}


def shell_escape(value: str) -> str:
    r"""Escape `value` for use inside double quotes in POSIX sh.

    `\` becomes `\\`, then `"` becomes `\"`, backquote becomes \`, and `$` becomes `\$`: the
    same as Apptainer's `shell.Escape`. Newlines need no escape inside double quotes.
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")


def single_quote(value: str) -> str:
    """Quote `value` in single quotes for POSIX sh; a `'` inside becomes `'"'"'`."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def quote_args(args: Sequence[str]) -> str:
    """Each argument double-quoted with `shell_escape`, separated by single spaces.

    This is the text of `OCI_ENTRYPOINT` and `OCI_CMD` in the runscript: `eval "set ..."` turns it
    back into the original argument list.
    """
    return " ".join(f'"{shell_escape(arg)}"' for arg in args)


def env_script(env: Sequence[str]) -> str:
    """The text of `.singularity.d/env/10-docker2singularity.sh` for an image's `Env` list.

    One line per entry, in order, after `#!/bin/sh`. An entry is split at its first `=`; entries whose
    name is not a shell identifier are skipped (sh could not source them). `PATH` is always set; any
    other variable only as a default, so that a non-empty value from the host wins (`${NAME:-...}`,
    like Apptainer: a host value that is set but empty counts as unset). An entry without `=` keeps
    the host value, or exports an empty variable.
    """
    lines = ["#!/bin/sh"]
    for entry in env:
        name, sep, value = entry.partition("=")
        if not _ENV_NAME.fullmatch(name):
            continue
        if not sep:
            lines.append(f'export {name}="${{{name}:-}}"')
        elif name == "PATH":
            lines.append(f'export PATH="{shell_escape(value)}"')
        else:
            lines.append(f'export {name}="${{{name}:-"{shell_escape(value)}"}}"')
    return "\n".join(lines) + "\n"


def _prepend(args: Sequence[str], indent: str) -> list[str]:
    """Lines that put `args` in front of "$@" (last argument first), for the no-eval runscript."""
    return [f'{indent}set -- {single_quote(arg)} "$@"' for arg in reversed(args)]


def runscript(entrypoint: Sequence[str] | None, cmd: Sequence[str] | None) -> str:
    """The text of `.singularity.d/runscript` for an image's ENTRYPOINT and CMD.

    Behaves like the runscript of current Apptainer (`conveyorPacker_oci.go`): arguments given to
    `apptainer run` replace CMD, not ENTRYPOINT. By default the resolved command line is evaluated by
    the shell (`eval "set ${SINGULARITY_OCI_RUN}"`, the line the runtime looks for); with
    `SINGULARITY_NO_EVAL` or `APPTAINER_NO_EVAL` set, the arguments are executed as given. Two
    additions: `APPTAINER_NO_EVAL` is honoured as well, and with neither ENTRYPOINT nor CMD nor
    arguments the script fails with `NOTHING_TO_RUN_MESSAGE` instead of exiting 0 without running
    anything.
    """
    entrypoint = list(entrypoint or [])
    cmd = list(cmd or [])
    out = [
        "#!/bin/sh",
        f"OCI_ENTRYPOINT={single_quote(quote_args(entrypoint))}",
        f"OCI_CMD={single_quote(quote_args(cmd))}",
        "",
        "# Neither ENTRYPOINT nor CMD nor arguments: say so, rather than exit 0 having run nothing.",
        'if [ -z "$OCI_ENTRYPOINT" ] && [ -z "$OCI_CMD" ] && [ $# -eq 0 ]; then',
        f"    echo {single_quote(NOTHING_TO_RUN_MESSAGE)} 1>&2",
        "    exit 1",
        "fi",
        "",
        "# When SINGULARITY_NO_EVAL (or APPTAINER_NO_EVAL) is set, use OCI compatible behavior that",
        "# does not evaluate resolved CMD / ENTRYPOINT / ARGS through the shell, and does not modify",
        "# expected quoting behavior of args.",
        'if [ -n "${SINGULARITY_NO_EVAL:-}" ] || [ -n "${APPTAINER_NO_EVAL:-}" ]; then',
        "    # ENTRYPOINT only - run entrypoint plus args",
        '    if [ -z "$OCI_CMD" ] && [ -n "$OCI_ENTRYPOINT" ]; then',
        *_prepend(entrypoint, "        "),
        '        exec "$@"',
        "    fi",
        "",
        "    # CMD only - run CMD or override with args",
        '    if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then',
    ]
    if cmd:
        out += ["        if [ $# -eq 0 ]; then", *_prepend(cmd, "            "), "        fi"]
    out += [
        '        exec "$@"',
        "    fi",
        "",
        "    # ENTRYPOINT and CMD - run ENTRYPOINT with CMD as default args",
        "    # override with user provided args",
    ]
    if entrypoint:
        out += [
            "    if [ $# -gt 0 ]; then",
            *_prepend(entrypoint, "        "),
            "    else",
            *_prepend(cmd, "        "),
            *_prepend(entrypoint, "        "),
            "    fi",
        ]
    elif cmd:
        out += ["    if [ $# -eq 0 ]; then", *_prepend(cmd, "        "), "    fi"]
    out += [
        '    exec "$@"',
        "fi",
        "",
        "# Standard Apptainer behavior evaluates CMD / ENTRYPOINT / ARGS",
        "# combination through shell before exec, and requires special quoting",
        "# due to concatenation of CMDLINE_ARGS.",
        'CMDLINE_ARGS=""',
        "# prepare command line arguments for evaluation",
        'for arg in "$@"; do',
        '    CMDLINE_ARGS="${CMDLINE_ARGS} \\"$arg\\""',
        "done",
        "",
        "# ENTRYPOINT only - run entrypoint plus args",
        'if [ -z "$OCI_CMD" ] && [ -n "$OCI_ENTRYPOINT" ]; then',
        "    if [ $# -gt 0 ]; then",
        '        SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${CMDLINE_ARGS}"',
        "    else",
        '        SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT}"',
        "    fi",
        "fi",
        "",
        "# CMD only - run CMD or override with args",
        'if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then',
        "    if [ $# -gt 0 ]; then",
        '        SINGULARITY_OCI_RUN="${CMDLINE_ARGS}"',
        "    else",
        '        SINGULARITY_OCI_RUN="${OCI_CMD}"',
        "    fi",
        "fi",
        "",
        "# ENTRYPOINT and CMD - run ENTRYPOINT with CMD as default args",
        "# override with user provided args",
        "if [ $# -gt 0 ]; then",
        '    SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${CMDLINE_ARGS}"',
        "else",
        '    SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${OCI_CMD}"',
        "fi",
        "",
        "# Evaluate shell expressions first and set arguments accordingly,",
        "# then execute final command as first container process",
        OCI_EVAL_LINE,
        'exec "$@"',
    ]
    return "\n".join(out) + "\n"
