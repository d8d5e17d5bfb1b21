"""Layer extraction and flattening on real tar layers, without a registry.

Each case builds layers byte by byte, extracts them with the package's extractor (diff_id checked)
and flattens them, then asserts on the resulting tree.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from unpacked.errors import LayerError
from unpacked.extract import extract_layer, read_layer_index
from unpacked.store import Store

from support import oci
from support.unpack import unpack

CONFIG = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}}


def build(tmp_path: Path, layers: list[bytes], compression: oci.Compression = "gzip") -> Path:
    """Fetch, extract and flatten `layers` (uncompressed tars) with the core API; the flat tree."""
    image = oci.build_image(layers, compression, config=CONFIG["config"])
    return unpack(Store(tmp_path / "work", tmp_path / "root"), image)


def listing(flat: Path) -> set[str]:
    skip = {".singularity.d", "singularity", "environment", ".run", ".exec", ".test", ".shell"}
    found = set()
    for path in flat.rglob("*"):
        rel = path.relative_to(flat)
        if rel.parts[0] in skip or str(rel) in ("etc/hosts", "etc/resolv.conf"):
            continue
        if rel.parts[0] in ("dev", "proc", "root", "var", "tmp", "sys", "home") and path.is_dir():
            continue
        found.add(str(rel) + ("/" if path.is_dir() and not path.is_symlink() else ""))
    return found


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_compressions_detected_by_magic_bytes(tmp_path: Path, compression: oci.Compression) -> None:
    flat = build(tmp_path, [oci.TarLayer().add_file("etc/a", b"A").tar_bytes()], compression)
    assert (flat / "etc/a").read_bytes() == b"A"


def test_whiteout_deletes_lower_file_but_never_same_layer(tmp_path: Path) -> None:
    lower = oci.TarLayer().add_file("a/x", b"lower").add_file("a/y", b"y").tar_bytes()
    # Same layer writes a/x and whites it out, in both orders: the file of THIS layer survives.
    upper = oci.TarLayer().add_whiteout("a/x").add_file("a/x", b"upper").add_file("a/z", b"z").add_whiteout("a/z")
    flat = build(tmp_path, [lower, upper.tar_bytes()])
    assert (flat / "a/x").read_bytes() == b"upper"
    assert (flat / "a/z").read_bytes() == b"z"
    assert (flat / "a/y").read_bytes() == b"y"


def test_opaque_marker_hides_lower_children_wherever_it_stands(tmp_path: Path) -> None:
    lower = oci.TarLayer().add_dir("d").add_file("d/old", b"old").add_dir("d/sub").add_file("d/sub/f", b"f")
    upper = oci.TarLayer().add_dir("d").add_file("d/new", b"new").add_opaque("d")
    flat = build(tmp_path, [lower.tar_bytes(), upper.tar_bytes()])
    assert sorted(os.listdir(flat / "d")) == ["new"]


def test_directory_and_file_replace_each_other(tmp_path: Path) -> None:
    first = oci.TarLayer().add_dir("x").add_file("x/inner", b"i").add_file("y", b"file")
    second = oci.TarLayer().add_file("x", b"now a file").add_dir("y").add_file("y/z", b"z")
    flat = build(tmp_path, [first.tar_bytes(), second.tar_bytes()])
    assert (flat / "x").read_bytes() == b"now a file"
    assert (flat / "y/z").read_bytes() == b"z"


def test_usrmerge_symlink_replaced_by_directory(tmp_path: Path) -> None:
    first = oci.TarLayer().add_dir("usr").add_dir("usr/lib").add_file("usr/lib/a", b"a").add_symlink("lib", "usr/lib")
    second = oci.TarLayer().add_dir("lib").add_file("lib/b", b"b")
    flat = build(tmp_path, [first.tar_bytes(), second.tar_bytes()])
    assert (flat / "lib").is_dir() and not (flat / "lib").is_symlink()
    assert os.listdir(flat / "lib") == ["b"]
    assert (flat / "usr/lib/a").exists()


def test_implicit_parent_follows_lower_symlink_inside_the_image(tmp_path: Path) -> None:
    first = oci.TarLayer().add_dir("usr").add_dir("usr/lib").add_symlink("lib", "/usr/lib")
    second = oci.TarLayer().add_file("lib/c", b"c")  # no entry for lib itself
    flat = build(tmp_path, [first.tar_bytes(), second.tar_bytes()])
    assert (flat / "lib").is_symlink()
    assert (flat / "usr/lib/c").read_bytes() == b"c"


def test_hard_links_within_and_across_layers(tmp_path: Path) -> None:
    first = oci.TarLayer().add_file("bin/tool", b"#!tool", mode=0o755)
    second = oci.TarLayer().add_hardlink("bin/alias", "bin/tool").add_file("etc/f", b"f").add_hardlink("etc/g", "etc/f")
    flat = build(tmp_path, [first.tar_bytes(), second.tar_bytes()])
    assert (flat / "bin/alias").stat().st_ino == (flat / "bin/tool").stat().st_ino
    assert (flat / "etc/g").stat().st_ino == (flat / "etc/f").stat().st_ino


def test_missing_hard_link_target_is_reported(tmp_path: Path) -> None:
    layer = oci.TarLayer().add_hardlink("a", "does/not/exist").tar_bytes()
    with pytest.raises(LayerError, match="no such file in lower layers"):
        build(tmp_path, [layer])
    assert not (tmp_path / "root/.flat/ab/image").exists()


def test_special_modes_kept_and_mode_000_extracts(tmp_path: Path) -> None:
    layer = (
        oci.TarLayer()
        .add_file("bin/su", b"su", mode=0o4755)
        .add_dir("tmp2", mode=0o1777)
        .add_dir("secret", mode=0o000)
        .add_file("secret/gshadow", b"g", mode=0o000)
        .tar_bytes()
    )
    flat = build(tmp_path, [layer])
    assert stat.S_IMODE((flat / "bin/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((flat / "tmp2").stat().st_mode) == 0o1777
    assert stat.S_IMODE((flat / "secret").stat().st_mode) == 0o000
    os.chmod(flat / "secret", 0o700)
    assert stat.S_IMODE((flat / "secret/gshadow").stat().st_mode) == 0o000


def test_flat_files_share_inodes_with_the_layer_store(tmp_path: Path) -> None:
    tar = oci.TarLayer().add_file("etc/data", b"d" * 4096).tar_bytes()
    flat = build(tmp_path, [tar])
    stored = Store(tmp_path / "work", tmp_path / "root").layer(oci.LayerBlob.from_tar(tar).digest) / "rootfs/etc/data"
    assert (flat / "etc/data").stat().st_ino == stored.stat().st_ino, "one link call per file, no copy"


def test_layer_index_records_whiteouts_and_skipped_devices(tmp_path: Path) -> None:
    tar = oci.TarLayer().add_whiteout("etc/x").add_opaque("var").add_device("dev/null", "c", 1, 3).tar_bytes()
    blob = oci.LayerBlob.from_tar(tar, "gzip", "oci")
    (tmp_path / "blob").write_bytes(blob.data)
    extract_layer(tmp_path / "blob", blob.diff_id, tmp_path / "layer", "layer")
    index = read_layer_index(tmp_path / "layer")
    assert (index.whiteouts, index.opaques, index.skipped_devices) == (["etc/x"], ["var"], ["dev/null"])
    assert not (tmp_path / "layer/rootfs/etc/.wh.x").exists()


# Hostile entries and streams (path traversal, symlinks, whiteout names, truncation, bombs, diff_ids)
# are in test_hostile.py.


def test_opaque_directory_replacing_a_lower_symlink_leaves_its_target_alone(tmp_path: Path) -> None:
    """`rm /lib && mkdir /lib` on an overlay builder: an explicit `lib/`, an opaque marker, a file."""
    first = oci.TarLayer().add_dir("usr").add_dir("usr/lib").add_file("usr/lib/libc.so", b"c")
    first.add_symlink("lib", "usr/lib")
    second = oci.TarLayer().add_dir("lib").add_opaque("lib").add_file("lib/new", b"n").add_whiteout("lib/libc.so")
    flat = build(tmp_path, [first.tar_bytes(), second.tar_bytes()])
    assert (flat / "lib").is_dir() and not (flat / "lib").is_symlink()
    assert os.listdir(flat / "lib") == ["new"]
    assert (flat / "usr/lib/libc.so").read_bytes() == b"c", "the symlink's target is not whited out"
