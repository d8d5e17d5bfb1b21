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
store), and image content is hostile. So this module (through `safefs`)
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
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import UnpackedError
from .safefs import lstat_at, make_free_dirs, open_dir, opened, own_dir, put_file
from .shellscript import env_script, runscript, static_scripts

SCRIPT_MODE = 0o755
FILE_MODE = 0o644

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

# Static scripts (relative to `.singularity.d`) are package data: see `shellscript.TEMPLATES`.


class SandboxError(UnpackedError):
    """The Apptainer files cannot be written into an image tree."""


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


def _put_etc_file(root_fd: int, name: str) -> None:
    """Leave an empty `etc/<name>` for Apptainer to bind over, unless the image has a symlink there.

    With `etc` or `etc/<name>` a symlink (or `etc` not a directory, or `etc/<name>` a directory) the
    path is left as it is: Apptainer binds over it anyway, and we never write through a link.
    """
    etc = open_dir(root_fd, "etc")
    if etc is None:
        return
    with opened(etc):
        st = lstat_at(etc, name)
        if st is not None and (stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return
        put_file(etc, name, b"", FILE_MODE)


def _make_symlink(root_fd: int, name: str, target: str) -> None:
    if lstat_at(root_fd, name) is not None:
        return
    with contextlib.suppress(FileExistsError):
        os.symlink(target, name, dir_fd=root_fd)


def _put_under(sing_fd: int, relpath: str, data: str, mode: int) -> None:
    """Write `relpath` (`name` or `subdir/name`) under the `.singularity.d` directory `sing_fd`."""
    subdir, _, name = relpath.rpartition("/")
    if not subdir:
        put_file(sing_fd, name, data.encode(), mode)
        return
    fd = own_dir(sing_fd, subdir)
    with opened(fd):
        put_file(fd, name, data.encode(), mode)


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
    files: dict[str, tuple[str, int]] = {relpath: (text, SCRIPT_MODE) for relpath, text in static_scripts().items()}
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
        with opened(root_fd):
            st = os.fstat(root_fd)
            if st.st_mode & 0o200 == 0:
                os.fchmod(root_fd, stat.S_IMODE(st.st_mode) | 0o200)
            step = "make .singularity.d"
            sing_fd = own_dir(root_fd, SINGULARITY_DIR)
            with opened(sing_fd):
                for sub in ("actions", "env"):
                    os.close(own_dir(sing_fd, sub))
                step = "make mount point .singularity.d/libs"
                make_free_dirs(sing_fd, "libs")
                for relpath in ROOT_MOUNT_POINTS:
                    # A symlink or file on the path is the image's own: Apptainer mounts over it.
                    step = f"make mount point {relpath}"
                    make_free_dirs(root_fd, relpath)
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
