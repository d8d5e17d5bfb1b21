"""flat_job.publish_flat on a small real store: how the publish job of one flat image accounts for
names that fail, names whose failure is ignored, and inputs that stand for an ignored failure; and
flat_job.publish_batch, the job of several small flat images.

The flatten and publish steps are the job's own callables: here they record what ran, or fail."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from unpacked.errors import PublishError
from unpacked.flat_job import publish_batch, publish_flat
from unpacked.placeholders import is_placeholder, leave_placeholders
from unpacked.state import (
    Resolution,
    ResolvedImage,
    load_job_failures,
    save_batch,
    save_flat_names,
    save_published_marker,
    save_resolution,
)
from unpacked.store import Store

from support import oci
from support.unpack import resolved

IMAGE = oci.build_image([oci.TarLayer().add_file("etc/id", b"one\n").tar_bytes()])
NAMES = ("quay.io/org/app:1", "quay.io/org/app:2")


def store_with(tmp_path: Path, ignored: list[str]) -> tuple[dict[str, object], Store, dict[str, ResolvedImage]]:
    """Two names of one flat image, resolved; a recipe that ignores the errors of `ignored`."""
    store = Store(tmp_path / "work", tmp_path / "root")
    images = {name: resolved(IMAGE, name) for name in NAMES}
    save_resolution(store, Resolution(images=images))
    save_flat_names(store, IMAGE.config_digest, {name: image.source_digest for name, image in images.items()})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"version": 1, "input": [f"https://{n}" for n in NAMES], "ignoreErrors": ignored}))
    return {"recipe": str(recipe)}, store, images


def test_a_failed_input_ignored_for_one_name_fails_the_names_not_ignored(tmp_path: Path) -> None:
    settings, store, _ = store_with(tmp_path, ignored=[NAMES[0]])
    layer = store.layer_marker(IMAGE.layers[0].digest)
    leave_placeholders(store, [layer], "extract-layer: diff_id mismatch")
    output = store.flat_published(IMAGE.config_digest)
    ran: list[str] = []
    code = publish_flat(
        settings, store, IMAGE.config_digest, ([layer], [output]), None, lambda *_: ran.append("flatten"), ran.append
    )
    assert code == 1 and ran == [], "nothing is built from a placeholder"
    failures = load_job_failures(store)
    assert [(f.action, f.key, f.images) for f in failures] == [("publish", NAMES[1], (NAMES[1],))]
    assert "a failure ignored for another image of the same flat image" in failures[0].error
    assert not output.exists() and not store.published_marker(NAMES[1]).exists()


def test_inputs_failed_for_ignored_names_only_leave_placeholders(tmp_path: Path) -> None:
    settings, store, _ = store_with(tmp_path, ignored=["quay.io/org/app:*"])
    layer = store.layer_marker(IMAGE.layers[0].digest)
    leave_placeholders(store, [layer], "extract-layer: diff_id mismatch")
    output = store.flat_published(IMAGE.config_digest)
    code = publish_flat(settings, store, IMAGE.config_digest, ([layer], [output]), None, lambda *_: None, print)
    assert code == 0 and is_placeholder(output)
    assert all(is_placeholder(store.published_marker(name)) for name in NAMES)
    assert load_job_failures(store) == []


def test_a_moved_name_whose_publish_failure_is_ignored_leaves_no_done_output(tmp_path: Path) -> None:
    """Its old marker (for the image it left) stays; the job's output must not say it is published."""
    settings, store, _ = store_with(tmp_path, ignored=[NAMES[1]])
    old = resolved(oci.build_image([oci.TarLayer().add_file("etc/id", b"old\n").tar_bytes()]), NAMES[1])
    save_published_marker(store, old)
    published: list[str] = []

    def publish(image: ResolvedImage) -> None:
        if image.name == NAMES[1]:
            raise PublishError(f"{image.name}: hook refused")
        save_published_marker(store, image)
        published.append(image.name)

    output = store.flat_published(IMAGE.config_digest)
    code = publish_flat(settings, store, IMAGE.config_digest, ([], [output]), None, lambda *_: None, publish)
    assert code == 0, "the failure only touches an ignored image"
    assert published == [NAMES[0]]
    assert is_placeholder(output), json.loads(output.read_text())


def test_a_name_that_fails_stops_no_other_and_the_job_fails(tmp_path: Path) -> None:
    settings, store, _ = store_with(tmp_path, ignored=[])
    store.state(NAMES[1]).write_text("{")  # damaged: this name fails, as its own unit of work
    published: list[str] = []

    def publish(image: ResolvedImage) -> None:
        save_published_marker(store, image)
        published.append(image.name)

    output = store.flat_published(IMAGE.config_digest)
    code = publish_flat(settings, store, IMAGE.config_digest, ([], [output]), None, lambda *_: None, publish)
    assert code == 1 and published == [NAMES[0]] and not output.exists()
    failures = load_job_failures(store)
    assert [(f.action, f.key) for f in failures] == [("publish", NAMES[1])]
    assert "its state does not match" in failures[0].error


def test_only_names_are_published_and_the_others_left(tmp_path: Path) -> None:
    settings, store, _ = store_with(tmp_path, ignored=[])
    published: list[str] = []

    def publish(image: ResolvedImage) -> None:
        save_published_marker(store, image)
        published.append(image.name)

    output = store.flat_published(IMAGE.config_digest)
    code = publish_flat(settings, store, IMAGE.config_digest, ([], [output]), [NAMES[1]], lambda *_: None, publish)
    assert code == 0 and published == [NAMES[1]]
    assert not store.published_marker(NAMES[0]).exists()


def test_a_flat_image_of_a_batch_that_fails_stops_no_other(tmp_path: Path) -> None:
    settings, store, _ = store_with(tmp_path, ignored=[])
    other = oci.build_image([oci.TarLayer().add_file("etc/id", b"other\n").tar_bytes()])
    store.flat_names(other.config_digest).write_text("{")  # damaged: fails outside any name's bookkeeping
    batch = save_batch(store, {IMAGE.config_digest: [], other.config_digest: []})
    published: list[str] = []

    def publish(image: ResolvedImage) -> None:
        save_published_marker(store, image)
        published.append(image.name)

    output = store.batch_published(batch)
    code = publish_batch(settings, store, batch, [output], lambda *_: None, publish)
    assert code == 1 and sorted(published) == sorted(NAMES), "the other flat image is published all the same"
    assert store.flat_published(IMAGE.config_digest).exists(), "as its own job would, it wrote its output"
    assert not store.flat_published(other.config_digest).exists() and not output.exists()
    own_log = store.log("publish_image", other.config_digest).read_text()
    assert f"{store.flat_names(other.config_digest)}: missing or damaged" in own_log, own_log


def test_a_batch_whose_flat_images_all_succeed_writes_its_output(tmp_path: Path) -> None:
    settings, store, _ = store_with(tmp_path, ignored=[])
    batch = save_batch(store, {IMAGE.config_digest: []})
    assert save_batch(store, {IMAGE.config_digest: []}) == batch, "named by its content"
    output = store.batch_published(batch)
    code = publish_batch(settings, store, batch, [output], lambda *_: None, lambda i: save_published_marker(store, i))
    assert code == 0 and json.loads(output.read_text())["flats"] == [IMAGE.config_digest]
    assert all(store.published_marker(name).exists() for name in NAMES)
