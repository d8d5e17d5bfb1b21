"""A real `docker-registry` (distribution 2.8) on a free loopback port, for tests."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

import requests

from .tokenserver import TokenServer

AuthMode = Literal["none", "htpasswd", "token"]

START_TIMEOUT = 10.0


def require_binary(name: str, package: str) -> str:
    """Path of `name`, or an error naming the Debian package (tests must fail, not skip)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name!r} not found: apt-get install -y {package}")
    return path


def free_port() -> int:
    # Racy in theory (the port is released before the registry binds it); fine on loopback.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """`docker-registry serve` with filesystem storage and deletes enabled.

    auth="htpasswd" creates a bcrypt htpasswd for `username`/`password`; auth="token" needs a
    running TokenServer (which it also registers the user with).
    """

    def __init__(
        self,
        auth: AuthMode = "none",
        *,
        username: str = "tester",
        password: str | None = None,
        token_server: TokenServer | None = None,
        workdir: Path | None = None,
        notify: dict[str, object] | None = None,
    ) -> None:
        """`notify`: one entry of the registry's `notifications: endpoints:` (url, headers, ...)."""
        self.binary = require_binary("docker-registry", "docker-registry")
        self.notify = notify
        self.auth = auth
        self.username: str | None = username if auth != "none" else None
        self.password: str | None = (password or secrets.token_hex(8)) if auth != "none" else None
        self.token_server = token_server
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="test-registry-"))
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.config_path = self.workdir / "config.yml"
        self.config_path.write_text(self._config())
        self._stderr_path = self.workdir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._start()

    def _config(self) -> str:
        # JSON is valid YAML: avoids quoting trouble with paths.
        cfg: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.notify is not None:
            endpoint = {"name": "test", "timeout": "2s", "threshold": 5, "backoff": "1s", **self.notify}
            cfg["notifications"] = {"endpoints": [endpoint]}
        if self.auth == "htpasswd":
            assert self.username and self.password
            htpasswd = require_binary("htpasswd", "apache2-utils")
            out = subprocess.run(
                [htpasswd, "-Bbn", self.username, self.password],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            path = self.workdir / "htpasswd"
            path.write_text(out.strip() + "\n")
            cfg["auth"] = {"htpasswd": {"realm": "test", "path": str(path)}}
        elif self.auth == "token":
            if self.token_server is None:
                raise ValueError("auth='token' needs a token_server")
            assert self.username and self.password
            self.token_server.users[self.username] = self.password
            cfg["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": self.token_server.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(self.token_server.cert_path),
                }
            }
        return json.dumps(cfg, indent=2)

    def _start(self) -> None:
        with open(self._stderr_path, "wb") as log:
            self._proc = subprocess.Popen(
                [self.binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                requests.get(f"{self.url}/v2/", timeout=1)  # any status means it is serving
            except requests.RequestException:
                time.sleep(0.05)
                continue
            if self._proc.poll() is None:  # not some other process that holds the port
                return
        code = self._proc.poll()
        log_text = self._stderr_path.read_text(errors="replace")
        self.stop()
        why = f"exited with code {code}" if code is not None else f"silent for {START_TIMEOUT} s"
        message = f"docker-registry did not answer on {self.url}/v2/ ({why})"
        raise RuntimeError(f"{message}; its output:\n{log_text}")

    @property
    def log(self) -> str:
        """The registry's combined stdout/stderr so far (for assertion messages)."""
        return self._stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
