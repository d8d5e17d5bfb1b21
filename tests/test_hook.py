"""`unpacked serve-hook`: push-triggered sync, end to end with docker-registry's own notifications.

A real registry is configured to notify the receiver (its `notifications: endpoints:`, with the
shared secret as a header). A push of a tag the recipe asks for reaches the tree within seconds,
and that sync rebuilds nothing else; a tag the recipe does not ask for is ignored. Requests without
the secret, or that are not events, are refused with a 4xx and start nothing.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from unpacked.hook import BadEvent, Pushed, pushed_tags

from support import oci
from support.registry import LocalRegistry, free_port
from support.workflow import (
    SNAKEMAKE,
    good_image,
    published_in,
    snakemake_command,
    tree,
    workflow_env,
    write_config,
)

DISTRIBUTION_EVENT = {
    "events": [
        {"action": "push", "target": {"repository": "blob/only", "digest": "sha256:" + "1" * 64}},
        {"action": "pull", "target": {"repository": "x/y", "tag": "1"}, "request": {"host": "r:5000"}},
        {"action": "push", "target": {"repository": "x/y", "tag": "2"}, "request": {"host": "r:5000"}},
    ]
}

DOCKER_HUB_EVENT = {"push_data": {"tag": "3.1"}, "repository": {"repo_name": "user/app"}}
PLAIN_EVENT = {"registry": "gitlab.example:5050", "repository": "g/p", "tag": "v1"}


@pytest.mark.parametrize(
    ("document", "registry", "expected"),
    [
        (DISTRIBUTION_EVENT, None, [Pushed("r:5000", "x/y", "2")]),
        (DISTRIBUTION_EVENT, "mirror.example", [Pushed("mirror.example", "x/y", "2")]),
        (DOCKER_HUB_EVENT, None, [Pushed("docker.io", "user/app", "3.1")]),
        (PLAIN_EVENT, None, [Pushed("gitlab.example:5050", "g/p", "v1")]),
        ({"events": []}, None, []),
    ],
)
def test_push_events_are_read_from_each_sender(document: object, registry: str | None, expected: list[Pushed]) -> None:
    assert pushed_tags(document, registry) == expected


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a JSON object"),
        ({"hello": 1}, "not a registry notification"),
        ({"push_data": {}, "repository": {}}, "names no push_data.tag"),
        ({"repository": "a/b", "tag": "1"}, "registry: or start with --registry"),
        ({"events": [{"action": "push", "target": {"repository": "a", "tag": "1"}}]}, "names no registry host"),
    ],
)
def test_documents_that_are_not_push_events_are_refused(document: object, message: str) -> None:
    with pytest.raises(BadEvent, match=re.escape(message)):
        pushed_tags(document, None)


class Hook:
    """`unpacked serve-hook` in a workflow directory, output to a file."""

    def __init__(self, directory: Path, port: int, secret: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory / "hook.log"
        secret_file = directory / "hook.secret"
        secret_file.write_text(secret + "\n")
        command = [
            str(SNAKEMAKE.with_name("unpacked")),
            "serve-hook",
            f"--listen=127.0.0.1:{port}",
            f"--secret-file={secret_file}",
            "--",
            *snakemake_command(directory),
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=directory, env=workflow_env(), stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.1)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Hook, LocalRegistry, str]]:
    port, secret = free_port(), secrets.token_hex(16)
    notify = {"url": f"http://127.0.0.1:{port}/hook", "headers": {"Authorization": [f"Bearer {secret}"]}}
    with LocalRegistry(workdir=tmp_path / "registry", notify=notify) as registry:
        directory = tmp_path / "workflow"
        recipe = [f"http://{registry.host}/hooked/a:1", f"http://{registry.host}/hooked/b:2*"]
        write_config(directory, recipe, {registry.host: {"insecure": True}})
        hook = Hook(directory, port, secret)
        try:
            yield hook, registry, secret
        finally:
            if hook.process.poll() is None:
                hook.process.kill()
            hook.process.wait()


def wait_published(root: Path, name: str, text: str, hook: Hook) -> None:
    deadline = time.monotonic() + 90
    while True:
        path = root / name / "etc/id"
        if path.exists() and path.read_text() == text:
            return
        assert time.monotonic() < deadline, f"{name} not published with {text!r}:\n{hook.text()[-4000:]}"
        time.sleep(0.2)


@pytest.mark.workflow
def test_registry_notifications_sync_the_pushed_tag_only(setup: tuple[Hook, LocalRegistry, str]) -> None:
    hook, registry, secret = setup
    root = hook.log.parent / "output" / registry.host / "hooked"
    oci.push(registry, "hooked/a", "1", good_image("a\n"))
    wait_published(root, "a:1", "a\n", hook)

    before = len(hook.text())
    started = time.monotonic()
    oci.push(registry, "hooked/b", "2.0", good_image("b 2.0\n"))  # asked for by the glob b:2*
    wait_published(root, "b:2.0", "b 2.0\n", hook)
    assert time.monotonic() - started < 60
    while "hook: synced" not in hook.text()[before:]:
        time.sleep(0.1)
    assert published_in(hook.text()[before:]) == [f"{registry.host}/hooked/b:2.0"], "nothing else rebuilt"

    # A tag the recipe does not ask for: answered as ignored, nothing synced.
    before = len(hook.text())
    oci.push(registry, "hooked/c", "1", good_image("c\n"))
    deadline = time.monotonic() + 30
    while "hooked/c:1 ignored" not in hook.text()[before:]:
        assert time.monotonic() < deadline, hook.text()[-3000:]
        time.sleep(0.1)
    listing = tree(hook.log.parent / "output")

    # Bad or unauthenticated requests: 4xx, and no sync starts.
    before = len(hook.text())
    event = json.dumps({"registry": registry.host, "repository": "hooked/a", "tag": "1"})
    oversized = {"X-Gitlab-Token": secret, "Content-Length": str(2 << 20)}  # refused before it is read
    answers = [
        requests.post(f"{hook.url}/hook", data=event, timeout=10),
        requests.post(f"{hook.url}/hook", data=event, headers={"Authorization": "Bearer wrong"}, timeout=10),
        requests.post(f"{hook.url}/hook/{secret}", data="{not json", timeout=10),
        requests.post(f"{hook.url}/hook/{secret}", data=json.dumps({"hello": 1}), timeout=10),
        requests.post(f"{hook.url}/hook", headers=oversized, timeout=10),
        requests.get(f"{hook.url}/hook/{secret}", timeout=10),
    ]
    assert [answer.status_code for answer in answers] == [401, 401, 400, 400, 413, 405]
    assert "missing or wrong secret" in answers[0].text and "not a registry notification" in answers[3].text
    time.sleep(2)
    assert "hook: syncing" not in hook.text()[before:]
    assert tree(hook.log.parent / "output") == listing

    # The same event with the secret (GitLab's header): a sync of a:1 only, which finds nothing to do.
    accepted = requests.post(f"{hook.url}/hook", data=event, headers={"X-Gitlab-Token": secret}, timeout=10)
    assert accepted.status_code == 202 and accepted.json() == {"queued": [f"{registry.host}/hooked/a:1"], "ignored": []}
    while "hook: synced" not in hook.text()[before:]:
        time.sleep(0.1)
    assert published_in(hook.text()[before:]) == []

    hook.process.send_signal(signal.SIGTERM)
    assert hook.process.wait(timeout=30) == 0
    assert "SIGTERM received: stopping" in hook.text()
    assert "POST /hook/<secret>" in hook.text() and secret not in hook.text(), "the secret is never logged"
