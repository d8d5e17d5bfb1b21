"""Registries as they really behave: pagination, rate limits, faults.

Every test talks to a real docker-registry on 127.0.0.1 through `FaultProxy`, which injects what
the registry cannot do by itself (paging, 429, 5xx, cut or wrong bodies, slowness, strict token
expiry). Client and resolver tests come first, whole-workflow runs last.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email.utils
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3.util.connection

from unpacked.config import client_settings, validate_config
from unpacked.errors import AuthError, ConfigError, DigestMismatchError, NotFoundError, RegistryError
from unpacked.recipe import parse_recipe
from unpacked.reference import parse_reference
from unpacked.registry import RegistryClient
from unpacked.resolve import Resolver
from unpacked.retries import MAX_WAIT
from unpacked.state import Resolution
from unpacked.store import store_for
from unpacked.transport import DEFAULT_MAX_CONNECTIONS

from support import oci
from support.proxy import Fault, FaultProxy
from support.registry import LocalRegistry, free_port
from support.workflow import REPO, Workdir, good_image, parse_jobs, snakemake_command, tree

HEAD_MANIFEST = r"^/v2/.+/manifests/"


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as server:
        yield server


def client_for(proxy: FaultProxy, repo: str, **settings: Any) -> RegistryClient:
    ref = parse_reference(f"{proxy.host}/{repo}:latest")
    config = {"registries": {proxy.host: {"insecure": True, "retries": 3, **settings}}}
    return RegistryClient(ref, client_settings(config, proxy.host))


def resolve(host: str, tmp_path: Path, *entries: str, **settings: Any) -> Resolution:
    workers = settings.pop("resolve_workers", 8)
    config = validate_config(
        {
            "registries": {host: {"insecure": True, "retries": 1, **settings}},
            "work_dir": str(tmp_path / "work"),
            "output_root": str(tmp_path / "output"),
            "recipe": str(tmp_path / "recipe.yaml"),
            "resolve_workers": workers,
        }
    )
    return Resolver(config, store_for(config)).run(parse_recipe(list(entries)))


def small_image(marker: str) -> oci.Image:
    return oci.build_image([oci.TarLayer().add_file("hello", f"hello {marker}\n".encode()).tar_bytes()])


def push_tags(registry: LocalRegistry, repo: str, tags: list[str], image: oci.Image) -> None:
    """Tag one image many times (blobs once, then one manifest PUT per tag, a few at a time: a thousand
    one after the other took 20 s)."""
    client = oci.Client(registry)
    for digest, data in image.blobs.items():
        oci.push_blob(client, repo, data, digest)
    local = threading.local()

    def put(tag: str) -> str:
        if not hasattr(local, "client"):
            local.client = oci.Client(registry)  # a requests.Session per thread
        return oci.push_manifest(local.client, repo, tag, image.manifest, image.media_type)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert len(list(pool.map(put, tags))) == len(tags)


@contextlib.contextmanager
def capture_info(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture the package's INFO records even if its logger does not propagate (workflow.show_progress)."""
    logger = logging.getLogger("unpacked.transport")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(caplog.handler)
    logger.propagate = False  # else the root logger's copy of caplog.handler sees it twice
    caplog.handler.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        logger.propagate = True


def gap(first: Any, second: Any) -> float:
    """Seconds between the end of one recorded request and the start of the next."""
    return float(second.start - first.end)


# -------------------------------------------------------------------------------------------------
# 1. Tag list pagination
# -------------------------------------------------------------------------------------------------

THOUSAND = [f"release-{i:03d}" for i in range(990)] + [f"zz-{i}" for i in range(10)]


@pytest.fixture(scope="module")
def thousand_tags(registry: LocalRegistry) -> str:
    repo = "faults/thousand"
    push_tags(registry, repo, THOUSAND, small_image("thousand"))
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("link_style", ["relative", "absolute"])
def test_thousand_tags_in_pages_glob_matches_last_page_only(
    proxy: FaultProxy, thousand_tags: str, link_style: str, tmp_path: Path
) -> None:
    proxy.tag_page_size = 100
    proxy.link_style = link_style
    assert sorted(THOUSAND)[900:] == [t for t in sorted(THOUSAND) if t >= "release-900"], "zz-* are on page 10"
    result = resolve(proxy.host, tmp_path, f"{proxy.host}/{thousand_tags}:zz-*")
    assert result.failures == []
    assert sorted(result.images) == sorted(f"{proxy.host}/{thousand_tags}:zz-{i}" for i in range(10))
    pages = proxy.requests("GET", r"/tags/list")
    assert len(pages) == 10
    assert pages[0].path == f"/v2/{thousand_tags}/tags/list"
    # Every further page is the Link the previous one gave, verbatim (an opaque `last` token).
    assert all("&last=" in p.path for p in pages[1:])
    assert len({p.path for p in pages}) == 10
    assert proxy.count("HEAD", HEAD_MANIFEST, 200) == 10, "one HEAD per matched tag, none for the others"


def test_next_link_to_another_host_is_refused(proxy: FaultProxy, registry: LocalRegistry, repo_name: str) -> None:
    push_tags(registry, repo_name, ["1", "2", "3"], small_image(repo_name))
    proxy.tag_page_size = 2
    proxy.link_host = f"localhost:{registry.port}"  # the same registry under another name: still refused
    with pytest.raises(RegistryError) as info:
        client_for(proxy, repo_name).list_tags(repo_name)
    assert proxy.host in str(info.value) and "another host" in str(info.value)
    assert proxy.count() == 1


def test_tag_list_that_is_not_a_list_is_a_registry_error(proxy: FaultProxy, repo_name: str) -> None:
    proxy.tag_pages[repo_name] = [("not a list", None)]  # type: ignore[list-item]
    with pytest.raises(RegistryError, match="not a tag list"):
        client_for(proxy, repo_name).list_tags(repo_name)


# -------------------------------------------------------------------------------------------------
# 2. Rate limits and politeness
# -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_retry_after_is_honoured(proxy: FaultProxy, registry: LocalRegistry, repo_name: str, form: str) -> None:
    image = small_image(repo_name)
    oci.push(registry, repo_name, "v1", image)
    after = "2" if form == "seconds" else email.utils.formatdate(time.time() + 3, usegmt=True)
    proxy.add(Fault(HEAD_MANIFEST, "HEAD", times=1, status=429, headers={"Retry-After": after}))
    assert client_for(proxy, repo_name).head_manifest(repo_name, "v1") == image.digest
    first, second = proxy.requests("HEAD")
    assert (first.status, second.status) == (429, 200)
    # An HTTP date has whole seconds: "now + 3 s" means a wait of 2 to 3 s.
    assert 1.5 <= gap(first, second) <= MAX_WAIT, "waited as asked, and not longer than the cap"


def test_429_asking_for_too_long_a_wait_gives_up_at_once(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str
) -> None:
    oci.push(registry, repo_name, "v1", small_image(repo_name))
    proxy.add(Fault(HEAD_MANIFEST, "HEAD", status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(RegistryError) as info:
        client_for(proxy, repo_name).head_manifest(repo_name, "v1")
    message = str(info.value)
    assert proxy.host in message and "it asks to retry after 3600" in message, message
    assert proxy.count("HEAD") == 1, "no retry into a wait of an hour"


@pytest.mark.slow
def test_unreadable_retry_after_falls_back_to_backoff(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str
) -> None:
    image = small_image(repo_name)
    oci.push(registry, repo_name, "v1", image)
    proxy.add(Fault(HEAD_MANIFEST, "HEAD", times=2, status=429, headers={"Retry-After": "soon"}))
    assert client_for(proxy, repo_name).head_manifest(repo_name, "v1") == image.digest
    assert [s.status for s in proxy.requests("HEAD")] == [429, 429, 200]


@pytest.mark.slow
def test_5xx_burst_is_retried_then_succeeds(proxy: FaultProxy, registry: LocalRegistry, repo_name: str) -> None:
    image = small_image(repo_name)
    oci.push(registry, repo_name, "v1", image)
    for status in (500, 502, 503):
        proxy.add(Fault(r"/manifests/", "GET", times=1, status=status))
    data, _ = client_for(proxy, repo_name).get_manifest(repo_name, image.digest)
    assert data == image.manifest
    assert [s.status for s in proxy.requests("GET")] == [500, 502, 503, 200]
    gets = proxy.requests("GET")
    assert gap(gets[1], gets[2]) >= 0.9, "exponential backoff between attempts"


@pytest.mark.parametrize("status", [400, 403, 404, 413])
def test_4xx_other_than_429_is_never_retried(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, status: int
) -> None:
    oci.push(registry, repo_name, "v1", small_image(repo_name))
    proxy.add(Fault(HEAD_MANIFEST, "HEAD", status=status, headers={"Retry-After": "1"}))
    expected = NotFoundError if status == 404 else RegistryError
    with pytest.raises(expected) as info:
        client_for(proxy, repo_name).head_manifest(repo_name, "v1")
    assert proxy.host in str(info.value)
    assert proxy.count("HEAD") == 1


def test_persistent_failure_names_the_registry_and_the_others_go_on(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    oci.push(registry, f"{repo_name}/good", "1", small_image("good"))
    oci.push(registry, f"{repo_name}/bad", "1", small_image("bad"))
    proxy.add(Fault(rf"^/v2/{repo_name}/bad/", status=503))
    result = resolve(proxy.host, tmp_path, f"{proxy.host}/{repo_name}/good:1", f"{proxy.host}/{repo_name}/bad:1")
    assert list(result.images) == [f"{proxy.host}/{repo_name}/good:1"]
    [failure] = result.failures
    assert failure.reference.endswith(f"{repo_name}/bad:1")
    assert proxy.host in failure.error and "HTTP 503" in failure.error
    assert proxy.count("HEAD", f"/{repo_name}/bad/") == 2, "one try and the one configured retry"


def test_ratelimit_headers_are_logged(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    image = small_image(repo_name)
    oci.push(registry, repo_name, "v1", image)
    client = client_for(proxy, repo_name)
    proxy.ratelimit = (100, 42)
    with capture_info(caplog):
        client.head_manifest(repo_name, "v1")
        client.head_manifest(repo_name, "v1")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "ratelimit" in r.getMessage()]
    assert infos == [f"registry {proxy.host}: ratelimit-remaining 42;w=21600 of ratelimit-limit 100;w=21600"]
    caplog.clear()
    proxy.ratelimit = (100, 7)
    with capture_info(caplog):
        client.head_manifest(repo_name, "v1")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        f"registry {proxy.host}: ratelimit-remaining 7;w=21600 of ratelimit-limit 100;w=21600 (running low)"
    ]


@pytest.mark.slow
def test_concurrent_requests_per_registry_are_capped(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    tags = [f"t{i}" for i in range(12)]
    push_tags(registry, repo_name, tags, small_image(repo_name))
    proxy.add(Fault(HEAD_MANIFEST, "HEAD", delay=0.2))
    result = resolve(proxy.host, tmp_path, f"{proxy.host}/{repo_name}:t*", resolve_workers=8, max_connections=2)
    assert result.failures == [] and len(result.images) == 12
    assert proxy.max_active == 2, "8 workers, but never more than 2 requests in flight"


@pytest.mark.slow
def test_concurrent_downloads_hold_their_slot_until_the_body_is_read(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    blobs = [os.urandom(300_000) for _ in range(3)]
    digests = [oci.push_blob(oci.Client(registry), repo_name, data) for data in blobs]
    proxy.add(Fault(r"/blobs/", "GET", rate=1_000_000))
    client = client_for(proxy, repo_name, max_connections=1)
    threads = [
        threading.Thread(target=client.download_blob, args=(repo_name, d, tmp_path / d.split(":")[1])) for d in digests
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [(tmp_path / d.split(":")[1]).read_bytes() for d in digests] == blobs
    assert proxy.max_active == 1


def test_registry_down_fails_fast_after_the_first_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_name: str
) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    attempts: list[object] = []
    real = urllib3.util.connection.create_connection

    def counting(address: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)
    entries = [f"{host}/{repo_name}:{i}" for i in range(5)]
    result = resolve(host, tmp_path, *entries, resolve_workers=1, retries=1)
    assert result.images == {}
    assert len(result.failures) == 5
    assert all(host in f.error and "cannot connect" in f.error for f in result.failures)
    assert len(attempts) == 2, "one try and one retry, then the other images fail without connecting"


# -------------------------------------------------------------------------------------------------
# 3. Faults during downloads
# -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_connection_reset_mid_blob_resumes_with_range(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)
    digest = oci.push_blob(oci.Client(registry), repo_name, data)
    # The client reads 1 MiB at a time and a reset loses what it has not read: cut in the third MiB.
    proxy.add(Fault(rf"/blobs/{digest}", "GET", times=1, cut_after=2_500_000))
    dest = tmp_path / "blobs" / "b"
    client_for(proxy, repo_name).download_blob(repo_name, digest, dest)
    assert dest.read_bytes() == data
    first, second = proxy.requests("GET", "/blobs/")
    assert first.range is None and second.range is not None
    offset = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset <= 2_500_000
    assert [p.name for p in dest.parent.iterdir()] == ["b"]


def test_wrong_bytes_once_are_fetched_again(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    digest = oci.push_blob(oci.Client(registry), repo_name, data)
    proxy.add(Fault(rf"/blobs/{digest}", "GET", times=1, corrupt=True))
    dest = tmp_path / "blobs" / "b"
    client_for(proxy, repo_name).download_blob(repo_name, digest, dest)
    assert dest.read_bytes() == data
    assert proxy.count("GET", "/blobs/") == 2


def test_wrong_bytes_always_are_refused_and_nothing_is_written(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    digest = oci.push_blob(oci.Client(registry), repo_name, data)
    proxy.add(Fault(rf"/blobs/{digest}", "GET", corrupt=True))
    dest = tmp_path / "blobs" / "b"
    with pytest.raises(DigestMismatchError) as info:
        client_for(proxy, repo_name).download_blob(repo_name, digest, dest)
    message = str(info.value)
    assert proxy.host in message and digest in message and "refused" in message
    assert list(dest.parent.iterdir()) == []
    assert proxy.count("GET", "/blobs/") == 2, "fetched once more, then refused"


@pytest.mark.slow
@pytest.mark.parametrize("expiry", ["registry", "client"])
def test_token_expiring_during_a_long_download(
    make_registry: Callable[..., LocalRegistry], repo_name: str, tmp_path: Path, expiry: str
) -> None:
    # "registry": the token is good for 5 minutes by the token server, but the registry (via the proxy)
    # refuses it after 0.5 s, so the resumed request gets a 401 in the middle of the download.
    # "client": the token is good for 1 s, so the client itself fetches a new one before resuming.
    reg = make_registry("token", expires_in=300 if expiry == "registry" else 1)
    data = os.urandom(2 << 20)
    digest = oci.push_blob(oci.Client(reg), repo_name, data)
    with FaultProxy(reg.url) as proxy:
        if expiry == "registry":
            proxy.expire_tokens_after = 0.5
        # The first (anonymous) GET is answered 401; the authorized one trickles for ~1.5 s and is
        # cut; the resumed one needs a fresh token.
        proxy.add(Fault(rf"/blobs/{digest}", "GET", times=2, rate=1 << 20, cut_after=1_500_000))
        client = client_for(proxy, repo_name)
        before = len(reg.token_server.requests)  # type: ignore[union-attr]
        dest = tmp_path / "blob"
        client.download_blob(repo_name, digest, dest)
        assert dest.read_bytes() == data
        assert len(reg.token_server.requests) - before == 2  # type: ignore[union-attr]
        ranged = [s for s in proxy.requests("GET", "/blobs/") if s.range]
        assert ranged and ranged[-1].status == 206
        if expiry == "registry":
            assert [s.status for s in ranged] == [401, 206], "refused mid-way, then renewed"


@pytest.mark.slow
def test_slow_registry_times_out_with_a_clear_error(proxy: FaultProxy, registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, repo_name, "v1", small_image(repo_name))
    proxy.add(Fault(HEAD_MANIFEST, "HEAD", delay=3))
    with pytest.raises(RegistryError) as info:
        client_for(proxy, repo_name, timeout=0.5, retries=1).head_manifest(repo_name, "v1")
    message = str(info.value)
    assert proxy.host in message and "no answer within 0.5 s" in message and "timeout" in message


@pytest.mark.slow
def test_stalled_blob_body_times_out_and_resumes(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    digest = oci.push_blob(oci.Client(registry), repo_name, data)
    proxy.add(Fault(rf"/blobs/{digest}", "GET", times=1, rate=1))  # one byte a second
    dest = tmp_path / "b"
    client_for(proxy, repo_name, timeout=0.5).download_blob(repo_name, digest, dest)
    assert dest.read_bytes() == data
    # (the stalled answer goes on trickling until it notices its client is gone: requests() waits)
    assert proxy.count("GET", "/blobs/") == 2, "given up after the timeout, then fetched again"


def test_wrong_token_answer_is_not_retried_and_hides_the_secret(
    make_registry: Callable[..., LocalRegistry], repo_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = make_registry("token", allow_anonymous_pull=False)
    oci.push(reg, repo_name, "v1", small_image(repo_name))
    monkeypatch.setenv("FAULT_USER", "tester")
    monkeypatch.setenv("FAULT_PASSWORD", "secret-that-must-not-leak")
    with FaultProxy(reg.url) as proxy:
        client = client_for(proxy, repo_name, username_env="FAULT_USER", password_env="FAULT_PASSWORD")
        with pytest.raises(AuthError) as info:
            client.head_manifest(repo_name, "v1")
        assert "secret-that-must-not-leak" not in str(info.value)
        assert proxy.count("HEAD") == 1


# -------------------------------------------------------------------------------------------------
# Whole-workflow runs through the proxy
# -------------------------------------------------------------------------------------------------

workflow = pytest.mark.workflow


def snapshot(root: Path) -> dict[str, str]:
    """Every path under the root with its link target or content digest."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = oci.sha256(path.read_bytes())
        else:
            found[key] = "dir"
    return found


@workflow
def test_noop_sync_sends_one_head_per_tag_and_no_get(
    make_registry: Callable[..., LocalRegistry], repo_name: str, tmp_path: Path
) -> None:
    reg = make_registry("token")
    tokens = reg.token_server.requests  # type: ignore[union-attr]
    oci.push(reg, f"{repo_name}/a", "1", good_image("a1\n"))
    oci.push(reg, f"{repo_name}/a", "2", good_image("a2\n"))
    oci.push(reg, f"{repo_name}/b", "1", good_image("b1\n"))
    with FaultProxy(reg.url) as proxy:
        workdir = Workdir(tmp_path / "run", {proxy.host: {"insecure": True}})
        entries = [f"http://{proxy.host}/{repo_name}/{name}" for name in ("a:1", "a:2", "b:1")]
        workdir.configure(entries)
        first = workdir.run()
        assert first.returncode == 0, first.stdout + first.stderr
        proxy.reset()
        before = len(tokens)
        done = workdir.run()
        assert done.returncode == 0, done.stdout + done.stderr
        heads = proxy.requests("HEAD")
        # Exactly one HEAD per tag: the token realm learned by the first run is remembered, so every
        # request fetches its token first and none is answered 401.
        assert sorted(s.status for s in heads) == [200, 200, 200], heads
        assert proxy.count("GET") == 0, "no GET: no manifest pull counted"
        assert len(tokens) - before == 2, "one token per repository, reused across its tags"


@workflow
def test_wrong_blob_bytes_refused_others_published_rerun_succeeds(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    good, bad = good_image("good\n"), good_image("bad\n")
    oci.push(registry, f"{repo_name}/good", "1", good)
    oci.push(registry, f"{repo_name}/bad", "1", bad)
    layer = bad.layers[0].digest
    proxy.add(Fault(rf"/blobs/{layer}", "GET", corrupt=True))
    workdir = Workdir(tmp_path / "run", {proxy.host: {"insecure": True, "retries": 1}})
    workdir.configure([f"http://{proxy.host}/{repo_name}/good:1", f"http://{proxy.host}/{repo_name}/bad:1"])
    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "1 image(s) failed" in output and f"{repo_name}/bad:1" in output, output
    assert "refused" in output and layer in output and proxy.host in output
    assert (workdir.root / proxy.host / repo_name / "good:1/etc/id").read_text() == "good\n"
    assert not (workdir.root / proxy.host / repo_name / "bad:1").exists()
    blobs = workdir.directory / "work/blobs/sha256"
    assert not (blobs / layer.split(":")[1]).exists()
    assert not [p for p in blobs.iterdir() if p.name.startswith(".")], "no partial download left"

    proxy.reset()
    again = workdir.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert (workdir.root / proxy.host / repo_name / "bad:1/etc/id").read_text() == "bad\n"


@workflow
def test_registry_down_for_the_whole_run_keeps_published_images(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    oci.push(registry, f"{repo_name}/app", "1", good_image("v1\n"))
    oci.push(registry, f"{repo_name}/app", "2", good_image("v2\n"))
    workdir = Workdir(tmp_path / "run", {proxy.host: {"insecure": True, "retries": 1}})
    workdir.configure([f"http://{proxy.host}/{repo_name}/app:1", f"http://{proxy.host}/{repo_name}/app:2"])
    assert workdir.run().returncode == 0
    before = snapshot(workdir.root)
    proxy.stop()  # the port is closed from now on
    done = workdir.run()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "2 image(s) failed" in output, output
    assert output.count(f"registry {proxy.host}") >= 2 and "cannot connect" in output
    after = snapshot(workdir.root)
    index = {".metadata/index.json", ".metadata/index.html"}  # the users' page, which tells them
    assert {k: v for k, v in after.items() if k not in index} == {k: v for k, v in before.items() if k not in index}, (
        "published images stay exactly as they were"
    )
    page = json.loads((workdir.root / ".metadata/index.json").read_text())
    states = {image["name"]: (image["state"], image["points_to"] is not None) for image in page["images"]}
    assert states == {f"{proxy.host}/{repo_name}/app:{tag}": ("failed", True) for tag in ("1", "2")}


def start_workflow(workdir: Workdir) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        snakemake_command(workdir.directory),
        env=workdir.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            break
        time.sleep(0.005)
    assert process.poll() is None, f"the run ended before {what} could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.5)  # let the killed jobs' children go


@workflow
def test_kill_9_during_download_then_rerun_completes(
    proxy: FaultProxy, registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    image = oci.build_image([oci.TarLayer().add_file("data/big", os.urandom(3 << 20)).tar_bytes()])
    oci.push(registry, f"{repo_name}/big", "1", image)
    layer = image.layers[0].digest
    proxy.add(Fault(rf"/blobs/{layer}", "GET", rate=300_000))  # ~10 s for the layer
    workdir = Workdir(tmp_path / "run", {proxy.host: {"insecure": True}})
    workdir.configure([f"http://{proxy.host}/{repo_name}/big:1"])
    blobs = workdir.directory / "work/blobs/sha256"
    process = start_workflow(workdir)
    kill_when(process, lambda: any(p.name.endswith(".part") for p in blobs.glob(".*")), "the download")
    assert not (blobs / layer.split(":")[1]).exists()
    assert not (workdir.root / proxy.host / repo_name / "big:1").exists()
    assert not [p for p in tree(workdir.root) if ".tmp-" in p or p.endswith(".part")]

    proxy.reset()
    assert workdir.run("--unlock").returncode == 0
    done = workdir.run()
    assert done.returncode == 0, done.stdout + done.stderr
    link = workdir.root / proxy.host / repo_name / "big:1"
    assert (link / "data/big").stat().st_size == 3 << 20
    assert not [p for p in blobs.iterdir() if p.name.startswith(".")], "the killed download's partial file is gone"
    assert not [p for p in tree(workdir.root) if ".tmp-" in p]
    assert parse_jobs(workdir.run("-n").stdout) == [], "nothing left to do"


@workflow
def test_kill_9_during_flatten_then_rerun_completes(registry: LocalRegistry, repo_name: str, tmp_path: Path) -> None:
    many = oci.TarLayer()
    for number in range(30_000):
        many.add_file(f"d{number % 100}/f{number}", b"x")
    image = oci.build_image([many.tar_bytes(), oci.TarLayer().add_file("top", b"top\n").tar_bytes()])
    oci.push(registry, f"{repo_name}/many", "1", image)
    workdir = Workdir(tmp_path / "run", {registry.host: {"insecure": True}})
    workdir.configure([f"http://{registry.host}/{repo_name}/many:1"])
    flat = workdir.root / ".flat"
    process = start_workflow(workdir)
    kill_when(process, lambda: any(".tmp-" in p.name for p in flat.glob("*/.*")), "flattening")
    link = workdir.root / registry.host / repo_name / "many:1"
    assert not link.exists(), "nothing is published half-built"
    assert [p.name for p in flat.glob("*/*") if not p.name.startswith(".")] == [], "no final flat directory yet"

    assert workdir.run("--unlock").returncode == 0
    done = workdir.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert (link / "top").read_text() == "top\n"
    assert sum(len(list((link / f"d{n}").iterdir())) for n in range(100)) == 30_000
    assert not [p for p in tree(workdir.root) if ".tmp-" in p], "the killed staging directory is gone"
    assert parse_jobs(workdir.run("-n").stdout) == [], "nothing left to do"


def test_settings_are_documented() -> None:
    """The new per-registry key is in the schema, in config/README.md with the transport's default,
    and kept as given (every key's documentation: tests/test_config.py)."""
    schema = (REPO / "scripts/unpacked/schemas/config.schema.yaml").read_text()
    readme = (REPO / "config/README.md").read_text()
    assert "max_connections:" in schema
    assert f"| `max_connections` | `{DEFAULT_MAX_CONNECTIONS}` |" in readme
    assert validate_config({"registries": {"h": {"max_connections": 2}}})["registries"]["h"]["max_connections"] == 2
    with pytest.raises(ConfigError, match="max_connections"):
        validate_config({"registries": {"h": {"max_connections": 0}}})
