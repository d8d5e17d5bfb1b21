"""Issue 7, part 1: no hang and no unbounded read, against registries that trickle, flood or lie.

Each test talks to a real `docker-registry` (behind `FaultProxy` where it must misbehave) or to a
small server of its own on 127.0.0.1 that does what no real registry does on demand: trickle headers
or a token at a byte a second, or send an endless body. Calls that used to hang run under
`within()`, so that a regression fails in bounded time instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from unpacked.config import client_settings, validate_config
from unpacked.errors import RegistryError
from unpacked.recipe import parse_recipe
from unpacked.reference import parse_reference
from unpacked.registry import RegistryClient
from unpacked.resolve import Resolver
from unpacked.state import Resolution
from unpacked.store import store_for

from support import oci
from support.loopback import LoopbackServer
from support.proxy import Fault, FaultProxy, serve_pages
from support.registry import LocalRegistry
from support.tokenserver import self_signed
from support.workflow import Workdir, good_image, snakemake_command

# The settings of every deadline test: each attempt may take 2 s, and is retried once.
FAST = {"insecure": True, "timeout": 5, "deadline": 2, "retries": 1}
# A trickle with deadline 2 s and one retry must fail well within this (the old client read on for
# as long as the registry trickled: minutes to hours).
BOUND = 15.0
# Far more than any cap under test: what an "endless" body sends at most before it gives up.
ENDLESS = 256 << 20
# Loopback socket buffers hold a few MB between what a server has sent and what a client has read.
BUFFERS = 24 << 20


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as server:
        yield server


def within(limit: float, call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """Run `call` in a thread: the exception it raised (or None) and the seconds it took.

    Fails the test if it is still running after `limit` seconds (it would hang; the thread is left
    to the server's end).
    """
    outcome: list[BaseException | None] = []
    started = time.monotonic()

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as err:  # handed to the test
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        pytest.fail(f"still reading after {limit:g} s: no deadline")
    return outcome[0], time.monotonic() - started


def client_for(host: str, repo: str, config: dict[str, Any] | None = None, **settings: Any) -> RegistryClient:
    ref = parse_reference(f"{host}/{repo}:latest")
    return RegistryClient(ref, client_settings({"registries": {host: {**FAST, **settings}}, **(config or {})}, host))


def resolve(
    host: str, tmp_path: Path, *entries: str, limits: dict[str, int] | None = None, **settings: Any
) -> Resolution:
    """Resolve `entries` against `host` (plain HTTP, one retry unless `settings` say otherwise)."""
    config: dict[str, Any] = {
        "registries": {host: {"insecure": True, "retries": 1, **settings}},
        "work_dir": str(tmp_path / "work"),
        "output_root": str(tmp_path / "output"),
        "recipe": str(tmp_path / "recipe.yaml"),
    }
    if limits is not None:
        config["limits"] = limits
    settled = validate_config(config)
    return Resolver(settled, store_for(settled)).run(parse_recipe(list(entries)))


def stored_blobs(tmp_path: Path) -> list[str]:
    blobs = tmp_path / "work" / "blobs" / "sha256"
    return sorted(p.name for p in blobs.iterdir()) if blobs.exists() else []


def declaring(image: oci.Image, config_size: int | None = None, layer_size: int | None = None) -> oci.Image:
    """`image` with a manifest that declares other sizes (the registry does not check them)."""
    manifest = image.manifest_json
    if config_size is not None:
        manifest["config"]["size"] = config_size
    if layer_size is not None:
        manifest["layers"][0]["size"] = layer_size
    return dataclasses.replace(image, manifest=json.dumps(manifest).encode())


# -- small servers of the tests' own ------------------------------------------------------------


class Seen:
    """What one of the tests' servers saw and sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[tuple[str, str]] = []
        self.sent = 0

    def count(self, path_part: str) -> int:
        with self.lock:
            return sum(1 for _, path in self.requests if path_part in path)


Answer = Callable[[BaseHTTPRequestHandler, Seen], None]


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[str, Seen]]]:
    """Start a loopback server answering every GET and HEAD with `answer`; its host and what it saw.

    With `tls`, it speaks HTTPS (the handshake happens in the handler's thread, once counted).
    """
    servers: list[LoopbackServer] = []

    def start(answer: Answer, tls: ssl.SSLContext | None = None) -> tuple[str, Seen]:
        seen = Seen()

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                super().setup()
                with seen.lock:
                    seen.connections += 1

            def do_GET(self) -> None:
                with seen.lock:
                    seen.requests.append((self.command, self.path))
                with contextlib.suppress(OSError):  # the client went away: what a deadline or cap is for
                    answer(self, seen)

            do_HEAD = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = LoopbackServer(Handler)
        servers.append(server)
        if tls is not None:
            server.httpd.socket = tls.wrap_socket(server.httpd.socket, server_side=True, do_handshake_on_connect=False)
        return server.host, seen

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for 127.0.0.1, and that certificate's file."""
    key, cert = self_signed("127.0.0.1", ip="127.0.0.1")
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


def trickle(handler: BaseHTTPRequestHandler, data: bytes, seen: Seen) -> None:
    """Write `data` (status line and headers included) one byte a second."""
    for byte in data:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        with seen.lock:
            seen.sent += 1
        time.sleep(1)


def flood(handler: BaseHTTPRequestHandler, seen: Seen, media_type: str, length: int | None = None) -> None:
    """A 200 whose body goes on and on (ENDLESS bytes; `length`: declared and sent exactly)."""
    handler.send_response(200)
    handler.send_header("Content-Type", media_type)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()
    total = length if length is not None else ENDLESS
    chunk = b" " * (64 << 10)
    while seen.sent < total:
        piece = chunk[: total - seen.sent]
        handler.wfile.write(piece)
        with seen.lock:
            seen.sent += len(piece)


# -- 1. every answer has a deadline ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("what", ["manifest", "tag list", "config", "layer"])
def test_a_trickled_body_is_abandoned_at_its_deadline_and_retried_once(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path, what: str
) -> None:
    image = oci.build_image([oci.TarLayer().add_file("data", os.urandom(50_000)).tar_bytes()])
    oci.push(registry, repo_name, "v1", image)
    layer = image.layers[0]
    cases: dict[str, tuple[str, Callable[[RegistryClient], object], list[str]]] = {
        "manifest": (r"/manifests/v1", lambda c: c.get_manifest(repo_name, "v1"), ["manifest", "2 s", "deadline"]),
        "tag list": (r"/tags/list", lambda c: c.list_tags(repo_name), ["tag list", "2 s", "deadline"]),
        "config": (
            rf"/blobs/{image.config_digest}",
            lambda c: c.get_blob_bytes(repo_name, image.config_digest),
            ["config", image.config_digest, "65536 bytes/s", "min_rate", "deadline"],
        ),
        "layer": (
            rf"/blobs/{layer.digest}",
            lambda c: c.download_blob(repo_name, layer.digest, tmp_path / "blob"),
            ["blob", layer.digest, "65536 bytes/s", "min_rate", "deadline"],
        ),
    }
    path, call, words = cases[what]
    proxy.add(Fault(path, "GET", rate=1))  # one byte a second, for ever

    error, elapsed = within(60, lambda: call(client_for(proxy.host, repo_name)))

    assert isinstance(error, RegistryError), error
    assert elapsed < BOUND, f"gave up only after {elapsed:.1f} s"
    message = str(error)
    assert f"registry {proxy.host}" in message, message
    for word in words:
        assert word in message, message
    assert proxy.count("GET", path) == 2, "one attempt and one retry (retries: 1)"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".blob", "blob"))], "nothing written"


@pytest.mark.slow
def test_trickled_headers_are_abandoned_at_the_deadline(serve: Callable[..., tuple[str, Seen]]) -> None:
    digest = "sha256:" + "ab" * 32
    answer = f"HTTP/1.0 200 OK\r\nDocker-Content-Digest: {digest}\r\nContent-Length: 0\r\n\r\n".encode()
    host, seen = serve(lambda handler, seen: trickle(handler, answer, seen))

    error, elapsed = within(60, lambda: client_for(host, "test/slow").head_manifest("test/slow", "v1"))

    assert isinstance(error, RegistryError), error
    assert elapsed < BOUND, f"gave up only after {elapsed:.1f} s"
    message = str(error)
    assert f"registry {host}: manifest test/slow:v1: the answer took longer than 2 s (setting deadline)" in message
    assert seen.connections == 2, "one attempt and one retry (retries: 1)"
    assert seen.sent < len(answer), "the headers were never read to their end"


@pytest.mark.slow
def test_trickled_headers_over_https_are_abandoned_at_the_deadline(
    serve: Callable[..., tuple[str, Seen]], tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, cert_file = tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_file))
    answer = b"HTTP/1.0 200 OK\r\nDocker-Content-Digest: sha256:" + b"ab" * 32 + b"\r\n\r\n"
    host, seen = serve(lambda handler, seen: trickle(handler, answer, seen), tls=context)

    error, elapsed = within(60, lambda: client_for(host, "test/slow", insecure=False).head_manifest("test/slow", "v1"))

    assert isinstance(error, RegistryError), error
    assert elapsed < BOUND, f"gave up only after {elapsed:.1f} s"
    assert "manifest test/slow:v1: the answer took longer than 2 s (setting deadline)" in str(error), error
    assert seen.connections == 2, "one attempt and one retry (retries: 1)"


@pytest.mark.slow
def test_a_trickled_token_is_abandoned_at_the_deadline(serve: Callable[..., tuple[str, Seen]]) -> None:
    def answer(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        if handler.path.startswith("/token"):
            body = json.dumps({"token": "t" * 40, "expires_in": 300}).encode()
            head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            handler.wfile.write(head)
            trickle(handler, body, seen)
            return
        handler.send_response(401)
        realm = f"http://{handler.headers['Host']}/token"
        handler.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="slow"')
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    host, seen = serve(answer)

    error, elapsed = within(60, lambda: client_for(host, "test/slow").head_manifest("test/slow", "v1"))

    assert isinstance(error, RegistryError), error
    assert elapsed < BOUND, f"gave up only after {elapsed:.1f} s"
    message = str(error)
    assert f"registry {host}: token server http://{host}/token" in message, message
    assert "the answer took longer than 2 s (setting deadline)" in message, message
    assert seen.count("/token") == 2, "one attempt and one retry (retries: 1)"


@pytest.mark.slow
def test_a_slow_but_steady_blob_download_is_not_cut(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    """The deadline grows with the bytes received: 400 KB at 200 KB/s takes 2 s, deadline 1 s."""
    data = os.urandom(400_000)
    digest = oci.push_blob(oci.Client(registry), repo_name, data)
    proxy.add(Fault(rf"/blobs/{digest}", "GET", rate=200_000))
    client = client_for(proxy.host, repo_name, deadline=1, min_rate=100_000, retries=0)
    client.download_blob(repo_name, digest, tmp_path / "blob", len(data))
    assert (tmp_path / "blob").read_bytes() == data
    assert proxy.count("GET", "/blobs/") == 1, "never stopped"


@pytest.mark.slow
def test_the_watchdog_thread_ends_after_its_requests(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str
) -> None:
    image = good_image("watchdog\n")
    oci.push(registry, repo_name, "v1", image)
    proxy.add(Fault(r"/manifests/", "GET", times=1, rate=1))
    client = client_for(proxy.host, repo_name)
    client.get_manifest(repo_name, "v1")  # the first attempt is stopped, the retry succeeds
    for _ in range(20):
        client.head_manifest(repo_name, "v1")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [t for t in threading.enumerate() if t.name.startswith("unpacked-")]:
        time.sleep(0.1)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("unpacked-")]


# -- 2. a manifest is capped while it streams ----------------------------------------------------


@pytest.mark.parametrize(
    ("length", "limits", "cap"),
    [(None, {}, 4 << 20), (50_000_000, {"manifest_bytes": 1 << 20}, 1 << 20)],
    ids=["endless-default-cap", "50MB-declared-1MiB-cap"],
)
def test_a_huge_manifest_is_read_no_further_than_the_cap(
    serve: Callable[..., tuple[str, Seen]], length: int | None, limits: dict[str, int], cap: int
) -> None:
    host, seen = serve(lambda handler, seen: flood(handler, seen, "application/vnd.oci.image.manifest.v1+json", length))
    client = client_for(host, "test/huge", {"limits": limits})

    error, _ = within(60, lambda: client.get_manifest("test/huge", "v1"))

    assert seen.sent < cap + BUFFERS, f"the server could send {seen.sent} bytes"
    assert isinstance(error, RegistryError), error
    message = str(error)
    assert f"registry {host}: manifest test/huge@v1: larger than {cap} bytes (setting limits.manifest_bytes)" in message
    assert seen.count("/manifests/") == 1, "too large is not retried"


# -- 3. an image config is capped; a blob never exceeds its declared size -------------------------


@pytest.mark.parametrize(
    ("declared", "limits", "cap"),
    [(300_000_000, None, 8 << 20), (None, {"config_bytes": 8192}, 8192)],
    ids=["declares-300MB", "honest-20KiB-over-8KiB-cap"],
)
def test_a_config_declared_above_the_cap_is_refused_before_any_request(
    proxy: FaultProxy,
    registry: LocalRegistry,
    repo_name: str,
    tmp_path: Path,
    declared: int | None,
    limits: dict[str, int] | None,
    cap: int,
) -> None:
    image = oci.build_image([oci.TarLayer().add_file("a", b"a").tar_bytes()], config={"Labels": {"pad": "x" * 20_000}})
    image = declaring(image, config_size=declared)
    oci.push(registry, repo_name, "v1", image)

    result = resolve(proxy.host, tmp_path, f"http://{proxy.host}/{repo_name}:v1", limits=limits)

    assert not result.images
    message = result.failures[0].error
    size = declared or len(image.config)
    assert image.config_digest in message and f"declares {size} bytes, more than {cap}" in message, message
    assert "setting limits.config_bytes" in message, message
    assert proxy.count("GET", "/blobs/") == 0, "the config was never requested"
    assert image.config_digest.split(":")[1] not in stored_blobs(tmp_path)


def test_a_config_larger_than_declared_is_refused_after_one_byte_more(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    layer = oci.TarLayer().add_file("a", b"a").tar_bytes()
    image = oci.build_image([layer], config={"Labels": {"pad": "x" * 3_000_000}})
    image = declaring(image, config_size=1000)
    oci.push(registry, repo_name, "v1", image)

    result = resolve(proxy.host, tmp_path, f"http://{proxy.host}/{repo_name}:v1")

    assert not result.images
    message = result.failures[0].error
    assert image.config_digest in message and "more than the 1000 bytes its manifest declares" in message, message
    assert proxy.count("GET", "/blobs/") == 1, "refused, not retried"
    assert image.config_digest.split(":")[1] not in stored_blobs(tmp_path), "nothing stored"


def test_an_endless_config_is_read_no_further_than_the_cap(serve: Callable[..., tuple[str, Seen]]) -> None:
    host, seen = serve(lambda handler, seen: flood(handler, seen, "application/octet-stream"))
    digest = "sha256:" + "cd" * 32

    error, _ = within(60, lambda: client_for(host, "test/huge").get_blob_bytes("test/huge", digest))

    assert seen.sent < (8 << 20) + BUFFERS, f"the server could send {seen.sent} bytes"
    assert isinstance(error, RegistryError), error
    assert f"larger than {8 << 20} bytes (setting limits.config_bytes)" in str(error), error


def test_a_layer_larger_than_declared_is_refused_and_nothing_is_written(
    registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    digest = oci.push_blob(oci.Client(registry), repo_name, data)
    dest = tmp_path / "blobs" / "blob"
    with pytest.raises(RegistryError) as info:
        client_for(registry.host, repo_name).download_blob(repo_name, digest, dest, 1000)
    message = str(info.value)
    assert registry.host in message and digest in message, message
    assert "more than the 1000 bytes its manifest declares" in message, message
    assert list(dest.parent.iterdir()) == [], "no blob and no partial file"


# -- 4. a tag glob may match only so many tags ---------------------------------------------------


def test_a_glob_matching_too_many_tags_fails_without_a_head(repo_name: str, tmp_path: Path) -> None:
    tags = [f"v{n}" for n in range(1500)]
    with serve_pages({repo_name: [(tags[:800], f"/v2/{repo_name}/tags/list?page=1"), (tags[800:], None)]}) as pages:
        result = resolve(pages.host, tmp_path, f"http://{pages.host}/{repo_name}:v*")
        assert not result.images
        message = result.failures[0].error
        assert f"{repo_name}:v*" in message and "matches 1500 tags, more than 1000" in message, message
        assert "limits.tags_per_entry" in message and "narrow the pattern" in message, message
        assert pages.count("HEAD") == 0 and pages.count("GET", "/manifests/") == 0, "nothing sent for the entry"


def test_the_tag_cap_is_a_setting(proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path) -> None:
    image = good_image("tags\n")
    for tag in ("a1", "a2", "a3"):
        oci.push(registry, repo_name, tag, image)
    entry = f"http://{proxy.host}/{repo_name}:a*"
    capped = resolve(proxy.host, tmp_path / "capped", entry, limits={"tags_per_entry": 2})
    assert "matches 3 tags, more than 2" in capped.failures[0].error
    assert proxy.count("HEAD") == 0
    raised = resolve(proxy.host, tmp_path / "raised", entry, limits={"tags_per_entry": 3})
    assert not raised.failures and len(raised.images) == 3
    assert proxy.count("HEAD") == 3


# -- 5. TLS and DNS failures are not retried -----------------------------------------------------


@pytest.mark.parametrize("scheme", ["", "https://"])
def test_an_https_entry_against_a_plain_http_registry_says_what_to_write(
    serve: Callable[..., tuple[str, Seen]], repo_name: str, tmp_path: Path, scheme: str
) -> None:
    host, seen = serve(lambda handler, seen: handler.send_error(404))
    started = time.monotonic()
    result = resolve(host, tmp_path, f"{scheme}{host}/{repo_name}:v1", insecure=False, retries=3)
    elapsed = time.monotonic() - started
    message = result.failures[0].error
    assert f"registry {host}" in message and "plain HTTP" in message, message
    assert f"http://{host}/" in message and f"registries: {{{host}: {{insecure: true}}}}" in message, message
    assert "not retried" in message, message
    assert seen.connections == 1, "one TLS handshake, no retries"
    assert elapsed < 5, f"{elapsed:.1f} s"


def test_an_untrusted_certificate_fails_at_once(
    serve: Callable[..., tuple[str, Seen]], tls: tuple[ssl.SSLContext, Path], repo_name: str, tmp_path: Path
) -> None:
    context, _ = tls  # its certificate is not in REQUESTS_CA_BUNDLE here
    host, seen = serve(lambda handler, seen: handler.send_error(404), tls=context)
    result = resolve(host, tmp_path, f"{host}/{repo_name}:v1", insecure=False, retries=3)
    message = result.failures[0].error
    assert f"registry {host}" in message and "TLS certificate is not trusted" in message, message
    assert "REQUESTS_CA_BUNDLE" in message and "not retried" in message, message
    assert seen.connections == 1, "one TLS handshake, no retries"


def test_a_host_that_does_not_resolve_fails_at_once(
    repo_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = "unpacked-test.invalid"  # RFC 2606: never resolves
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def counting(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name == host:
            lookups.append(name)
        return real_getaddrinfo(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    started = time.monotonic()
    result = resolve(host, tmp_path, f"{host}/{repo_name}:v1", insecure=False, retries=3)
    elapsed = time.monotonic() - started
    message = result.failures[0].error
    assert f"cannot resolve host '{host}'" in message and "not retried" in message, message
    assert lookups == [host], "one lookup, no retries"
    assert elapsed < 10, f"{elapsed:.1f} s"


# -- the whole workflow -------------------------------------------------------------------------


def run_bounded(workdir: Workdir, limit: float) -> tuple[int, str, float]:
    """`snakemake --cores 2` as a user runs it; killed (and the test failed) after `limit` seconds."""
    started = time.monotonic()
    process = subprocess.Popen(
        snakemake_command(workdir.directory),
        env=workdir.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the run was still going after {limit:g} s:\n{output[-3000:]}")
    return process.returncode, output, time.monotonic() - started


@pytest.mark.workflow
def test_a_trickling_registry_ends_the_run_in_bounded_time_and_the_next_run_works(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    slow_layer, slow_manifest = good_image("slow layer\n"), good_image("slow manifest\n")
    oci.push(registry, f"{repo_name}/layer", "1", slow_layer)
    oci.push(registry, f"{repo_name}/manifest", "1", slow_manifest)
    proxy.add(
        Fault(rf"/blobs/{slow_layer.layers[0].digest}", "GET", rate=1),
        Fault(rf"/{repo_name}/manifest/manifests/", "GET", rate=1),
    )
    workdir = Workdir(tmp_path / "run", {proxy.host: FAST})
    workdir.configure([f"http://{proxy.host}/{repo_name}/layer:1", f"http://{proxy.host}/{repo_name}/manifest:1"])

    code, output, elapsed = run_bounded(workdir, 240)

    assert code != 0, output
    assert elapsed < 120, f"the run took {elapsed:.0f} s"
    assert "2 image(s) failed" in output, output
    assert f"registry {proxy.host}: manifest {repo_name}/manifest@" in output, output
    assert "the answer took longer than 2 s (setting deadline)" in output, output
    assert f"registry {proxy.host}: blob {slow_layer.layers[0].digest}" in output, output
    assert "(settings min_rate and deadline)" in output, output

    proxy.reset()  # the registry is well again
    code, output, _ = run_bounded(workdir, 240)
    assert code == 0, output
    assert "in use by a running sync" not in output
    assert (workdir.root / proxy.host / repo_name / "layer:1/etc/id").read_text() == "slow layer\n"
    assert (workdir.root / proxy.host / repo_name / "manifest:1/etc/id").read_text() == "slow manifest\n"


@pytest.mark.workflow
def test_a_layer_larger_than_its_manifest_declares_fails_its_image_only(
    registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    liar = declaring(good_image("liar\n"), layer_size=100)
    oci.push(registry, f"{repo_name}/liar", "1", liar)
    oci.push(registry, f"{repo_name}/good", "1", good_image("good\n"))
    workdir = Workdir(tmp_path / "run", {registry.host: {"insecure": True}})
    workdir.configure([f"http://{registry.host}/{repo_name}/liar:1", f"http://{registry.host}/{repo_name}/good:1"])

    code, output, _ = run_bounded(workdir, 240)

    assert code != 0, output
    assert "1 image(s) failed" in output and f"{repo_name}/liar:1" in output, output
    assert liar.layers[0].digest in output and "more than the 100 bytes its manifest declares" in output, output
    assert (workdir.root / registry.host / repo_name / "good:1/etc/id").read_text() == "good\n"
    blobs = workdir.directory / "work/blobs/sha256"
    assert liar.layers[0].digest.split(":")[1] not in [p.name for p in blobs.iterdir()]
    assert not [p for p in blobs.iterdir() if p.name.startswith(".")], "no partial download left"
