"""Resolution before the DAG: expand tags, HEAD every tag, GET only what is new.

Runs in the main Snakemake process at parse time. Each published name gets a small state file that
is rewritten only when its content changes, so Snakemake reruns exactly the images that changed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .auth import RealmCache
from .bounded import bounded_repr
from .config import limit_settings
from .errors import RecipeError, UnpackedError, UnsupportedImageError
from .manifests import (
    INDEX_TYPES,
    check_image_config,
    choose_platform,
    media_type_of,
    parse_index,
    parse_manifest,
    parse_platform,
    platform_matches,
)
from .mirrors import MirroredClient, make_client
from .recipe import Recipe
from .reference import ImageRef, matching_tags, parse_reference
from .registry import RegistryClient, sha256_digest
from .safefs import write_atomic
from .state import Failure, LayerRecord, Notice, Resolution, ResolvedImage, load_image, save_resolution
from .store import ARCH_PART, MULTIARCH_DIR, Store

log = logging.getLogger(__name__)
# Nested indexes deeper than this are refused (a loop or a hostile index).
MAX_INDEX_DEPTH = 4
# No small layer download is started this long after the first (the DAG waits for them).
PREFETCH_SECONDS = 60
PLATFORM_KEYS = ("os", "architecture", "variant")


class PlatformMissing(UnsupportedImageError):
    """An index has no image for one wanted platform (others may still be there)."""


def arch_directory(platform: dict[str, Any], what: str) -> str:
    """DUCC's directory name for a platform: `amd64`, `arm64:v8` (the OS is not part of it)."""
    given = [platform.get("architecture"), platform.get("variant")]
    parts = [p for p in given if p]
    if not parts or not all(isinstance(p, str) and ARCH_PART.match(p) for p in parts):
        raise UnsupportedImageError(f"{what}: platform {bounded_repr(platform)} cannot name a .multiarch directory")
    return ":".join(parts)


@dataclass(frozen=True)
class _Image:
    """What one image manifest says: the part of a ResolvedImage that does not depend on the name."""

    manifest_digest: str
    config_digest: str
    config_platform: dict[str, str]  # os, architecture, variant from the image config
    layers: tuple[LayerRecord, ...]


class Resolver:
    def __init__(self, config: dict[str, Any], store: Store) -> None:
        self.config = config
        self.store = store
        self._clients: dict[str, RegistryClient | MirroredClient] = {}
        self._lock = threading.Lock()
        # Token realms learned by every client of the run, remembered between runs (`run`).
        self.realms = RealmCache()

    def client(self, ref: ImageRef) -> RegistryClient | MirroredClient:
        with self._lock:
            if ref.registry not in self._clients:
                self._clients[ref.registry] = make_client(ref, self.config, self.realms)
            return self._clients[ref.registry]

    def _document(self, ref: ImageRef, digest: str, fetch_manifest: bool, size: int | None = None) -> bytes:
        """A manifest or config by digest: from the store if seen before, else GET and store it.

        `size`: a config's size as its manifest declares it (the client refuses more).
        """
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
            data = client.get_blob_bytes(ref.api_repository, digest, size)
        write_atomic(path, data)
        return data

    def expand(self, ref: ImageRef) -> list[ImageRef]:
        if not ref.is_glob:
            return [ref]
        assert ref.tag is not None
        tags = self.client(ref).list_tags(ref.api_repository)
        # Tags become file names: a registry's answer is not trusted to hold only valid ones.
        matched = matching_tags(tags, ref.tag)
        if not matched:
            raise UnpackedError(f"{ref}: the tag pattern {ref.tag!r} matches none of the {len(tags)} tags")
        most = limit_settings(self.config)["tags_per_entry"]
        if len(matched) > most:
            msg = (
                f"{ref}: the tag pattern {ref.tag!r} matches {len(matched)} tags, more than {most} "
                "(setting limits.tags_per_entry); narrow the pattern or raise the setting"
            )
            raise RecipeError(msg)
        return [ref.with_tag(tag) for tag in matched]

    def _documents_stored(self, image: ResolvedImage) -> bool:
        """True if the manifest and config an image names are still in the store (not collected)."""
        return self.store.blob(image.manifest_digest).exists() and self.store.blob(image.config_digest).exists()

    def _unchanged(self, ref: ImageRef, source_digest: str) -> list[ResolvedImage] | None:
        """The stored images of `ref` if its tag still points where it did, with nothing collected."""
        old = load_image(self.store, ref.published_name)
        if old is None or (old.source_digest, old.platforms, old.reference) != (
            source_digest,
            tuple(self.config["platforms"]),
            str(ref),
        ):
            return None
        variants = [load_image(self.store, name) for name in old.multiarch or ()]
        known = [image for image in variants if image is not None and image.source_digest == source_digest]
        if len(known) != len(variants) or not all(self._documents_stored(i) for i in [old, *known]):
            return None
        return [old, *known]

    def resolve_one(self, ref: ImageRef) -> list[ResolvedImage]:
        """The images of one concrete reference: its main image first, then its `.multiarch` links.

        Only a HEAD if the tag's digest is known and unchanged.
        """
        name = ref.published_name
        if ref.digest:
            source_digest = ref.digest
        else:
            source_digest = self.client(ref).head_manifest(ref.api_repository, ref.manifest_reference)
        platforms: list[str] = self.config["platforms"]
        unchanged = self._unchanged(ref, source_digest)
        if unchanged is not None:
            return unchanged
        what = f"{ref}"
        data = self._document(ref, source_digest, fetch_manifest=True)
        media = media_type_of(data, "", f"{what}: manifest {source_digest}")
        # (configured platform or None, manifest digest, manifest bytes, index entry platform or None)
        found: list[tuple[str | None, str, bytes, dict[str, Any] | None]] = []
        if media in INDEX_TYPES:
            missing_errors: list[PlatformMissing] = []
            for one in platforms:
                try:
                    found.append((one, *self._follow_index(ref, source_digest, data, one)))
                except PlatformMissing as err:
                    missing_errors.append(err)
            if not found:
                # The usual message names every wanted platform and what the index offers.
                choose_platform(parse_index(data, what), platforms, f"{what}: index {source_digest}")
                raise missing_errors[0]
        else:
            found.append((None, source_digest, data, None))

        images: dict[str, _Image] = {}  # by manifest digest
        for _text, digest, manifest_data, _entry in found:
            if digest not in images:
                images[digest] = self._image(ref, digest, manifest_data)
        main_text, main_digest, _, _ = found[0]
        main = self._state(ref, name, source_digest, images[main_digest], main_text, platforms)
        if len(platforms) < 2:
            return [main]

        # Several platforms: DUCC's `.multiarch/<arch>[:<variant>]/<registry>/<repository>:<tag>` links.
        variants: dict[str, ResolvedImage] = {}
        covered: set[str] = set()
        for wanted, digest, _, entry in found:
            image = images[digest]
            offered = entry if entry is not None else image.config_platform
            matched = [wanted] if wanted else [t for t in platforms if platform_matches(offered, parse_platform(t))]
            if not matched:
                continue  # a single-platform image of a platform nobody asked for: main link only
            covered.update(matched)
            directory = arch_directory(offered, what)
            variant_name = f"{MULTIARCH_DIR}/{directory}/{name}"
            if variant_name not in variants:
                variants[variant_name] = self._state(
                    ref, variant_name, source_digest, image, wanted or matched[0], platforms
                )
        main = dataclasses.replace(
            main,
            multiarch=tuple(sorted(variants)),
            missing_platforms=tuple(t for t in platforms if t not in covered),
        )
        return [main, *(variants[n] for n in sorted(variants))]

    def _follow_index(
        self, ref: ImageRef, digest: str, data: bytes, platform: str
    ) -> tuple[str, bytes, dict[str, Any] | None]:
        """The image an index holds for one platform (nested indexes followed): digest, bytes, entry."""
        what = f"{ref}"
        entry_platform = None
        for _depth in range(MAX_INDEX_DEPTH):
            media = media_type_of(data, "", f"{what}: manifest {digest}")
            if media not in INDEX_TYPES:
                return digest, data, entry_platform
            try:
                entry, _ = choose_platform(parse_index(data, what), [platform], f"{what}: index {digest}")
            except UnsupportedImageError as err:
                raise PlatformMissing(str(err)) from None
            digest, entry_platform = entry.digest, entry.platform
            data = self._document(ref, digest, fetch_manifest=True)
        raise UnsupportedImageError(f"{what}: indexes nested more than {MAX_INDEX_DEPTH} deep")

    def _image(self, ref: ImageRef, digest: str, data: bytes) -> _Image:
        """Manifest, config and layers of one image manifest."""
        what = f"{ref}"
        manifest = parse_manifest(data, f"{what}: manifest {digest}")
        config_bytes = self._document(ref, manifest.config.digest, fetch_manifest=False, size=manifest.config.size)
        image_config = check_image_config(config_bytes, len(manifest.layers), f"{what}: config")
        diff_ids = image_config["rootfs"]["diff_ids"]
        return _Image(
            manifest_digest=digest,
            config_digest=manifest.config.digest,
            config_platform={k: image_config[k] for k in PLATFORM_KEYS if isinstance(image_config.get(k), str)},
            layers=tuple(
                LayerRecord(layer.digest, diff_id, layer.media_type, layer.size)
                for layer, diff_id in zip(manifest.layers, diff_ids, strict=True)
            ),
        )

    @staticmethod
    def _state(
        ref: ImageRef,
        name: str,
        source_digest: str,
        image: _Image,
        platform: str | None,
        platforms: list[str],
    ) -> ResolvedImage:
        config_platform = image.config_platform
        return ResolvedImage(
            reference=str(ref),
            name=name,
            registry=ref.registry,
            repository=ref.api_repository,
            source_digest=source_digest,
            manifest_digest=image.manifest_digest,
            config_digest=image.config_digest,
            platform=platform or "/".join(config_platform[k] for k in PLATFORM_KEYS if config_platform.get(k)),
            platforms=tuple(platforms),
            layers=image.layers,
        )

    def run(self, recipe: Recipe, keep: Resolution | None = None) -> Resolution:
        """Resolve `recipe`; with `keep` (the last resolution), `recipe` is a part of the whole one:
        what `keep` says of every other entry stays as it is."""
        result = Resolution()
        self.realms.load(self.store.realms)  # fetch each token first instead of collecting a 401
        workers = self.config["resolve_workers"]

        def failed(ref: ImageRef, err: Exception) -> None:
            ignored = recipe.is_ignored(ref)
            log.error("%s: %s%s", ref, err, " (ignored: matches ignoreErrors)" if ignored else "")
            result.failures.append(Failure(str(ref), str(err), ignored))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            expansions = {ref: pool.submit(self.expand, ref) for ref in recipe.images}
            concrete: list[ImageRef] = []
            for ref, future in expansions.items():
                try:
                    concrete.extend(future.result())
                except Exception as err:  # one bad entry or registry answer never stops the others
                    failed(ref, _named(err))
            unique = list(dict.fromkeys(concrete))
            states = {ref: pool.submit(self.resolve_one, ref) for ref in unique}
            for ref, state in states.items():
                try:
                    resolved = state.result()
                except Exception as err:  # one bad entry or registry answer never stops the others
                    failed(ref, _named(err))
                    continue
                for one in resolved:
                    result.images[one.name] = one
                missing = resolved[0].missing_platforms
                if missing:
                    log.warning("%s: no image for platform(s) %s (not fatal)", ref, ", ".join(missing))
                    result.notices.append(Notice(str(ref), missing))
        if keep is not None:
            result = merged_resolution(keep, result, {str(ref) for ref in recipe.images})
        changed = save_resolution(self.store, result)
        for image in changed:
            log.info("%s: changed upstream (manifest %s)", image.reference, image.manifest_digest)
        self.prefetch_small_layers(changed)
        self.realms.save(self.store.realms)
        return result

    def prefetch_small_layers(self, images: list[ResolvedImage]) -> None:
        """Download the small layer blobs of `images` here, beside the manifests and configs.

        A job's process costs more than a small download (a Python start and the HTTP stack: about
        0.3 s of CPU against milliseconds of transfer), so layers up to `limits.prefetch_layer_bytes`
        are fetched like configs (with the same client and retries); bigger ones by their
        `fetch_blob` job. Best effort, and not long (the DAG waits for it): none more from a registry
        once one failed, none started after PREFETCH_SECONDS. Whatever is left is fetched by its job,
        which retries it and reports a failure against its images.
        """
        most = limit_settings(self.config)["prefetch_layer_bytes"]
        wanted: dict[str, tuple[ResolvedImage, LayerRecord]] = {}
        for image in images:
            for layer in image.layers:
                if 0 <= layer.size <= most and layer.digest not in wanted and self._lacks(layer.digest):
                    wanted[layer.digest] = (image, layer)
        if not wanted:
            return
        prefetch = _Prefetch(self, time.monotonic() + PREFETCH_SECONDS)
        with ThreadPoolExecutor(max_workers=self.config["resolve_workers"]) as pool:
            fetched = sum(pool.map(lambda job: prefetch.fetch(*job), wanted.values()))
        log.info("fetched %d of %d small layer blob(s) while resolving", fetched, len(wanted))

    def _lacks(self, digest: str) -> bool:
        return not self.store.layer_marker(digest).exists() and not self.store.blob(digest).exists()


class _Prefetch:
    """One prefetch: its deadline for starting downloads, and the registries given up on."""

    def __init__(self, resolver: Resolver, deadline: float) -> None:
        self.resolver = resolver
        self.deadline = deadline
        self.lock = threading.Lock()
        self.failed: set[str] = set()

    def fetch(self, image: ResolvedImage, layer: LayerRecord) -> bool:
        """True if the blob is now in the store."""
        if image.registry in self.failed or time.monotonic() > self.deadline:
            return False
        ref = parse_reference(image.reference)
        try:
            dest = self.resolver.store.blob(layer.digest)
            self.resolver.client(ref).download_blob(image.repository, layer.digest, dest, layer.size)
        except Exception as err:  # the fetch_blob job tries again and reports it
            with self.lock:
                self.failed.add(image.registry)
            log.warning(
                "%s: layer %s not fetched while resolving (its job retries; no more small layers are fetched "
                "from %s in this run): %s",
                ref,
                layer.digest,
                image.registry,
                err,
            )
            return False
        return True


def merged_resolution(keep: Resolution, part: Resolution, references: set[str]) -> Resolution:
    """`keep` with what it says of `references` replaced by `part` (which resolved only those)."""
    return Resolution(
        images={n: i for n, i in keep.images.items() if i.reference not in references} | part.images,
        failures=[f for f in keep.failures if f.reference not in references] + part.failures,
        notices=[n for n in keep.notices if n.reference not in references] + part.notices,
    )


def _named(err: Exception) -> Exception:
    """Our own errors as they are; anything else (a malformed answer we did not foresee) named."""
    if isinstance(err, UnpackedError):
        return err
    return UnpackedError(f"unexpected {type(err).__name__} while resolving: {err}")
