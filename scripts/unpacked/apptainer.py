"""Apptainer sandbox files: what turns a flat image tree into a sandbox `apptainer run` understands.

Apptainer runs any directory as a "sandbox" image, but the image's ENV, ENTRYPOINT/CMD and labels only
take effect through files under `/.singularity.d`. `write_sandbox_files` writes them the way
`apptainer build --sandbox DIR docker://...` does (spec: Apptainer's
`internal/pkg/build/sources/conveyorPacker_oci.go` and `base_environment.go`):

- mount points (`dev`, `proc`, `etc`, ... and `.singularity.d/{libs,actions,env}`), created only where
  nothing, not even a dangling symlink, exists;
- the root symlinks `singularity`, `.run`, `.exec`, `.shell`, `.test` and `environment`;
- empty `etc/hosts` and `etc/resolv.conf`, which Apptainer binds the host's files over;
- `.singularity.d/env/*.sh`, with `10-docker2singularity.sh` holding the image's ENV;
- `.singularity.d/runscript` from ENTRYPOINT/CMD, `startscript` and `actions/*`;
- `.singularity.d/labels.json`.

Safety contract. The tree is built of hard links shared with other images (the extracted layer
store), and image content is hostile. So this module
- never opens an existing file for writing, nor chmods one: every file is written under a temporary
  name in its directory and renamed over the target, which leaves the shared inode untouched;
- never follows a symlink inside the image: every path is walked one component at a time with
  `O_NOFOLLOW` and `dir_fd`-relative calls. Where the image has a symlink (absolute or relative) on a
  path we would write to, we either leave the path alone (mount points, root symlinks, `etc/hosts`,
  `etc/resolv.conf`: Apptainer binds over them anyway) or, inside `.singularity.d`, which Apptainer
  owns, replace the symlink or non-directory with a real directory.
Files that already hold exactly the wanted content and mode are left as they are, so a second run
changes nothing (and keeps mtimes). On failure, files already replaced stay replaced; no temporary file
is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from unpacked.errors import UnpackedError

SCRIPT_MODE = 0o755
FILE_MODE = 0o644
DIR_MODE = 0o755

SINGULARITY_DIR = ".singularity.d"

# Mount points at the image root, created only if nothing exists at the path. Without them Apptainer
# needs overlay/underlay support, which FUSE file systems such as CVMFS do not give.
ROOT_MOUNT_POINTS = ("dev", "proc", "root", "var/tmp", "tmp", "etc", "sys", "home")

# Symlinks at the image root, created only if nothing exists at the path.
ROOT_SYMLINKS = {
    "singularity": ".singularity.d/runscript",
    ".run": ".singularity.d/actions/run",
    ".exec": ".singularity.d/actions/exec",
    ".shell": ".singularity.d/actions/shell",
    ".test": ".singularity.d/actions/test",
    "environment": ".singularity.d/env/90-environment.sh",
}

# Files Apptainer binds the host's copies over; we only make sure an empty file is there.
ETC_BIND_TARGETS = ("hosts", "resolv.conf")

# The runtime looks for exactly this line: when the runscript holds it, Apptainer runs the whole
# script in its embedded shell interpreter, so `apptainer run` works in images without /bin/sh.
OCI_EVAL_LINE = 'eval "set ${SINGULARITY_OCI_RUN}"'

NOTHING_TO_RUN_MESSAGE = (
    "FATAL: this image defines neither ENTRYPOINT nor CMD, so there is nothing to run: "
    'give a command to "apptainer run", or use "apptainer exec"'
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_SOURCE_ENV = """\
for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
"""

_ENV_BASE = """\
#!/bin/sh
# Base environment of the container: nothing to set here.
"""

_ENV_CUSTOM = """\
#!/bin/sh
# Custom environment shell code should follow

"""

_ENV_APPS = """\
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
"""

_ENV_BASE_LATE = """\
#!/bin/sh
# Libraries Apptainer binds into /.singularity.d/libs (GPU drivers and the like) come last.

if [ -z "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH="/.singularity.d/libs"
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi

if [ -z "${PS1:-}" ]; then
    PS1="Apptainer> "
fi
export LD_LIBRARY_PATH PS1
"""

_ENV_RUNTIME_VARS = """\
#!/bin/sh
# PATH changes asked for on the command line (--env PREPEND_PATH/APPEND_PATH/PATH) win over the image.

if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
    PATH="${SING_USER_DEFINED_PREPEND_PATH}:${PATH}"
fi

if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
    PATH="${PATH}:${SING_USER_DEFINED_APPEND_PATH}"
fi

if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
    PATH="${SING_USER_DEFINED_PATH}"
fi

unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
"""

_ACTION_EXEC = f"""\
#!/bin/sh

{_SOURCE_ENV}
exec "$@"
"""

_ACTION_RUN = f"""\
#!/bin/sh

{_SOURCE_ENV}
if [ -n "${{SINGULARITY_APPNAME:-}}" ]; then
    if [ -x "/scif/apps/${{SINGULARITY_APPNAME}}/scif/runscript" ]; then
        exec "/scif/apps/${{SINGULARITY_APPNAME}}/scif/runscript" "$@"
    elif [ -x "/scif/apps/singularity/scif/runscript" ]; then
        exec "/scif/apps/singularity/scif/runscript" "$@"
    fi
    echo "No Apptainer runscript for contained app: ${{SINGULARITY_APPNAME}}"
    exit 1
elif [ -x "/.singularity.d/runscript" ]; then
    exec "/.singularity.d/runscript" "$@"
fi
echo "No Apptainer runscript found, executing /bin/sh"
exec /bin/sh "$@"
"""

_ACTION_SHELL = f"""\
#!/bin/sh

{_SOURCE_ENV}
if [ -n "${{SINGULARITY_SHELL:-}}" ] && [ -x "$SINGULARITY_SHELL" ]; then
    exec $SINGULARITY_SHELL "$@"
    echo "ERROR: Failed running shell as defined by '\\$SINGULARITY_SHELL'" 1>&2
    exit 1
elif [ -x /bin/bash ]; then
    SHELL=/bin/bash
    PS1="Apptainer ${{APPTAINER_NAME:-}}:\\\\w> "
    export SHELL PS1
    exec /bin/bash --norc "$@"
elif [ -x /bin/sh ]; then
    SHELL=/bin/sh
    export SHELL
    exec /bin/sh "$@"
fi
echo "ERROR: /bin/sh does not exist in container" 1>&2
exit 1
"""

_ACTION_START = f"""\
#!/bin/sh

# The instance's PID 1 waits for this signal before it goes on: do not remove.
kill -CONT 1

{_SOURCE_ENV}
if [ -x "/.singularity.d/startscript" ]; then
    exec "/.singularity.d/startscript"
fi
"""

_ACTION_TEST = f"""\
#!/bin/sh

{_SOURCE_ENV}
if [ -n "${{SINGULARITY_APPNAME:-}}" ]; then
    if [ -x "/scif/apps/${{SINGULARITY_APPNAME}}/scif/test" ]; then
        exec "/scif/apps/${{SINGULARITY_APPNAME}}/scif/test" "$@"
    elif [ -x "/scif/apps/singularity/scif/test" ]; then
        exec "/scif/apps/singularity/scif/test" "$@"
    fi
    echo "No tests for contained app: ${{SINGULARITY_APPNAME}}"
    exit 1
elif [ -x "/.singularity.d/test" ]; then
    exec "/.singularity.d/test" "$@"
fi
echo "No test found in container, executing /bin/sh -c true"
exec /bin/sh -c true
"""

_STARTSCRIPT = "#!/bin/sh\n"

# Static scripts, relative to `.singularity.d`; all are sourced or run by Apptainer's embedded POSIX
# shell interpreter, so they must stay plain POSIX sh.
STATIC_SCRIPTS: dict[str, str] = {
    "env/01-base.sh": _ENV_BASE,
    "env/90-environment.sh": _ENV_CUSTOM,
    "env/95-apps.sh": _ENV_APPS,
    "env/99-base.sh": _ENV_BASE_LATE,
    "env/99-runtimevars.sh": _ENV_RUNTIME_VARS,
    "actions/exec": _ACTION_EXEC,
    "actions/run": _ACTION_RUN,
    "actions/shell": _ACTION_SHELL,
    "actions/start": _ACTION_START,
    "actions/test": _ACTION_TEST,
    "startscript": _STARTSCRIPT,
}


class SandboxError(UnpackedError):
    """The Apptainer files cannot be written into an image tree."""


# --------------------------------------------------------------------------- shell text


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


# --------------------------------------------------------------------------- labels


def base_image_labels(name: str, digest: str | None = None) -> dict[str, str]:
    """Labels naming the registry image a tree was unpacked from, for `write_sandbox_files`.

    `org.opencontainers.image.base.*` are the OCI annotations for a base image; the
    `org.label-schema.usage.singularity.deffile.*` pair is what `apptainer build docker://NAME` records.
    """
    labels = {
        "org.opencontainers.image.base.name": name,
        "org.label-schema.usage.singularity.deffile.bootstrap": "docker",
        "org.label-schema.usage.singularity.deffile.from": name,
    }
    if digest:
        labels["org.opencontainers.image.base.digest"] = digest
    return labels


def sandbox_labels(config: Mapping[str, Any], extra_labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels of `labels.json`: the image's, then Apptainer's build labels, then `extra_labels`.

    Later sources win, as in Apptainer, whose build labels overwrite the image's. Only build labels
    that do not change from one run to the next are added (no build date, no Apptainer version).
    """
    labels = dict(_image_labels(config))
    labels["org.label-schema.schema-version"] = "1.0"
    arch = config.get("architecture")
    if isinstance(arch, str) and arch:
        labels["org.label-schema.build-arch"] = arch
    if extra_labels:
        labels.update(extra_labels)
    return labels


def labels_json(labels: Mapping[str, str]) -> str:
    """`labels` as Apptainer writes `labels.json`: tab-indented, keys sorted, no final newline."""
    return json.dumps(dict(labels), indent="\t", sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------- image config


def _container_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = config.get("config")
    if inner is None:
        return {}
    if not isinstance(inner, Mapping):
        msg = f"image config: 'config' is a {type(inner).__name__}, not an object"
        raise SandboxError(msg)
    return inner


def _string_list(config: Mapping[str, Any], key: str) -> list[str] | None:
    value = _container_config(config).get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        msg = f"image config: config.{key} is not a list of strings"
        raise SandboxError(msg)
    return value


def _image_labels(config: Mapping[str, Any]) -> dict[str, str]:
    value = _container_config(config).get("Labels")
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        msg = "image config: config.Labels is not a map of strings"
        raise SandboxError(msg)
    return dict(value)


# --------------------------------------------------------------------------- file system

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _open_dir(dir_fd: int, name: str) -> int | None:
    """Open the real directory `name` under `dir_fd`; None if it is missing, a symlink or a file."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def _mkdir(dir_fd: int, name: str) -> None:
    """Create directory `name` with mode 0755 whatever the umask; an existing entry is left alone."""
    try:
        os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
    except FileExistsError:
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    with _opened(fd):
        os.fchmod(fd, DIR_MODE)


def _ensure_mount_point(root_fd: int, relpath: str) -> None:
    """Create the directories of `relpath` where nothing exists; stop at the first non-directory.

    A symlink (or file) anywhere on the path means the image has something there: Apptainer can
    mount over it, and we must not create directories through it.
    """
    fd = os.dup(root_fd)
    try:
        for name in relpath.split("/"):
            if _lstat(fd, name) is None:
                _mkdir(fd, name)
            child = _open_dir(fd, name)
            if child is None:
                return
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def _ensure_owned_dir(dir_fd: int, name: str) -> int:
    """Open `name` as a real directory we can write into and return its fd.

    For directories that belong to Apptainer (`.singularity.d` and the ones we write into): a symlink
    or any other non-directory there is removed (never followed) and a real directory made instead.
    """
    st = _lstat(dir_fd, name)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        st = None
    if st is None:
        _mkdir(dir_fd, name)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    st = os.fstat(fd)
    if st.st_mode & 0o700 != 0o700:
        # A directory is never hard-linked: changing its mode touches this tree only.
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
    return fd


def _holds(dir_fd: int, name: str, st: os.stat_result, data: bytes, mode: int) -> bool:
    """Whether the regular file `name` (lstat `st`) already has exactly `data` and `mode`."""
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
        return False
    if st.st_size != len(data):
        return False
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(len(data) + 1) == data


def _put_file(dir_fd: int, name: str, data: bytes, mode: int) -> bool:
    """Make `name` under `dir_fd` a regular file with `data` and `mode`; True if it was written.

    The new file is created under a temporary name and renamed over `name`, so an existing file,
    possibly a hard link shared with other images, or a symlink, is replaced and never written into.
    A directory in the way is removed first.
    """
    st = _lstat(dir_fd, name)
    if st is not None:
        if _holds(dir_fd, name, st, data, mode):
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return True


def _put_etc_file(root_fd: int, name: str) -> None:
    """Leave an empty `etc/<name>` for Apptainer to bind over, unless the image has a symlink there.

    With `etc` or `etc/<name>` a symlink (or `etc` not a directory, or `etc/<name>` a directory) the
    path is left as it is: Apptainer binds over it anyway, and we never write through a link.
    """
    etc = _open_dir(root_fd, "etc")
    if etc is None:
        return
    with _opened(etc):
        st = _lstat(etc, name)
        if st is not None and (stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return
        _put_file(etc, name, b"", FILE_MODE)


def _make_symlink(root_fd: int, name: str, target: str) -> None:
    if _lstat(root_fd, name) is not None:
        return
    with contextlib.suppress(FileExistsError):
        os.symlink(target, name, dir_fd=root_fd)


def _put_under(sing_fd: int, relpath: str, data: str, mode: int) -> None:
    """Write `relpath` (`name` or `subdir/name`) under the `.singularity.d` directory `sing_fd`."""
    subdir, _, name = relpath.rpartition("/")
    if not subdir:
        _put_file(sing_fd, name, data.encode(), mode)
        return
    fd = _ensure_owned_dir(sing_fd, subdir)
    with _opened(fd):
        _put_file(fd, name, data.encode(), mode)


def write_sandbox_files(
    root: Path, config: Mapping[str, Any], *, extra_labels: Mapping[str, str] | None = None
) -> None:
    """Write everything Apptainer needs to run the flat image tree `root` as a sandbox.

    `config` is the parsed OCI/Docker image config (`config.Env`, `config.Entrypoint`, `config.Cmd`,
    `config.Labels`, `architecture`, ...; any of them may be missing or null). `extra_labels` (see
    `base_image_labels`) are added to `labels.json` last. See the module doc for what is written and
    for the safety contract: nothing shared with other images is modified, no symlink is followed.

    Raises SandboxError if the config is malformed or a file cannot be written.
    """
    env = _string_list(config, "Env") or []
    entrypoint = _string_list(config, "Entrypoint")
    cmd = _string_list(config, "Cmd")
    labels = sandbox_labels(config, extra_labels)
    files: dict[str, tuple[str, int]] = {relpath: (text, SCRIPT_MODE) for relpath, text in STATIC_SCRIPTS.items()}
    files["env/10-docker2singularity.sh"] = (env_script(env), SCRIPT_MODE)
    files["runscript"] = (runscript(entrypoint, cmd), SCRIPT_MODE)
    files["labels.json"] = (labels_json(labels), FILE_MODE)

    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        msg = f"write apptainer files: {root}: {err.strerror}"
        raise SandboxError(msg) from err
    step = "open"
    try:
        with _opened(root_fd):
            st = os.fstat(root_fd)
            if st.st_mode & 0o200 == 0:
                os.fchmod(root_fd, stat.S_IMODE(st.st_mode) | 0o200)
            step = "make .singularity.d"
            sing_fd = _ensure_owned_dir(root_fd, SINGULARITY_DIR)
            with _opened(sing_fd):
                for sub in ("actions", "env"):
                    os.close(_ensure_owned_dir(sing_fd, sub))
                step = "make mount point .singularity.d/libs"
                _ensure_mount_point(sing_fd, "libs")
                for relpath in ROOT_MOUNT_POINTS:
                    step = f"make mount point {relpath}"
                    _ensure_mount_point(root_fd, relpath)
                for name, target in ROOT_SYMLINKS.items():
                    step = f"make symlink {name}"
                    _make_symlink(root_fd, name, target)
                for name in ETC_BIND_TARGETS:
                    step = f"write etc/{name}"
                    _put_etc_file(root_fd, name)
                for relpath, (text, mode) in files.items():
                    step = f"write {SINGULARITY_DIR}/{relpath}"
                    _put_under(sing_fd, relpath, text, mode)
    except OSError as err:
        msg = f"write apptainer files: {root}: {step}: {err}"
        raise SandboxError(msg) from err
