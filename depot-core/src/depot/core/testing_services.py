"""Pytest fixtures for depot on shared services: S3 (moto's server mode) and PostgreSQL.

Loaded with ``pytest_plugins = ["depot.core.testing_services"]`` next to ``depot.core.testing``.

- ``moto_server``: one real S3 HTTP API on a free loopback port for the session
  (``python -m moto.server``); ``make_moto_server`` starts private ones that a test may kill and
  restart.
- ``s3_bucket``: a fresh bucket per test, with the ``depot serve`` flags that point at it.
- ``postgres_url``: a fresh database per test on ``DEPOT_TEST_POSTGRES_URL`` (default
  ``postgresql://postgres@127.0.0.1:5432/test``), dropped afterwards; the test is skipped, with the
  reason, only when that server cannot be reached.
- ``make_postgres_instance``: a throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl`` on a free
  port, in a temporary directory) that a test may stop and start under a running depot without
  touching the machine's own server.
- ``make_caching_proxy``: Debian's nginx with ``proxy_cache`` in front of a depot, as a CDN or a
  caching reverse proxy would stand; ``X-Cache-Status`` says whether nginx answered alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from depot.core.testing import DepotServer, free_port

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

#: moto accepts any credentials; depot is given these explicitly so no ambient AWS setup leaks in.
S3_TEST_KEY_ID = "depot-test"
S3_TEST_SECRET = "depot-test-secret"


# --- a caching reverse proxy ------------------------------------------------------------------

NGINX_CONF = """
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    proxy_cache_path {root}/cache keys_zone=depot:4m;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            # What depot's headers allow is cached; nothing is cached on nginx's own say-so.
            proxy_cache depot;
            proxy_cache_revalidate on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


class CachingProxy:
    """nginx on a free loopback port caching what ``upstream`` allows; ``url`` is its address."""

    def __init__(self, upstream: str, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        conf = root / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the temp dirs
        conf.write_text(NGINX_CONF.format(user=user, root=root, port=self.port, upstream=upstream))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen(
            [nginx, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log"),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start: {self.error_log()}")
            try:
                httpx.get(self.url + "/-/health", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def make_caching_proxy(tmp_path: Path) -> Iterator[Callable[[str], CachingProxy]]:
    """``make_caching_proxy(depot.url)``: nginx with ``proxy_cache`` in front of it. Skipped,
    with the reason, when nginx is not installed."""
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        pytest.skip("nginx is not installed")
    proxies: list[CachingProxy] = []

    def make(upstream: str) -> CachingProxy:
        proxy = CachingProxy(upstream, tmp_path / f"nginx-{len(proxies)}")
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


# --- S3 -----------------------------------------------------------------------------------------


class MotoServer:
    """``python -m moto.server`` on a fixed loopback port; stop and start it to fake an outage.

    moto keeps its objects in memory, so a restarted server is empty: tests that restart it
    create their bucket again (as a real store would come back with its data).
    """

    def __init__(
        self,
        port: int | None = None,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or Path(tempfile.gettempdir())) / f"moto-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> MotoServer:
        if importlib.util.find_spec("moto") is None:
            pytest.skip("moto[server] is not installed (pip install -r requirements-test.txt)")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited early:\n{self.log()}")
            try:
                httpx.get(self.endpoint + "/moto-api/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Kill the server at once: every open connection drops, as when a store crashes."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def client(self) -> Any:
        """A boto3 client on this server, for tests to create buckets and look inside them."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_TEST_KEY_ID,
            aws_secret_access_key=S3_TEST_SECRET,
            config=Config(s3={"addressing_style": "path"}),
        )


@dataclass
class S3Bucket:
    """A bucket on a moto server, with the depot options that use it."""

    server: MotoServer
    name: str
    client: Any = field(repr=False)

    @property
    def options(self) -> dict[str, Any]:
        """``create_app`` keywords for this bucket."""
        return {
            "storage_type": "s3",
            "s3_bucket": self.name,
            "s3_endpoint": self.server.endpoint,
            "s3_access_key_id": S3_TEST_KEY_ID,
            "s3_secret_access_key": S3_TEST_SECRET,
            "s3_force_path_style": True,
        }

    @property
    def serve_args(self) -> list[str]:
        """``depot serve`` flags for this bucket."""
        return [
            "--storage-type", "s3",
            "--s3-bucket", self.name,
            "--s3-endpoint", self.server.endpoint,
            "--s3-access-key-id", S3_TEST_KEY_ID,
            "--s3-secret-access-key", S3_TEST_SECRET,
            "--s3-force-path-style",
        ]  # fmt: skip

    def create(self) -> S3Bucket:
        self.client.create_bucket(Bucket=self.name)
        return self

    def object_keys(self) -> list[str]:
        """Every object key in the bucket."""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            keys.extend(o["Key"] for o in page.get("Contents", ()))
        return sorted(keys)

    def pending_multipart_uploads(self) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted."""
        listed = self.client.list_multipart_uploads(Bucket=self.name)
        return [u["Key"] for u in listed.get("Uploads", ())]


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto S3 server for the whole session; tests isolate themselves by bucket."""
    server = MotoServer(log_dir=tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def make_moto_server(tmp_path: Path) -> Iterator[Callable[..., MotoServer]]:
    """Start a private moto server that the test may stop and start (fault tests).

    ``env`` configures moto, e.g. ``{"INITIAL_NO_AUTH_ACTION_COUNT": "0"}`` to check credentials.
    """
    servers: list[MotoServer] = []

    def make(env: dict[str, str] | None = None) -> MotoServer:
        server = MotoServer(log_dir=tmp_path, env=env).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> S3Bucket:
    """An empty bucket of its own for this test."""
    name = f"depot-test-{secrets.token_hex(6)}"
    return S3Bucket(moto_server, name, moto_server.client()).create()


# --- PostgreSQL ---------------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _admin(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def postgres_server_url() -> str:
    """The PostgreSQL server tests create their databases on."""
    return os.environ.get("DEPOT_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """``postgresql://.../depot_test_<random>``: a database of its own, dropped after the test."""
    server = postgres_server_url()
    name = f"depot_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError) as exc:
        pytest.skip(f"PostgreSQL at {server} is unreachable ({exc}); set DEPOT_TEST_POSTGRES_URL")
    yield _with_database(server, name)
    asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresInstance:
    """A private PostgreSQL cluster in a temporary directory, on its own loopback port."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        # PostgreSQL refuses to run as root; the machine's postgres account runs it then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def init(self) -> PostgresInstance:
        if self._as:
            shutil.chown(self.root, "postgres")
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        return self

    def start(self) -> PostgresInstance:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k '' -c fsync=off"
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "log"),
            "-o", options, "-w", "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        """Fast shutdown: open sessions are terminated, as when the database server goes away."""
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"
        )

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()


@pytest.fixture
def make_postgres_instance() -> Iterator[Callable[[], PostgresInstance]]:
    """Start throwaway PostgreSQL clusters (``initdb`` + ``pg_ctl``) that a test may stop/start."""
    bin_dir = _postgres_bin()
    instances: list[PostgresInstance] = []

    def make() -> PostgresInstance:
        if bin_dir is None:
            pytest.skip("PostgreSQL server binaries (pg_ctl, initdb) are not installed")
        root = Path(tempfile.mkdtemp(prefix="depot-pg-"))
        instance = PostgresInstance(bin_dir, root).init().start()
        instances.append(instance)
        return instance

    yield make
    for instance in instances:
        with contextlib.suppress(RuntimeError):
            if instance.running():
                instance.stop()
        shutil.rmtree(instance.root, ignore_errors=True)


# --- Replicas -----------------------------------------------------------------------------------


@pytest.fixture
def make_replicas(
    s3_bucket: S3Bucket, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., list[DepotServer]]]:
    """Start ``count`` ``depot serve`` processes sharing this test's bucket and database.

    Extra flags (a signing key, ...) go to every replica. They start side by side, as a
    deployment's would. Each has a store path of its own, which stays empty: everything that
    matters is in the bucket and the database.
    """
    started: list[DepotServer] = []

    def make(count: int = 2, *args: str) -> list[DepotServer]:
        shared = [*s3_bucket.serve_args, "--database-url", postgres_url, *args]
        replicas = [
            DepotServer(tmp_path_factory.mktemp("replica") / "store", *shared) for _ in range(count)
        ]
        started.extend(replicas)
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(DepotServer.start, replicas))
        return replicas

    yield make
    for replica in started:
        replica.stop()


# --- The whole suite on S3 and PostgreSQL -------------------------------------------------------

#: ``DEPOT_TEST_BACKENDS=s3-postgres pytest ...`` runs every ``depot serve`` that tests start
#: (through ``DepotServer``) on a bucket and a database of its own, so the ecosystems' suites
#: exercise S3 and PostgreSQL too. Flags a test passes itself come later and win.
BACKENDS_ENV = "DEPOT_TEST_BACKENDS"


class _SharedServicesMode:
    """Gives each store path's ``DepotServer`` a bucket and a database, dropped at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.moto = MotoServer(log_dir=log_dir).start()
        self.client = self.moto.client()
        self.server_url = postgres_server_url()
        self.databases: list[str] = []
        self.by_store: dict[Path, tuple[str, ...]] = {}

    def attach(self, server: DepotServer) -> None:
        if getattr(server, "_depot_services_attached", False):
            return  # a restarted server keeps its bucket and database
        # A store path stands for one depot's data: servers started on it share them, as on disk.
        flags = self.by_store.get(server.store_path)
        if flags is None:
            token = secrets.token_hex(6)
            bucket = S3Bucket(self.moto, f"depot-suite-{token}", self.client).create()
            name = f"depot_suite_{token}"
            asyncio.run(_admin(self.server_url, f'CREATE DATABASE "{name}"'))
            self.databases.append(name)
            url = _with_database(self.server_url, name)
            flags = self.by_store[server.store_path] = (*bucket.serve_args, "--database-url", url)
        server.args = (*flags, *server.args)
        server._depot_services_attached = True  # type: ignore[attr-defined]

    def close(self) -> None:
        for name in self.databases:
            with contextlib.suppress(Exception):
                asyncio.run(
                    _admin(self.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
        self.moto.stop()


def pytest_configure(config: pytest.Config) -> None:
    mode = os.environ.get(BACKENDS_ENV, "")
    if not mode:
        return
    if mode != "s3-postgres":
        raise pytest.UsageError(f"{BACKENDS_ENV}={mode!r}: the only mode is 's3-postgres'")
    services = _SharedServicesMode(Path(tempfile.mkdtemp(prefix="depot-suite-moto-")))
    config._depot_services = services  # type: ignore[attr-defined]
    original_start = DepotServer.start

    def start(self: DepotServer, timeout: float = 30.0) -> DepotServer:
        services.attach(self)
        return original_start(self, timeout)

    DepotServer.start = start  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    services = getattr(config, "_depot_services", None)
    if services is not None:
        services.close()


def pytest_report_header(config: pytest.Config) -> str | None:
    if getattr(config, "_depot_services", None) is not None:
        return "depot serve runs on S3 (moto) and PostgreSQL: DEPOT_TEST_BACKENDS=s3-postgres"
    return None
