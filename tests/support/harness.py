"""Real node processes on loopback for integration tests and benchmarks.

A ``LocalNode`` is a ``consortium-node run`` subprocess with its own data directory, config
file and port; nothing is mocked. Waiting is polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consortium_node.attestation import measure_installed
from consortium_node.attestation.insecure_virtual import VirtualPlatform
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_pem, self_signed_certificate
from tests.support.wait import wait_for

NODE_BIN = [sys.executable, "-m", "consortium_node.server.main"]
_STARTED: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_leftovers() -> None:
    """No node outlives the test process, whatever failed (a safety net, not the teardown)."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


CTL_BIN = [sys.executable, "-m", "consortium_node.ctl.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Identity:
    name: str
    cert: Path
    key: Path
    role: str


def make_identity(directory: Path, name: str, role: str = "user", kind: str = "p256") -> Identity:
    directory.mkdir(parents=True, exist_ok=True)
    key = keys.generate_key(kind)  # type: ignore[arg-type]
    cert = self_signed_certificate(key, name)
    key_path, cert_path = directory / f"{name}_privk.pem", directory / f"{name}_cert.pem"
    key_path.write_bytes(keys.private_key_pem(key))
    key_path.chmod(0o600)
    cert_path.write_text(certificate_pem(cert))
    return Identity(name, cert_path, key_path, role)


def make_platform(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    platform = VirtualPlatform.generate()
    key, cert = directory / "platform-root.key", directory / "platform-root.pem"
    key.write_bytes(platform.root_key_pem())
    cert.write_bytes(platform.root_certificate_pem)
    return key, cert


@dataclass
class LocalNode:
    """One node process. ``start()`` it, use ``url``/``service_cert``, ``stop()`` or ``kill()``."""

    workdir: Path
    name: str
    members: list[Identity]
    platform_key: Path
    platform_cert: Path
    port: int = field(default_factory=free_port)
    consortium: str = "test"
    overrides: dict[str, Any] = field(default_factory=dict)
    join_from: LocalNode | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / self.name

    @property
    def host(self) -> str:
        """The loopback address it listens on (another one than 127.0.0.1 by override)."""
        listen = self.overrides.get("listen")
        return str(listen.get("host", "127.0.0.1")) if isinstance(listen, dict) else "127.0.0.1"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def service_cert(self) -> Path:
        return self.data_dir / "service_cert.pem"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "consortium": self.consortium,
            "name": self.name,
            "mode": "genesis",
            "data_dir": str(self.data_dir),
            "listen": {"host": "127.0.0.1", "port": self.port},
            "platform": {
                "root_certificate": str(self.platform_cert),
                "root_key": str(self.platform_key),
                "chip_id": f"chip-{self.name}",
            },
            "members": [{"certificate": str(m.cert), "role": m.role} for m in self.members],
            "attestation": {"measurements": [measure_installed()]},
            "ledger": {"signature_interval_tx": 50, "signature_interval_ms": 20},
            "raft": {
                "election_timeout": "500ms",
                "heartbeat_interval": "50ms",
                "commit_timeout": "5s",
            },
        }
        if self.join_from is not None:
            config["mode"] = "join"
            config["members"] = []
            config["join"] = {
                "service_certificate": str(self.join_from.service_cert),
                "trusted_list": f"{self.join_from.url}/node/trusted-list",
                "retry_interval": "200ms",
            }
        for key, value in self.overrides.items():
            if key == "platform" and value.get("name", "insecure-virtual") != "insecure-virtual":
                config[key] = {"chip_id": f"chip-{self.name}", **value}  # another platform's keys
            elif isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def start(self, wait: bool = True, timeout: float = 30) -> LocalNode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / f"{self.name}.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*NODE_BIN, "run", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _STARTED.append(self.proc)
        log.close()
        if wait:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.kill()
                raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            if not self.service_cert.exists():
                return False
            return self.get("/readyz")[0] == 200

        wait_for(f"{self.name} ready", ready, timeout, interval=0.05)

    def context(self, identity: Identity | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.service_cert))
        if identity is not None:
            context.load_cert_chain(identity.cert, identity.key)
        return context

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        identity: Identity | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, context=self.context(identity), timeout=15) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def state(self) -> dict[str, Any]:
        status, body = self.get("/node/state")
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    def get(self, path: str, identity: Identity | None = None) -> tuple[int, Any]:
        status, body, headers = self.request("GET", path, identity=identity)
        if headers.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(body)
        return status, body

    def post_json(self, path: str, data: Any, identity: Identity | None) -> tuple[int, Any]:
        status, body, _ = self.request(
            "POST", path, json.dumps(data).encode(), identity, {"Content-Type": "application/json"}
        )
        return status, json.loads(body)

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def ctl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``consortiumctl`` for real; returns the completed process (stdout, stderr, code)."""
    return subprocess.run(
        [*CTL_BIN, *args],
        capture_output=True,
        text=True,
        check=False,
        input=stdin.decode() if stdin is not None else None,
        timeout=60,
    )
