"""Garbage collection and deletion on two replicas sharing one S3 bucket (moto) and one PostgreSQL
database, with the real nix client: two collections started at once, one collects; orphans and
leftovers of unfinished uploads go; published paths stay; a path deleted through one replica is
missing through the other."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("depot.nix.signing", reason="depot-nix is not installed")
from depot.nix.nixbase32 import encode  # noqa: E402
from depot.nix.signing import SecretKey  # noqa: E402

from .test_replicas_nix import CLOSURES_NIX, nix  # noqa: E402


def gc_process(s3_bucket: Any, postgres_url: str, *args: str) -> subprocess.Popen[str]:
    """``depot gc ARGS`` on the replicas' bucket and database, as an operator would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "depot.core", "gc", *s3_bucket.serve_args,
         "--database-url", postgres_url, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip


def test_two_collections_at_once_on_s3_and_postgres(
    make_replicas: Any, s3_bucket: Any, postgres_url: str, tmp_path: Path
) -> None:
    key = SecretKey.generate("depot-gc-1")
    key_file = tmp_path / "secret.key"
    key_file.write_text(str(key))
    a, b = make_replicas(2, "--private-key", str(key_file))
    expression = tmp_path / "closures.nix"
    expression.write_text(CLOSURES_NIX.replace("NONCE", secrets.token_hex(6)))
    app1 = nix(tmp_path / "home", "nix-build", str(expression), "-A", "app1", "--no-out-link")
    app1_path = app1.stdout.strip()
    nix(tmp_path / "home", "nix", "copy", "--to", f"{a.url}/nix", app1_path)
    published = set(s3_bucket.object_keys())

    # An orphan NAR (its narinfo never came), an unfinished multipart upload, a staged object.
    body = secrets.token_bytes(4096)
    orphan = f"nar/{encode(hashlib.sha256(body).digest())}.nar"
    assert httpx.put(f"{b.url}/nix/{orphan}", content=body).status_code == 200
    s3 = s3_bucket.client
    started = s3.create_multipart_upload(Bucket=s3_bucket.name, Key=".staging/unfinished")
    s3.upload_part(
        Bucket=s3_bucket.name, Key=".staging/unfinished", UploadId=started["UploadId"],
        PartNumber=1, Body=b"p" * 1024,
    )  # fmt: skip
    s3.put_object(Bucket=s3_bucket.name, Key=".staging/copied-never-deleted", Body=b"s" * 10)

    collections = [gc_process(s3_bucket, postgres_url, "--grace", "0") for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in collections]
    assert all(code in (0, 1) for code, _, _ in results), results
    collected = [out for code, out, _ in results if code == 0]
    assert collected, results
    # Whichever ran removed the orphan; a second one either waited its turn and found nothing
    # left, or was refused while the first held the lock.
    removed = [line for out in collected for line in out.splitlines() if line.startswith("nix:")]
    assert sum("removed 1 blob" in line for line in removed) == 1, results
    for code, _, err in results:
        if code == 1:
            assert "another collection is running" in err
    assert set(s3_bucket.object_keys()) == published
    assert f"nix/{orphan}" not in s3_bucket.object_keys()
    assert s3_bucket.pending_multipart_uploads() == []

    # Published content is intact through both replicas...
    trusted = ["--option", "trusted-public-keys", str(key.public_key())]
    nix(tmp_path / "home", "nix", "copy", *trusted, "--from", f"{b.url}/nix",
        "--to", str(tmp_path / "fresh"), app1_path)  # fmt: skip

    # ...until it is deleted through one of them: then the other has it no more.
    env = {**os.environ}
    deleted = subprocess.run(
        [sys.executable, "-m", "depot.core", "nix", "delete", a.url, app1_path],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert deleted.returncode == 0, deleted.stderr
    assert len(s3_bucket.object_keys()) == len(published) - 2  # its NAR and listing
    missing = subprocess.run(
        ["nix", "copy", *trusted, "--from", f"{b.url}/nix", "--to", str(tmp_path / "fresh2"),
         app1_path],
        capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home2"),
             "XDG_CACHE_HOME": str(tmp_path / "home2" / ".cache"),
             "NIX_CONFIG": "substituters =\nbuild-users-group =\nnarinfo-cache-negative-ttl = 0\n"
             "narinfo-cache-positive-ttl = 0\nexperimental-features = nix-command"},
    )  # fmt: skip
    assert missing.returncode != 0
