"""``depot serve`` on S3 and PostgreSQL as an operator configures it: env vars, start-up errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from depot.core.testing import free_port
from depot.core.testing_services import BACKENDS_ENV, MotoServer, S3Bucket


def serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``depot serve`` expecting it to refuse to start."""
    cmd = [
        sys.executable, "-m", "depot.core", "serve",
        "--listen-addr", f"127.0.0.1:{free_port()}", "--store-path", str(tmp_path / "store"), *args,
    ]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_bucket_stops_start_up_in_one_line(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    args = [*s3_bucket.serve_args]
    args[args.index("--s3-bucket") + 1] = "no-such-bucket"
    assert_one_line_error(serve(tmp_path, *args), "S3 bucket 'no-such-bucket' does not exist")


def test_s3_without_bucket_option_stops_start_up_in_one_line(tmp_path: Path) -> None:
    assert_one_line_error(serve(tmp_path, "--storage-type", "s3"), "needs --s3-bucket")


def test_bad_credentials_stop_start_up_in_one_line(tmp_path: Path, make_moto_server: Any) -> None:
    moto: MotoServer = make_moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    bucket = S3Bucket(moto, "locked", None)
    assert_one_line_error(
        serve(tmp_path, *bucket.serve_args), "S3 refused access to bucket 'locked'"
    )


def test_unreachable_database_stops_start_up_in_one_line(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/depot"
    assert_one_line_error(serve(tmp_path, "--database-url", url), "cannot open database")


@pytest.mark.skipif(
    bool(os.environ.get(BACKENDS_ENV)), reason=f"{BACKENDS_ENV} passes flags, which beat env vars"
)
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_configured_by_environment_variables(
    s3_bucket: S3Bucket, postgres_url: str, make_depot_server: Any, scheme: str
) -> None:
    """DEPOT_S3_* and DEPOT_DATABASE_URL alone configure S3 and PostgreSQL; blobs go to S3."""
    env = {
        "DEPOT_STORAGE_TYPE": "s3",
        "DEPOT_S3_BUCKET": s3_bucket.name,
        "DEPOT_S3_ENDPOINT": s3_bucket.server.endpoint,
        "DEPOT_S3_REGION": "eu-west-1",
        "DEPOT_S3_FORCE_PATH_STYLE": "1",
        "AWS_ACCESS_KEY_ID": "from-the-environment",  # boto3's default chain
        "AWS_SECRET_ACCESS_KEY": "from-the-environment",
        "DEPOT_DATABASE_URL": scheme + postgres_url[postgres_url.index("://") :],
    }
    server = make_depot_server(env=env)
    assert httpx.get(f"{server.url}/-/health").json()["status"] == "ok"
    data = os.urandom(1024 * 1024)
    assert httpx.put(f"{server.url}/raw/files/env.bin", content=data, timeout=60).status_code == 201
    assert httpx.get(f"{server.url}/raw/files/env.bin", timeout=60).content == data
    assert [k.split("/")[0] for k in s3_bucket.object_keys()] == ["raw"]
    assert not (server.store_path / "blobs" / "raw").exists()
    assert not (server.store_path / "depot.db").exists()
