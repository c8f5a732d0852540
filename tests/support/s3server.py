"""A real S3-protocol server for tests: moto's standalone server as a subprocess on loopback.

Nothing is mocked in the client: boto3 (through ``consortium_node.backup.s3.S3Store``) speaks
HTTP to a separate process, as it would to MinIO or AWS. ``start_s3_server`` picks a free
port, starts ``python -m moto.server -H 127.0.0.1 -p PORT`` and polls it (with a deadline,
never a fixed sleep) until it answers; ``S3Server.stop`` ends it.

Authentication: moto checks nothing by default. It enforces IAM (SigV4 signatures against the
access keys of IAM users it holds, and their policies) once ``INITIAL_NO_AUTH_ACTION_COUNT``
unauthenticated actions have been served; the count is read from the server process's
environment at start and can be reset through moto's own API (``POST /moto-api/reset-auth``
with the new count as a text body, which also zeroes the counter: what moto's
``set_initial_no_auth_action_count`` does in server mode). ``start_s3_server`` (unless
``auth=False``) creates an IAM user with an ``s3:*`` policy and an access key while nothing
is enforced, makes them the server's working credentials, then resets the count to 0: from
then on a wrong secret gets ``SignatureDoesNotMatch`` and an unknown key
``InvalidAccessKeyId``, as from any real store. (Setting the count in the environment instead
would tie the setup to the exact number of calls it makes.)
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consortium_node.backup.s3 import S3Store, StoreSettings
from tests.support.harness import free_port
from tests.support.wait import wait_for

REGION = "us-east-1"
OPEN_KEY_ID, OPEN_SECRET = "testing", "testing"  # any key does while nothing is enforced
_STARTED: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_leftovers() -> None:
    """No server outlives the test process, whatever failed (a safety net, not the teardown)."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@dataclass
class S3Server:
    """A running moto server: ``endpoint``, the credentials that work, and buckets."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path
    access_key_id: str = OPEN_KEY_ID
    secret_access_key: str = OPEN_SECRET
    auth: bool = False
    buckets: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def client(self, service: str = "s3", **credentials: str) -> Any:
        """A boto3 client of this server (default: the working credentials)."""
        import boto3  # noqa: PLC0415 - only the tests that start a server need it

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=credentials.get("access_key_id", self.access_key_id),
            aws_secret_access_key=credentials.get("secret_access_key", self.secret_access_key),
        )

    def make_bucket(self, prefix: str = "backup") -> str:
        """Create a bucket with a name no other test uses and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def settings(self, bucket: str, prefix: str = "", **overrides: Any) -> StoreSettings:
        """Store settings for ``bucket`` with the working credentials (``overrides`` replace
        any field, e.g. a wrong ``secret_access_key``)."""
        values: dict[str, Any] = {
            "endpoint": self.endpoint,
            "bucket": bucket,
            "prefix": prefix,
            "region": REGION,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            **overrides,
        }
        return StoreSettings(**values)

    def store(self, bucket: str, prefix: str = "", **overrides: Any) -> S3Store:
        return S3Store(self.settings(bucket, prefix, **overrides))

    @property
    def credentials_env(self) -> dict[str, str]:
        """The standard environment variables carrying the working credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    # ------------------------------------------------------------------------ auth
    def enable_auth(self, user: str = "backup-writer") -> None:
        """Create ``user`` with full S3 rights and an access key, make it the working
        credentials, and make the server check every request from now on."""
        iam = self.client("iam")
        iam.create_user(UserName=user)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
        self._moto_api("reset-auth", b"0")
        self.auth = True

    def _moto_api(self, action: str, body: bytes) -> Any:
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/{action}",
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form type would hide the body
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def _answers_or_exited(endpoint: str, process: subprocess.Popen[bytes]) -> bool:
    """True once the server answers, or once it has exited (the caller tells which)."""
    if process.poll() is not None:
        return True
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_s3_server(
    log_dir: Path,
    *,
    auth: bool = True,
    timeout: float = 30,
    attempts: int = 3,
    bind: str = "127.0.0.1",
) -> S3Server:
    """Start a moto server on a free port and wait until it answers (retrying on another port
    if the chosen one was taken meanwhile). With ``auth`` (the default, as any real store) it
    checks every request's credentials from then on (``enable_auth``). ``bind``: the address
    it listens on (``0.0.0.0`` for pods of the local cluster to reach it); ``endpoint`` stays
    on loopback for the test itself."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)  # enforcement is switched on explicitly
    for attempt in range(attempts):
        port = free_port()
        log_path = log_dir / f"moto-{port}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", bind, "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        _STARTED.append(process)
        server = S3Server(f"http://127.0.0.1:{port}", process, log_path)
        try:
            wait_for(
                f"moto server on port {port}",
                lambda s=server: _answers_or_exited(s.endpoint, s.process),
                timeout,
                interval=0.1,
            )
        except AssertionError as exc:
            server.stop()
            raise RuntimeError(f"{exc}; its log:\n{server.log()}") from exc
        if process.poll() is not None:  # most likely the port was taken meanwhile
            if attempt + 1 == attempts:
                raise RuntimeError(f"moto server exited at start; its log:\n{server.log()}")
            continue
        if auth:
            server.enable_auth()
        return server
    raise AssertionError("unreachable")
