"""Small files are created on background threads (filewriters.py); entry order must still hold.

Each layer puts files in flight and then sends entries that depend on them (the same path again, a
path below one, a hard link to one, a symlink over one). The tree must be exactly what one entry at
a time gives (`threads=0`), and a failure of a background file must name that file's entry.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from unpacked import extract, filewriters
from unpacked.errors import LayerError

from support import oci


def in_flight_then_dependent() -> oci.TarLayer:
    layer = oci.TarLayer().add_dir("d")
    for number in range(300):  # enough to still be in flight when the dependent entries come
        layer.add_file(f"d/f{number}", bytes([number % 256]) * (number * 37 % 5000), mode=0o640 + number % 8)
    layer.add_file("d/f1", b"the last f1 wins", mode=0o600)
    layer.add_hardlink("d/link-to-f299", "d/f299")
    layer.add_dir("d/f2")
    layer.add_file("d/f2/inside", b"f2 is a directory now")
    layer.add_symlink("d/f3", "f4")
    layer.add_file("d/f5/below", b"f5 was a file: its path becomes a directory")
    layer.add_fifo("d/f6")
    layer.add_file("d/f299", b"replaced after being linked")
    # Symlinks made while files are in flight: then replaced, gone through, hard-linked.
    for number in range(100):
        layer.add_symlink(f"d/s{number}", f"f{number}")
    layer.add_file("d/s1", b"s1 is a file now")
    layer.add_dir("d/sub")
    layer.add_symlink("d/into-sub", "sub")
    layer.add_file("d/into-sub/through", b"written through a symlink still in flight")
    layer.add_hardlink("d/hard-s99", "d/s99")
    return layer


def tree(root: Path) -> dict[str, tuple[str, int, bytes | str, int]]:
    """Every path: its kind, mode, content (or link target) and how many names its inode has."""
    found: dict[str, tuple[str, int, bytes | str, int]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", 0, os.readlink(path), st.st_nlink)
        elif stat.S_ISREG(st.st_mode):
            found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes(), st.st_nlink)
        else:
            found[rel] = (oct(stat.S_IFMT(st.st_mode)), stat.S_IMODE(st.st_mode), "", st.st_nlink)
    return found


def extracted(tmp_path: Path, name: str, tar: bytes, threads: int, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(extract, "CREATE_THREADS", threads)
    slow_write = filewriters.write_new_file

    def slowly(*args: Any) -> None:  # files stay in flight while the reader goes on, whatever the disk
        time.sleep(0.005)
        slow_write(*args)

    monkeypatch.setattr(filewriters, "write_new_file", slowly)

    blob = oci.LayerBlob.from_tar(tar, "gzip", "oci")
    (tmp_path / f"{name}.blob").write_bytes(blob.data)
    extract.extract_layer(tmp_path / f"{name}.blob", blob.diff_id, tmp_path / name, name)
    return tmp_path / name / "rootfs"


def test_background_files_give_the_same_tree_as_one_entry_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = in_flight_then_dependent().tar_bytes()
    serial = tree(extracted(tmp_path, "serial", tar, 0, monkeypatch))
    parallel = tree(extracted(tmp_path, "parallel", tar, 2, monkeypatch))
    assert parallel == serial
    assert parallel["d/f1"][2] == b"the last f1 wins"
    assert parallel["d/f2/inside"][2] == b"f2 is a directory now"
    assert parallel["d/f3"][:3] == ("link", 0, "f4")
    assert parallel["d/link-to-f299"][2] == bytes([299 % 256]) * (299 * 37 % 5000)
    assert parallel["d/f299"][2] == b"replaced after being linked"
    assert parallel["d/f6"][0] == oct(stat.S_IFIFO)
    assert parallel["d/f7"][:2] == ("file", 0o640 + 7)
    assert parallel["d/s1"][2] == b"s1 is a file now" and parallel["d/s2"][:3] == ("link", 0, "f2")
    assert parallel["d/sub/through"][2] == b"written through a symlink still in flight"
    assert parallel["d/hard-s99"] == ("link", 0, "f99", 2) == parallel["d/s99"]


def test_a_background_file_that_fails_names_its_entry_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    too_long = "n" * 300  # longer than a file name may be: open() fails with ENAMETOOLONG
    layer = oci.TarLayer().add_dir("d").add_file(f"d/{too_long}", b"x")
    for number in range(50):
        layer.add_file(f"d/after{number}", b"y")
    with pytest.raises(LayerError) as caught:
        extracted(tmp_path, "layer", layer.tar_bytes(), 2, monkeypatch)
    message = str(caught.value)
    assert f"layer: entry 'd/{too_long}': File name too long" == message
    assert not (tmp_path / "layer").exists()
    assert os.listdir(tmp_path) == ["layer.blob"], "no staging directory is left behind"


def test_a_failure_in_the_middle_of_a_batch_names_its_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files go to the threads in batches: the one that fails is named, not the batch's first."""
    layer = oci.TarLayer().add_dir("d")
    for number in range(filewriters.BATCH_FILES // 2):
        layer.add_file(f"d/before{number}", b"x")
    layer.add_file(f"d/{'n' * 300}", b"x")
    for number in range(filewriters.BATCH_FILES * 3):
        layer.add_file(f"d/after{number}", b"y")
    with pytest.raises(LayerError) as caught:
        extracted(tmp_path, "layer", layer.tar_bytes(), 2, monkeypatch)
    assert str(caught.value) == f"layer: entry 'd/{'n' * 300}': File name too long"
    assert os.listdir(tmp_path) == ["layer.blob"], "no staging directory is left behind"
