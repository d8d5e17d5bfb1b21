"""Resolution before the DAG, against a real registry: globs, platforms, state files, HEAD-only reruns."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from unpacked.config import validate_config
from unpacked.manifests import OCI_MANIFEST
from unpacked.recipe import Recipe, parse_recipe
from unpacked.reference import parse_reference
from unpacked.resolve import Resolver
from unpacked.state import Resolution, load_image_file, load_resolution
from unpacked.store import Store, store_for

from support import oci
from support.loopback import LoopbackServer
from support.registry import LocalRegistry

AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}
S390X = {"os": "linux", "architecture": "s390x"}
ATTESTATION = {"os": "unknown", "architecture": "unknown"}


def image(marker: str, architecture: str = "amd64", os: str = "linux") -> oci.Image:
    layer = oci.TarLayer().add_file("marker", f"{marker} {architecture}\n".encode()).tar_bytes()
    return oci.build_image([layer], architecture=architecture, os=os)


class Setup:
    """A validated config for one registry, its store, and a way to resolve recipe entries."""

    def __init__(self, reg: LocalRegistry, tmp_path: Path, **extra: Any) -> None:
        self.reg = reg
        self.config = validate_config(
            {
                "registries": {reg.host: {"insecure": True, "retries": 0}},
                "work_dir": str(tmp_path / "work"),
                "output_root": str(tmp_path / "output"),
                "recipe": str(tmp_path / "recipe.yaml"),
                **extra,
            }
        )
        self.store: Store = store_for(self.config)

    def recipe(self, *entries: str, ignore: list[str] | None = None) -> Recipe:
        document: Any = list(entries) if ignore is None else {"input": list(entries), "ignoreErrors": ignore}
        return parse_recipe(document)

    def run(self, *entries: str, ignore: list[str] | None = None) -> Resolution:
        return Resolver(self.config, self.store).run(self.recipe(*entries, ignore=ignore))

    def name(self, repo: str, tag: str) -> str:
        return f"{self.reg.host}/{repo}:{tag}"


@pytest.fixture
def setup(registry: LocalRegistry, tmp_path: Path) -> Setup:
    return Setup(registry, tmp_path)


@pytest.fixture
def record_requests(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[tuple[str, str]]]:
    """Start recording (method, url) of every HTTP request; the real request is still sent."""

    def start() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        real = requests.Session.request

        def recording(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            seen.append((method.upper(), url))
            return real(self, method, url, *args, **kwargs)

        monkeypatch.setattr(requests.Session, "request", recording)
        return seen

    return start


def only_failure(result: Resolution) -> dict[str, Any]:
    assert len(result.failures) == 1, result.failures
    return result.failures[0]


# -------------------------------------------------------------------------------------------------
# Globs
# -------------------------------------------------------------------------------------------------


def test_glob_expansion(setup: Setup, repo_name: str) -> None:
    for tag in ("1.0", "1.1", "2.0", "10.0", "1x0"):
        oci.push(setup.reg, repo_name, tag, image(f"{repo_name} {tag}"))
    result = setup.run(f"{setup.reg.host}/{repo_name}:1.*")
    assert result.failures == []
    # Shell globbing: "." is literal, so 1x0 (which DUCC's regex would take) is not matched.
    assert sorted(result.images) == [setup.name(repo_name, "1.0"), setup.name(repo_name, "1.1")]
    for tag in ("1.0", "1.1"):
        state = result.images[setup.name(repo_name, tag)]
        assert state.source_digest == image(f"{repo_name} {tag}").digest
        assert state.reference == f"https://{setup.reg.host}/{repo_name}:{tag}"
        assert setup.store.state(setup.name(repo_name, tag)).is_file()
    resolved = json.loads(setup.store.resolved.read_text())
    assert resolved == {"format": 1, "images": sorted(result.images), "failures": []}


def test_glob_and_plain_entry_for_same_tag_resolve_once(setup: Setup, repo_name: str) -> None:
    for tag in ("1.0", "1.1"):
        oci.push(setup.reg, repo_name, tag, image(f"{repo_name} {tag}"))
    result = setup.run(f"{setup.reg.host}/{repo_name}:1.*", f"{setup.reg.host}/{repo_name}:1.0")
    assert result.failures == []
    assert sorted(result.images) == [setup.name(repo_name, "1.0"), setup.name(repo_name, "1.1")]


def test_glob_matching_nothing_is_a_failure(setup: Setup, repo_name: str) -> None:
    oci.push(setup.reg, repo_name, "1.0", image(repo_name))
    result = setup.run(f"{setup.reg.host}/{repo_name}:3.*", f"{setup.reg.host}/{repo_name}:1.0")
    assert list(result.images) == [setup.name(repo_name, "1.0")]  # the other entry goes on
    failure = only_failure(result)
    assert failure.reference == f"https://{setup.reg.host}/{repo_name}:3.*"
    assert "'3.*'" in failure.error and "matches none of the 1 tags" in failure.error
    assert failure.ignored is False
    assert load_resolution(setup.store).failures == [failure]


def test_glob_on_unknown_repository_is_a_failure(setup: Setup, repo_name: str) -> None:
    failure = only_failure(setup.run(f"{setup.reg.host}/{repo_name}:*"))
    assert setup.reg.host in failure.error and "not found" in failure.error


class HostileTags:
    """A registry-like server whose tag list holds names that are not valid tags (path traversal)."""

    TAGS = ("1.0", "../../../../escape", "x/../../../../../escape", "ok", "", ".hidden", None, 7)

    def __init__(self) -> None:
        tags = list(self.TAGS)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"name": "evil/repo", "tags": tags}).encode()
                status = 200 if self.path.startswith("/v2/evil/repo/tags/list") else 404
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = LoopbackServer(Handler)
        self.host = self.server.host

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def hostile_tags() -> Iterator[HostileTags]:
    server = HostileTags()
    yield server
    server.stop()


def test_glob_ignores_tags_that_are_not_valid_tags(hostile_tags: HostileTags, tmp_path: Path) -> None:
    config = validate_config(
        {"registries": {hostile_tags.host: {"insecure": True, "retries": 0}}, "work_dir": str(tmp_path / "w")}
    )
    resolver = Resolver(config, store_for(config))
    expanded = resolver.expand(parse_reference(f"{hostile_tags.host}/evil/repo:*"))
    # Tags become file names (state files, published links): invalid ones must never get that far.
    assert [ref.tag for ref in expanded] == ["1.0", "ok"]


# -------------------------------------------------------------------------------------------------
# Platforms
# -------------------------------------------------------------------------------------------------


def test_index_first_matching_platform_wins(setup: Setup, repo_name: str) -> None:
    arm, first, second = image(repo_name, "arm64"), image(f"{repo_name} a"), image(f"{repo_name} b")
    index = oci.build_index([(arm, ARM64), (first, AMD64), (second, AMD64)])
    oci.push(setup.reg, repo_name, "multi", index)
    result = setup.run(f"{setup.reg.host}/{repo_name}:multi")
    assert result.failures == []
    state = result.images[setup.name(repo_name, "multi")]
    assert state.source_digest == index.digest
    assert state.manifest_digest == first.digest
    assert state.config_digest == first.config_digest
    assert state.platform == "linux/amd64"
    assert [layer.digest for layer in state.layers] == [first.layers[0].digest]
    assert [layer.diff_id for layer in state.layers] == first.diff_ids


def test_docker_manifest_list_and_platform_order(registry: LocalRegistry, tmp_path: Path, repo_name: str) -> None:
    setup = Setup(registry, tmp_path, platforms=["linux/s390x", "linux/arm64"])
    arm, s390 = image(repo_name, "arm64"), image(repo_name, "s390x")
    index = oci.build_index([(arm, ARM64), (s390, S390X)], media="docker")
    oci.push(setup.reg, repo_name, "multi", index)
    state = setup.run(f"{setup.reg.host}/{repo_name}:multi").images[setup.name(repo_name, "multi")]
    # The config's first wanted platform wins, whatever the index order.
    assert state.manifest_digest == s390.digest
    assert state.platform == "linux/s390x"


def test_index_without_wanted_platform_is_a_failure(setup: Setup, repo_name: str) -> None:
    arm, s390 = image(repo_name, "arm64"), image(repo_name, "s390x")
    attestation = image(f"{repo_name} att", "unknown", "unknown")
    index = oci.build_index([(arm, ARM64), (attestation, ATTESTATION), (s390, S390X)])
    oci.push(setup.reg, repo_name, "multi", index)
    oci.push(setup.reg, repo_name, "single", image(repo_name))
    result = setup.run(f"{setup.reg.host}/{repo_name}:multi", f"{setup.reg.host}/{repo_name}:single")
    assert list(result.images) == [setup.name(repo_name, "single")]
    failure = only_failure(result)
    message = failure.error
    assert failure.reference == f"https://{setup.reg.host}/{repo_name}:multi"
    assert f"{repo_name}:multi" in message and index.digest in message
    assert "no image for platform(s) linux/amd64" in message
    assert "the index offers linux/arm64, linux/s390x" in message
    assert "unknown" not in message  # attestations are not images on offer
    assert not setup.store.state(setup.name(repo_name, "multi")).exists()


def test_attestation_entries_skipped(setup: Setup, repo_name: str) -> None:
    attestation = image(f"{repo_name} att", "unknown", "unknown")
    amd = image(repo_name)
    # An attestation entry that claims nothing but "unknown", listed first.
    index = oci.build_index([(attestation, ATTESTATION), (amd, AMD64)])
    oci.push(setup.reg, repo_name, "multi", index)
    state = setup.run(f"{setup.reg.host}/{repo_name}:multi").images[setup.name(repo_name, "multi")]
    assert state.manifest_digest == amd.digest


def test_nested_index(setup: Setup, repo_name: str) -> None:
    amd = image(repo_name)
    inner = oci.build_index([(amd, AMD64)])
    outer = oci.build_index([(inner, AMD64)])
    oci.push(setup.reg, repo_name, "nested", outer)
    state = setup.run(f"{setup.reg.host}/{repo_name}:nested").images[setup.name(repo_name, "nested")]
    assert state.source_digest == outer.digest
    assert state.manifest_digest == amd.digest


def test_index_nesting_limit(setup: Setup, repo_name: str) -> None:
    item: oci.Image | oci.Index = image(repo_name)
    for _ in range(4):  # four indexes above the image: one more than the resolver follows
        item = oci.build_index([(item, AMD64)])
    oci.push(setup.reg, repo_name, "deep", item)
    failure = only_failure(setup.run(f"{setup.reg.host}/{repo_name}:deep"))
    assert f"{repo_name}:deep" in failure.error and "nested more than 4 deep" in failure.error


def test_single_image_platform_from_config(setup: Setup, repo_name: str) -> None:
    arm = image(repo_name, "arm64")
    oci.push(setup.reg, repo_name, "v1", arm)
    state = setup.run(f"{setup.reg.host}/{repo_name}:v1").images[setup.name(repo_name, "v1")]
    assert state.platform == "linux/arm64"
    assert state.manifest_digest == state.source_digest == arm.digest


# -------------------------------------------------------------------------------------------------
# Refusals and failure isolation
# -------------------------------------------------------------------------------------------------


def test_artifact_is_a_failure(setup: Setup, repo_name: str) -> None:
    img = image(repo_name)
    manifest = img.manifest_json
    manifest["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    data = json.dumps(manifest).encode()
    client = oci.Client(setup.reg)
    for digest, blob in img.blobs.items():
        oci.push_blob(client, repo_name, blob, digest)
    oci.push_manifest(client, repo_name, "chart", data, OCI_MANIFEST)
    failure = only_failure(setup.run(f"{setup.reg.host}/{repo_name}:chart"))
    assert f"{repo_name}:chart" in failure.error
    assert "not a runnable container image" in failure.error


def test_failures_isolated_and_ignore_errors(setup: Setup, repo_name: str) -> None:
    oci.push(setup.reg, repo_name, "good", image(repo_name))
    host = setup.reg.host
    result = setup.run(
        f"{host}/{repo_name}:good",
        f"{host}/{repo_name}:missing",
        f"{host}/{repo_name}-other:missing",
        ignore=[f"https://{host}/{repo_name}-other:*"],
    )
    assert list(result.images) == [setup.name(repo_name, "good")]
    failures = {f.reference: f for f in result.failures}
    assert failures[f"https://{host}/{repo_name}:missing"].ignored is False
    assert failures[f"https://{host}/{repo_name}-other:missing"].ignored is True
    for failure in failures.values():
        assert host in failure.error and "not found" in failure.error


def test_pinned_digest(setup: Setup, repo_name: str) -> None:
    old, new = image(f"{repo_name} old"), image(f"{repo_name} new")
    oci.push(setup.reg, repo_name, "v1", old)
    oci.push(setup.reg, repo_name, "v1", new)  # the tag moved on; the pin keeps the old image
    host = setup.reg.host
    result = setup.run(f"{host}/{repo_name}:v1@{old.digest}", f"{host}/{repo_name}@{new.digest}")
    assert result.failures == []
    assert result.images[setup.name(repo_name, "v1")].manifest_digest == old.digest
    assert result.images[f"{host}/{repo_name}@{new.digest}"].manifest_digest == new.digest


def test_pinned_digest_unknown_is_a_failure(setup: Setup, repo_name: str) -> None:
    oci.push(setup.reg, repo_name, "v1", image(repo_name))
    missing = "sha256:" + "2" * 64
    failure = only_failure(setup.run(f"{setup.reg.host}/{repo_name}@{missing}"))
    assert setup.reg.host in failure.error and missing in failure.error


# -------------------------------------------------------------------------------------------------
# State files and request economy
# -------------------------------------------------------------------------------------------------


def test_state_rewritten_only_when_changed(setup: Setup, repo_name: str) -> None:
    entry = f"{setup.reg.host}/{repo_name}:v1"
    first = image(f"{repo_name} 1")
    oci.push(setup.reg, repo_name, "v1", first)
    setup.run(entry)
    path = setup.store.state(setup.name(repo_name, "v1"))
    before = path.stat().st_mtime_ns
    text = path.read_text()
    resolved_before = setup.store.resolved.stat().st_mtime_ns

    result = setup.run(entry)
    assert result.images[setup.name(repo_name, "v1")].manifest_digest == first.digest
    assert path.stat().st_mtime_ns == before
    assert path.read_text() == text
    assert setup.store.resolved.stat().st_mtime_ns == resolved_before

    second = image(f"{repo_name} 2")
    oci.push(setup.reg, repo_name, "v1", second)
    setup.run(entry)
    assert path.stat().st_mtime_ns != before
    state = load_image_file(path)
    assert state is not None
    assert state.source_digest == second.digest
    assert state.config_digest == second.config_digest
    assert load_resolution(setup.store).images[setup.name(repo_name, "v1")] == state


def test_noop_second_resolution_makes_only_head_requests(
    setup: Setup, repo_name: str, record_requests: Callable[[], list[tuple[str, str]]]
) -> None:
    host = setup.reg.host
    oci.push(setup.reg, repo_name, "plain", image(f"{repo_name} plain"))
    oci.push(
        setup.reg, repo_name, "multi", oci.build_index([(image(repo_name, "arm64"), ARM64), (image(repo_name), AMD64)])
    )
    entries = (f"{host}/{repo_name}:plain", f"{host}/{repo_name}:multi")

    seen = record_requests()
    first = setup.run(*entries)
    assert first.failures == []
    assert any(method == "GET" for method, _ in seen)  # new digests: manifests and configs fetched

    seen.clear()
    second = setup.run(*entries)
    assert second.images == first.images
    assert sorted(seen) == [
        ("HEAD", f"http://{host}/v2/{repo_name}/manifests/multi"),
        ("HEAD", f"http://{host}/v2/{repo_name}/manifests/plain"),
    ]


def test_changed_platforms_resolve_again(registry: LocalRegistry, tmp_path: Path, repo_name: str) -> None:
    arm, amd = image(repo_name, "arm64"), image(repo_name)
    oci.push(registry, repo_name, "multi", oci.build_index([(arm, ARM64), (amd, AMD64)]))
    entry = f"{registry.host}/{repo_name}:multi"
    name = f"{registry.host}/{repo_name}:multi"
    assert Setup(registry, tmp_path).run(entry).images[name].manifest_digest == amd.digest
    again = Setup(registry, tmp_path, platforms=["linux/arm64"]).run(entry)
    assert again.images[name].manifest_digest == arm.digest


def test_corrupted_cached_manifest_is_not_trusted(setup: Setup, repo_name: str) -> None:
    img = image(repo_name)
    oci.push(setup.reg, repo_name, "v1", img)
    entry = f"{setup.reg.host}/{repo_name}:v1"
    setup.run(entry)
    cached = setup.store.blob(img.digest)
    assert cached.read_bytes() == img.manifest
    # Damage the cached manifest and forget the state: the next resolution must fetch it again.
    cached.write_bytes(img.manifest.replace(b"layers", b"LAYERS"))
    setup.store.state(setup.name(repo_name, "v1")).unlink()
    result = setup.run(entry)
    assert result.failures == []
    assert result.images[setup.name(repo_name, "v1")].manifest_digest == img.digest
    assert cached.read_bytes() == img.manifest
