"""Self-repair: what was removed or damaged by hand is noticed and rebuilt, never left broken with exit 0.

Snakemake only sees markers in the work directory; these tests take the products away behind its back
(a published link, a flat image, its metadata, a whole output root, an extracted layer's files) or
change them, and check that the next sync (or `unpacked verify --repair`) puts them back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import oci
from support.registry import LocalRegistry
from support.workflow import run_workflow, write_config

pytestmark = pytest.mark.workflow


def image(name: str) -> oci.Image:
    layer = oci.TarLayer().add_dir("etc").add_file("etc/id", f"{name}\n".encode())
    layer.add_dir("data").add_file("data/a", b"a" * 100).add_file("data/b", b"b" * 100, mode=0o600)
    layer.add_symlink("data/link", "a")
    return oci.build_image(
        [oci.TarLayer().add_dir("bin").add_file("bin/tool", b"tool\n", mode=0o755).tar_bytes(), layer.tar_bytes()]
    )


class Tree:
    """A synced workflow directory with two published images, `one:1` and `two:1`."""

    def __init__(self, directory: Path, registry: LocalRegistry, repo: str) -> None:
        self.directory = directory
        self.registry = registry
        self.repo = repo
        for name in ("one", "two"):
            oci.push(registry, f"{repo}/{name}", "1", image(name))
        self.configure()
        self.sync()

    def configure(self, **settings: object) -> None:
        recipe = [f"http://{self.registry.host}/{self.repo}/{n}:1" for n in ("one", "two")]
        write_config(self.directory, recipe, {self.registry.host: {"insecure": True}}, **settings)

    def sync(self, *args: str) -> str:
        done = run_workflow(self.directory, *args)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        return output

    def root(self, name: str = "output") -> Path:
        return self.directory / name

    def name(self, image: str) -> str:
        return f"{self.registry.host}/{self.repo}/{image}:1"

    def link(self, image: str, root: str = "output") -> Path:
        return self.root(root) / self.name(image)

    def unpacked(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "unpacked.cli", *args, "--settings", "work/state/settings.json"]
        return subprocess.run(command, cwd=self.directory, capture_output=True, text=True, timeout=300, check=False)

    def assert_published(self, image: str, root: str = "output") -> None:
        link = self.link(image, root)
        assert link.is_symlink(), f"{link} is not published"
        assert (link / "etc/id").read_text() == f"{image}\n"
        assert (link / "bin/tool").read_text() == "tool\n"
        assert os.readlink(link / "data/link") == "a"
        record = json.loads((self.root(root) / ".metadata" / self.name(image) / "record.json").read_text())
        assert record["config_digest"].split(":")[1] == Path(os.readlink(link)).name


@pytest.fixture
def tree(tmp_path: Path, registry: LocalRegistry, repo_name: str) -> Tree:
    return Tree(tmp_path / "run", registry, repo_name)


def test_a_link_removed_by_hand_is_published_again(tree: Tree) -> None:
    tree.link("one").unlink()
    output = tree.sync()
    assert "is missing; publishing it again" in output, output
    tree.assert_published("one")
    assert "Nothing to be done" in tree.sync("-n")


def test_a_link_pointing_elsewhere_is_published_again(tree: Tree) -> None:
    target = os.readlink(tree.link("two"))
    tree.link("one").unlink()
    os.symlink(target, tree.link("one"))  # one:1 now shows two's image
    tree.sync()
    tree.assert_published("one")


def test_a_flat_image_removed_by_hand_is_rebuilt(tree: Tree) -> None:
    flat = tree.link("one").resolve()
    shutil.rmtree(flat)
    output = tree.sync()
    assert f"flat image {flat.relative_to(tree.directory)} is missing; building it again" in output, output
    tree.assert_published("one")
    tree.assert_published("two")


def test_metadata_removed_by_hand_is_written_again(tree: Tree) -> None:
    meta = tree.root() / ".metadata" / tree.name("two")
    os.unlink(meta)
    tree.sync()
    tree.assert_published("two")


def test_a_removed_output_root_is_rebuilt_whole(tree: Tree) -> None:
    shutil.rmtree(tree.root())
    tree.sync()
    tree.assert_published("one")
    tree.assert_published("two")
    assert "Nothing to be done" in tree.sync("-n")


def test_a_changed_output_root_is_filled(tree: Tree) -> None:
    tree.configure(output_root="elsewhere")
    tree.sync()
    tree.assert_published("one", root="elsewhere")
    tree.assert_published("two", root="elsewhere")
    tree.assert_published("one")  # the old root is left as it was


def test_an_extracted_layer_without_its_files_is_extracted_again(tree: Tree) -> None:
    flat = tree.link("one").resolve()
    layers = sorted((tree.directory / "work/layers").glob("*/*/rootfs"))
    for rootfs in layers:
        shutil.rmtree(rootfs)
    shutil.rmtree(flat)  # so that a flat has to be built from the layers again
    tree.sync()
    tree.assert_published("one")
    assert all(rootfs.is_dir() for rootfs in layers)


def test_verify_finds_and_repairs_a_damaged_flat(tree: Tree) -> None:
    flat = tree.link("one").resolve()
    (flat / "etc/id").unlink()
    os.chmod(flat / "data", 0o700)  # a directory: the flat's own (files are shared with the layer)
    (flat / "data/intruder").write_text("x")
    checked = tree.unpacked(["verify"])
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"DAMAGED: flat image {flat.relative_to(tree.directory)}: 3 difference(s)" in checked.stderr, checked.stderr
    assert "missing etc/id" in checked.stderr and "unexpected data/intruder" in checked.stderr
    assert "data has mode 700, not 755" in checked.stderr
    assert "unpacked verify --repair" in checked.stderr
    assert "1 damaged, 0 repaired" in checked.stdout

    repaired = tree.unpacked(["verify", "--repair"])
    assert repaired.returncode == 0, repaired.stderr
    assert "1 damaged, 1 repaired" in repaired.stdout
    tree.assert_published("one")
    assert not (flat / "data/intruder").exists()
    assert (flat / "data").stat().st_mode & 0o777 == 0o755
    clean = tree.unpacked(["verify"])
    assert clean.returncode == 0 and "0 damaged" in clean.stdout, clean.stdout + clean.stderr
    assert "Nothing to be done" in tree.sync("-n")


def test_verify_layers_finds_content_changed_in_the_layer_store(tree: Tree) -> None:
    """A file changed in place in the layer store changes every flat that links it: only a fresh
    extraction from the blob can tell, and repairing the layer then repairs the flat."""
    flat = tree.link("two").resolve()
    (flat / "bin/tool").write_text("tampered\n")  # a hard link: the layer's file changes with it
    assert tree.unpacked(["verify", f"{tree.name('two')}"]).returncode == 0, "a flat alone cannot see it"
    checked = tree.unpacked(["verify", "--layers", tree.name("two")])
    assert checked.returncode == 1
    assert "DAMAGED: extracted layer" in checked.stderr and "bin/tool has other content" in checked.stderr
    repaired = tree.unpacked(["verify", "--layers", "--repair"])
    assert repaired.returncode == 0, repaired.stderr
    tree.assert_published("one")
    tree.assert_published("two")
    assert tree.unpacked(["verify", "--layers"]).returncode == 0


def test_a_root_that_looks_unmounted_is_not_filled(tree: Tree) -> None:
    """An empty mount point (the network filesystem is not mounted) must not receive every image again."""
    shutil.rmtree(tree.root())
    tree.root().mkdir()  # what an unmounted mount point looks like
    done = run_workflow(tree.directory)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "holds no .metadata/" in output and "is its filesystem mounted?" in output, output
    assert os.listdir(tree.root()) == [], "nothing may be written into it"
    assert all((tree.directory / "work/published").rglob("*.json")), "the markers stay"
    # The operator confirms that it was emptied on purpose: everything is published again.
    tree.root().rmdir()
    tree.sync()
    tree.assert_published("one")


def test_verify_goes_on_past_an_image_it_cannot_check(tree: Tree) -> None:
    one, two = tree.link("one").resolve(), tree.link("two").resolve()
    (two / "etc/id").unlink()
    # one's own layer (the second) is gone from the store: its flat cannot be rebuilt for comparison.
    layer_hex = json.loads((tree.directory / "work/state/images" / f"{tree.name('one')}.json").read_text())
    own = layer_hex["layers"][1]["digest"].split(":")[1]
    shutil.rmtree(tree.directory / "work/layers" / own[:2] / own / "rootfs")
    checked = tree.unpacked(["verify"])
    assert checked.returncode == 1
    assert f"flat image {one.relative_to(tree.directory)}: 1 difference(s): could not verify" in checked.stderr
    assert f"flat image {two.relative_to(tree.directory)}: 1 difference(s): missing etc/id" in checked.stderr
    leftovers = [p.name for p in (one.parent, two.parent) for p in p.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "no reference tree may be left behind"
