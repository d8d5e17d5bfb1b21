"""Real images made with the real tools (umoci builds an OCI layout, skopeo pushes it).

These layers are what real-world tooling produces (umoci's tars lack the two end blocks, skopeo
recompresses), which hand-built layers in `oci.py` cannot vouch for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .registry import LocalRegistry, require_binary

LayerStep = Callable[[Path], None]  # modifies the rootfs directory; one call = one layer

BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "env", "id", "true", "false", "stat", "readlink")


def _run(args: Sequence[str]) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def umoci() -> str:
    return require_binary("umoci", "umoci")


def skopeo() -> str:
    return require_binary("skopeo", "skopeo")


def build_layout(
    layout: Path,
    steps: Sequence[LayerStep],
    *,
    tag: str = "latest",
    env: Sequence[str] = (),
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    workdir: str | None = None,
    labels: dict[str, str] | None = None,
    architecture: str | None = None,
) -> Path:
    """Build `layout:tag` with one layer per step; the layout may already hold other tags.

    Returns the layout path. The bundle used for repacking is created next to the layout.
    """
    tool = umoci()
    if not (layout / "index.json").exists():
        _run([tool, "init", "--layout", str(layout)])
    image = f"{layout}:{tag}"
    _run([tool, "new", "--image", image])
    bundle = layout.parent / f"{layout.name}.bundle-{tag}"
    # Unprivileged umoci cannot chown; --rootless maps everything to the calling user.
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    _run([tool, "unpack", *rootless, "--image", image, str(bundle)])
    for step in steps:
        step(bundle / "rootfs")
        # --refresh-bundle: without it the next repack would REPLACE this layer, not add one.
        _run([tool, "repack", "--refresh-bundle", "--image", image, str(bundle)])
    shutil.rmtree(bundle, ignore_errors=True)

    config: list[str] = [f"--config.env={e}" for e in env]
    if entrypoint is not None:
        config += ["--clear=config.entrypoint"] + [f"--config.entrypoint={a}" for a in entrypoint]
    if cmd is not None:
        config += ["--clear=config.cmd"] + [f"--config.cmd={a}" for a in cmd]
    if workdir is not None:
        config.append(f"--config.workingdir={workdir}")
    config += [f"--config.label={k}={v}" for k, v in (labels or {}).items()]
    if architecture is not None:
        config.append(f"--architecture={architecture}")
    if config:
        _run([tool, "config", "--image", image, *config])
    return layout


def add_layout_index(layout: Path, tag: str, children: dict[str, dict[str, str]]) -> str:
    """Write an OCI index over existing `child tag -> platform` images as `layout:tag`.

    umoci cannot write an index itself; skopeo `copy --all` pushes the result. Returns its digest.
    """
    index_path = layout / "index.json"
    top = json.loads(index_path.read_text())
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in top["manifests"]}
    manifests = []
    for child, platform in children.items():
        desc = {k: v for k, v in by_tag[child].items() if k != "annotations"}
        manifests.append(desc | {"platform": platform})
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }
    ).encode()
    hexdigest = hashlib.sha256(body).hexdigest()
    (layout / "blobs" / "sha256" / hexdigest).write_bytes(body)
    top["manifests"] = [m for m in top["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] != tag]
    top["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": f"sha256:{hexdigest}",
            "size": len(body),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    index_path.write_text(json.dumps(top))
    return f"sha256:{hexdigest}"


def skopeo_push(
    layout: Path,
    tag: str,
    registry: LocalRegistry,
    repo: str,
    dest_tag: str | None = None,
    *,
    all: bool = False,
    format: str | None = None,
    extra: Sequence[str] = (),
) -> str:
    """`skopeo copy oci:LAYOUT:TAG docker://HOST/REPO:TAG`; returns the pushed manifest digest.

    format="v2s2" converts to Docker media types (and an index to a Docker manifest list).
    """
    tool = skopeo()
    digest_file = layout.parent / f".{layout.name}-{tag}.digest"
    args = [tool, "copy", "--quiet", "--dest-tls-verify=false", f"--digestfile={digest_file}"]
    if registry.username is not None and registry.password is not None:
        args.append(f"--dest-creds={registry.username}:{registry.password}")
    if all:
        args.append("--all")
    if format is not None:
        args.append(f"--format={format}")
    args += [*extra, f"oci:{layout}:{tag}", f"docker://{registry.host}/{repo}:{dest_tag or tag}"]
    _run(args)
    digest = digest_file.read_text().strip()
    digest_file.unlink()
    return digest


def build_and_push(
    registry: LocalRegistry,
    repo: str,
    tag: str,
    steps: Sequence[LayerStep],
    workdir: Path,
    **config: Any,
) -> str:
    """Build a multi-layer image under `workdir` with umoci and push it; returns its digest."""
    layout = workdir / "layout"
    build_layout(layout, steps, tag=tag, **config)
    return skopeo_push(layout, tag, registry, repo)


# ---------------------------------------------------------------------------------------------
# A minimal rootfs with a static shell
# ---------------------------------------------------------------------------------------------


def _is_static_elf(path: Path) -> bool:
    """True if the ELF file has no PT_INTERP program header (no dynamic loader needed)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only; Debian's amd64/arm64 builds
        return False
    end = "<" if data[5] == 1 else ">"
    phoff = struct.unpack_from(end + "Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(end + "I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def static_busybox() -> Path:
    """Path of a statically linked busybox, or an error with the install hint."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    raise RuntimeError("a statically linked busybox is needed: apt-get install -y busybox-static")


def make_busybox_rootfs(rootfs: Path, applets: Sequence[str] = BUSYBOX_APPLETS) -> Path:
    """Fill `rootfs` with /bin/busybox, applet symlinks and the usual top-level dirs."""
    busybox = static_busybox()
    for d in ("bin", "etc", "tmp", "proc", "dev", "sys", "root"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for applet in applets:
        link = rootfs / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    return rootfs
