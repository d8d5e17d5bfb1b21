"""Resolution before the DAG: expand tags, HEAD every tag, GET only what is new.

Runs in the main Snakemake process at parse time. Each published name gets a small state file that
is rewritten only when its content changes, so Snakemake reruns exactly the images that changed.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import UnpackedError, UnsupportedImageError
from .fsutil import write_atomic, write_if_changed
from .manifests import (
    INDEX_TYPES,
    check_image_config,
    choose_platform,
    media_type_of,
    parse_index,
    parse_manifest,
)
from .recipe import Recipe
from .reference import TAG_RE, ImageRef
from .registry import RegistryClient, sha256_digest
from .store import Store

log = logging.getLogger(__name__)
# Nested indexes deeper than this are refused (a loop or a hostile index).
MAX_INDEX_DEPTH = 4


@dataclass
class Resolution:
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # published name -> state
    failures: list[dict[str, Any]] = field(default_factory=list)  # {reference, error, ignored}


class Resolver:
    def __init__(self, config: dict[str, Any], store: Store) -> None:
        self.config = config
        self.store = store
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def client(self, ref: ImageRef) -> RegistryClient:
        with self._lock:
            if ref.registry not in self._clients:
                self._clients[ref.registry] = RegistryClient(ref, self.config)
            return self._clients[ref.registry]

    def _document(self, ref: ImageRef, digest: str, fetch_manifest: bool) -> bytes:
        """A manifest or config by digest: from the store if seen before, else GET and store it."""
        path = self.store.blob(digest)
        try:
            data = path.read_bytes()
            if sha256_digest(data) == digest:
                return data
        except FileNotFoundError:
            pass
        client = self.client(ref)
        if fetch_manifest:
            data, _ = client.get_manifest(ref.api_repository, digest)
        else:
            data = client.get_blob_bytes(ref.api_repository, digest)
        write_atomic(path, data)
        return data

    def expand(self, ref: ImageRef) -> list[ImageRef]:
        if not ref.is_glob:
            return [ref]
        assert ref.tag is not None
        tags = self.client(ref).list_tags(ref.api_repository)
        # Tags become file names: a registry's answer is not trusted to hold only valid ones.
        valid = {t for t in tags if isinstance(t, str) and TAG_RE.match(t)}
        matched = sorted(t for t in valid if fnmatch.fnmatchcase(t, ref.tag))
        if not matched:
            raise UnpackedError(f"{ref}: the tag pattern {ref.tag!r} matches none of the {len(tags)} tags")
        return [ref.with_tag(tag) for tag in matched]

    def resolve_one(self, ref: ImageRef) -> dict[str, Any]:
        """The state of one concrete reference; only a HEAD if its digest is known."""
        name = ref.published_name
        old = _read_json(self.store.state(name))
        if ref.digest:
            source_digest = ref.digest
        else:
            source_digest = self.client(ref).head_manifest(ref.api_repository, ref.manifest_reference)
        platforms = self.config["platforms"]
        if old and old.get("source_digest") == source_digest and old.get("platforms") == platforms:
            return old
        what = f"{ref}"
        digest, chosen_platform = source_digest, None
        for _depth in range(MAX_INDEX_DEPTH):
            data = self._document(ref, digest, fetch_manifest=True)
            media = media_type_of(data, "", f"{what}: manifest {digest}")
            if media not in INDEX_TYPES:
                break
            entry, chosen_platform = choose_platform(parse_index(data, what), platforms, f"{what}: index {digest}")
            digest = entry.digest
        else:
            raise UnsupportedImageError(f"{what}: indexes nested more than {MAX_INDEX_DEPTH} deep")
        manifest = parse_manifest(data, f"{what}: manifest {digest}")
        config_bytes = self._document(ref, manifest.config.digest, fetch_manifest=False)
        image_config = check_image_config(config_bytes, len(manifest.layers), f"{what}: config")
        platform = chosen_platform or "/".join(
            str(image_config.get(k)) for k in ("os", "architecture", "variant") if image_config.get(k)
        )
        diff_ids = image_config["rootfs"]["diff_ids"]
        return {
            "reference": str(ref),
            "name": name,
            "registry": ref.registry,
            "repository": ref.api_repository,
            "source_digest": source_digest,
            "manifest_digest": digest,
            "config_digest": manifest.config.digest,
            "platform": platform,
            "platforms": platforms,
            "layers": [
                {"digest": layer.digest, "diff_id": diff_id, "media_type": layer.media_type, "size": layer.size}
                for layer, diff_id in zip(manifest.layers, diff_ids, strict=True)
            ],
        }

    def run(self, recipe: Recipe) -> Resolution:
        result = Resolution()
        workers = self.config["resolve_workers"]

        def failed(ref: ImageRef, err: Exception) -> None:
            ignored = recipe.is_ignored(ref)
            log.error("%s: %s%s", ref, err, " (ignored: matches ignoreErrors)" if ignored else "")
            result.failures.append({"reference": str(ref), "error": str(err), "ignored": ignored})

        with ThreadPoolExecutor(max_workers=workers) as pool:
            expansions = {ref: pool.submit(self.expand, ref) for ref in recipe.images}
            concrete: list[ImageRef] = []
            for ref, future in expansions.items():
                try:
                    concrete.extend(future.result())
                except UnpackedError as err:
                    failed(ref, err)
            unique = list(dict.fromkeys(concrete))
            states = {ref: pool.submit(self.resolve_one, ref) for ref in unique}
            for ref, future in states.items():
                try:
                    state = future.result()
                except UnpackedError as err:
                    failed(ref, err)
                    continue
                result.images[ref.published_name] = state
        for name, state in result.images.items():
            if write_if_changed(self.store.state(name), _dump(state)):
                log.info("%s: changed upstream (manifest %s)", state["reference"], state["manifest_digest"])
        write_if_changed(self.store.resolved, _dump({"images": sorted(result.images), "failures": result.failures}))
        return result


def load_resolution(store: Store) -> Resolution:
    """The state of the last resolution, for offline runs and for jobs on other hosts."""
    index = _read_json(store.resolved)
    if index is None:
        return Resolution()
    images = {}
    for name in index["images"]:
        state = _read_json(store.state(name))
        if state is not None:
            images[name] = state
    return Resolution(images=images, failures=index.get("failures", []))


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def _read_json(path) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
