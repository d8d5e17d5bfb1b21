"""`unpacked serve-hook`: sync a tag when its registry says it was pushed.

An HTTP receiver for docker-registry's own notifications (its `notifications: endpoints:` config,
`application/vnd.docker.distribution.events.v1+json`), Docker Hub push webhooks, and a plain
`{"registry", "repository", "tag"}` document (for a CI job or GitLab pipeline to post). Every request
must carry the shared secret: `Authorization: Bearer <secret>`, `X-Gitlab-Token: <secret>`, or as the
last path component (`/hook/<secret>`, for senders that cannot set headers, such as Docker Hub).

A pushed tag that a recipe entry asks for is queued; one sync runs at a time (`snakemake ... --config
only=<tags>`, what `unpacked sync-one` runs), taking every tag queued meanwhile. Other tags are
answered as ignored. Nothing is ever synced for a request that is refused (401, 400, 413, 405).
"""

from __future__ import annotations

import hmac
import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .errors import UnpackedError
from .recipe import load_recipe
from .reference import parse_reference

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1 << 20
DOCKER_HUB = "docker.io"
RETRY_SECONDS = (10.0, 30.0, 90.0)  # a failed sync of a tag is tried again after these, then dropped


@dataclass(frozen=True)
class Pushed:
    registry: str
    repository: str
    tag: str


class BadEvent(ValueError):
    """The body is not an event this receiver understands (answered 400)."""


def pushed_tags(document: object, default_registry: str | None) -> list[Pushed]:
    """The tags a notification says were pushed (blob pushes, pulls and deletes are not)."""
    if not isinstance(document, dict):
        raise BadEvent("expected a JSON object")
    found: list[Pushed] = []
    if isinstance(document.get("events"), list):  # docker-registry (distribution) notifications
        for event in document["events"]:
            if not isinstance(event, dict) or event.get("action") != "push":
                continue
            target, request = event.get("target") or {}, event.get("request") or {}
            tag, repository = target.get("tag"), target.get("repository")
            if isinstance(tag, str) and tag and isinstance(repository, str):
                registry = default_registry or request.get("host")
                if not isinstance(registry, str) or not registry:
                    raise BadEvent("a push event names no registry host (request.host); start with --registry")
                found.append(Pushed(registry, repository, tag))
        return found
    if isinstance(document.get("push_data"), dict):  # Docker Hub
        tag = document["push_data"].get("tag")
        repository = (document.get("repository") or {}).get("repo_name")
        if not (isinstance(tag, str) and isinstance(repository, str)):
            raise BadEvent("a Docker Hub push names no push_data.tag or repository.repo_name")
        return [Pushed(default_registry or DOCKER_HUB, repository, tag)]
    if {"repository", "tag"} <= set(document):  # a plain document from a CI job
        registry = document.get("registry") or default_registry
        repository, tag = document["repository"], document["tag"]
        if not (isinstance(registry, str) and isinstance(repository, str) and isinstance(tag, str)):
            raise BadEvent("registry, repository and tag must be strings (registry: or start with --registry)")
        if not (registry and repository and tag):
            raise BadEvent("registry, repository and tag must not be empty")
        return [Pushed(registry, repository, tag)]
    raise BadEvent("not a registry notification, Docker Hub webhook or {registry, repository, tag} document")


def wanted_names(pushed: list[Pushed], recipe_path: Path) -> tuple[list[str], list[str]]:
    """(names a recipe entry asks for, names it does not), as `registry/repository:tag`."""
    recipe = load_recipe(recipe_path)  # read per event: the operator may have edited it
    wanted, ignored = [], []
    for push in pushed:
        try:
            ref = parse_reference(f"{push.registry}/{push.repository}:{push.tag}")
            recipe.narrowed_to([ref])
        except UnpackedError as err:
            log.info("hook: %s/%s:%s ignored: %s", push.registry, push.repository, push.tag, err)
            ignored.append(f"{push.registry}/{push.repository}:{push.tag}")
            continue
        wanted.append(ref.published_name)
    return wanted, ignored


DEFAULT_SYNC_COMMAND = ("snakemake", "--cores", "all")


def only_command(command: Sequence[str], names: list[str]) -> list[str]:
    """The sync `command` narrowed to these published names (config `only`)."""
    return [*command, "--config", f"only={','.join(names)}"]


class SyncQueue:
    """Tags waiting for a sync; one sync at a time takes all of them."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self._pending: dict[str, float] = {}  # name -> earliest time to sync it
        self._attempts: dict[str, int] = {}
        self._lock = threading.Condition()
        self._stopping = False
        self.thread = threading.Thread(target=self._loop, name="sync-queue", daemon=True)

    def add(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                self._pending.setdefault(name, 0.0)
                self._attempts[name] = 0
            self._lock.notify()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()

    def _run(self, names: list[str]) -> int:
        log.info("hook: syncing %s", ", ".join(names))
        return subprocess.run(only_command(self.command, names), check=False).returncode

    def _take(self) -> list[str] | None:
        with self._lock:
            while True:
                if self._stopping:
                    return None
                now = time.monotonic()
                due = sorted(name for name, when in self._pending.items() if when <= now)
                if due:
                    for name in due:
                        del self._pending[name]
                    return due
                later = [when - now for when in self._pending.values()]
                self._lock.wait(min(later) if later else None)

    def _loop(self) -> None:
        while (names := self._take()) is not None:
            code = self._run(names)
            if code == 0:
                log.info("hook: synced %s", ", ".join(names))
                continue
            with self._lock:
                for name in names:
                    attempt = self._attempts.get(name, 0)
                    if attempt < len(RETRY_SECONDS):
                        self._attempts[name] = attempt + 1
                        self._pending.setdefault(name, time.monotonic() + RETRY_SECONDS[attempt])
                        wait = RETRY_SECONDS[attempt]
                        log.warning("hook: sync of %s failed (exit %d); again in %.0f s", name, code, wait)
                    else:
                        log.error("hook: sync of %s failed %d times; dropped until its next push", name, attempt + 1)


def make_handler(
    secret: str, recipe_path: Path, queue: SyncQueue, registry: str | None
) -> type[BaseHTTPRequestHandler]:
    class HookHandler(BaseHTTPRequestHandler):
        server_version = "unpacked-hook"

        def log_message(self, format: str, *args: Any) -> None:
            # The request line may carry the secret as its last path component: never logged.
            log.info("hook: %s %s", self.address_string(), (format % args).replace(secret, "<secret>"))

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            given = [
                self.headers.get("Authorization", "").removeprefix("Bearer ").strip(),
                self.headers.get("X-Gitlab-Token", "").strip(),
                self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1],
            ]
            return any(hmac.compare_digest(value.encode(), secret.encode()) for value in given if value)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(200, {"status": "ok"})
            else:
                self._answer(405, {"error": "POST push events here"})

        def do_POST(self) -> None:
            if not self._authorized():
                self._answer(401, {"error": "missing or wrong secret"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(411, {"error": "Content-Length required"})
                return
            if length > MAX_BODY_BYTES:
                self._answer(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
                return
            try:
                pushed = pushed_tags(json.loads(self.rfile.read(length)), registry)
            except (ValueError, UnicodeDecodeError) as err:  # BadEvent and json's errors
                self._answer(400, {"error": str(err)[:300]})
                return
            try:
                wanted, ignored = wanted_names(pushed, recipe_path)
            except UnpackedError as err:  # the recipe itself is broken: the operator must fix it
                log.error("hook: %s", err)
                self._answer(503, {"error": f"recipe unreadable: {str(err)[:300]}"})
                return
            queue.add(wanted)
            self._answer(202 if wanted else 200, {"queued": wanted, "ignored": ignored})

    return HookHandler


def serve(
    address: tuple[str, int], secret: str, recipe_path: Path, command: Sequence[str], registry: str | None
) -> None:
    """Serve until SIGTERM/SIGINT (handled by the caller through `KeyboardInterrupt` or shutdown)."""
    if len(secret) < 16:
        raise UnpackedError("serve-hook: the shared secret must be at least 16 characters")
    queue = SyncQueue(command)
    queue.thread.start()
    server = ThreadingHTTPServer(address, make_handler(secret, recipe_path, queue, registry))
    log.info("hook: listening on http://%s:%d", *server.server_address[:2])

    def stop(signum: int, frame: object) -> None:
        log.info("hook: %s received: stopping (a running sync finishes first)", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        queue.stop()
        queue.thread.join()
