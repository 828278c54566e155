"""Real Postgres and Redis for tests, from Debian's packages, on free ports, stopped at the end.

`make test` installs `postgresql` and `redis-server` where it can (root with apt-get); where
they cannot be had, the tests that need them skip and say why. Postgres refuses to run as
root, so as root `initdb` and `pg_ctl` run as the `postgres` user, with the cluster in a
temporary directory that user owns; as anyone else they run as that user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest
import redis

from servers import free_port, stop_process

PRODUCTION_YAML = Path(__file__).resolve().parents[1] / "dagster_home" / "production" / "dagster.yaml"
POSTGRES_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
INSTALL_HINT = "install Debian's postgresql and redis-server (make test does, as root)"


def postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them out of PATH, under its versioned directory."""
    for candidate in POSTGRES_BIN_DIRS:
        if Path(candidate, "initdb").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_postgres_user(command: list[str]) -> list[str]:
    """Postgres will not run as root: there, run it as the `postgres` user Debian's package creates."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@dataclass(frozen=True)
class PostgresServer:
    port: int
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database, so each test sees only its own tables; returns its URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(self.url())
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        return self.url(name)


@contextlib.contextmanager
def run_postgres() -> Iterator[PostgresServer]:
    """initdb + pg_ctl start on a free port, data in a temporary directory; stopped and removed after.

    fsync is off: the tests kill processes, never the machine, and a commit is still
    acknowledged only once Postgres has it (what a killed client relies on)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(f"no Postgres binaries (initdb) on this machine: {INSTALL_HINT}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start Postgres as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="audian-pg-"))
    data_dir = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' " \
                  "-c fsync=off -c full_page_writes=off -c max_connections=200"
        _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(root / "postgres.log"), "-w", "-t", "60",
              "-o", options, "start"])
        yield PostgresServer(port, data_dir)
    finally:
        if (data_dir / "postmaster.pid").exists():
            _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str], check: bool = True) -> None:
    done = subprocess.run(_as_postgres_user(command), capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


@contextlib.contextmanager
def run_redis() -> Iterator[str]:
    """redis-server on a free port, in memory only; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(f"no redis-server on this machine: {INSTALL_HINT}")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="audian-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_redis(url, process)
        yield url
    finally:
        stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_redis(url: str, process: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url)
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} before answering")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer at {url} within {timeout} s") from None
            time.sleep(0.05)
        finally:
            client.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with run_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's Postgres."""
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    with run_redis() as url:
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server


@pytest.fixture
def production(tmp_path: Path, postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A DAGSTER_HOME with the checkout's production dagster.yaml, and the servers a deployment shares;
    DAGSTER_PG_URL set here too, for the test's own look at the instance."""
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    return {"home": home, "postgres_url": postgres_url, "redis_url": redis_url}
