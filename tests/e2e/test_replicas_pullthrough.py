"""Two pull-through replicas sharing one S3 bucket and one PostgreSQL database, one upstream.

Each replica fetches a missing object at most once (single-flight is per process), both store
it under the same content address without conflict, and from then on neither asks upstream.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from depot.core.testing import DepotServer


def tarball(name: str, version: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        data = json.dumps({"name": name, "version": version}).encode()
        info = tarfile.TarInfo("package/package.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def publish(registry: str, name: str, version: str) -> bytes:
    tgz = tarball(name, version)
    dist = {
        "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode(),
        "shasum": hashlib.sha1(tgz).hexdigest(),  # noqa: S324 - npm's legacy shasum
    }
    body = {
        "_id": name,
        "name": name,
        "dist-tags": {"latest": version},
        "versions": {version: {"name": name, "version": version, "dist": dist}},
        "_attachments": {
            f"{name}-{version}.tgz": {"data": base64.b64encode(tgz).decode(), "length": len(tgz)}
        },
    }
    assert httpx.put(registry + name, json=body).status_code == 201
    return tgz


def upstream_requests(upstream: DepotServer, path: str) -> int:
    """GETs of ``path`` the upstream answered, from its access log."""
    count = 0
    for line in upstream.settled_log().splitlines():
        if '"depot.access"' in line:
            entry = json.loads(line)
            count += entry["path"] == path and entry["method"] == "GET"
    return count


def test_replicas_fetch_each_object_at_most_once_and_store_it_once(
    make_depot_server: Callable[..., DepotServer],
    make_replicas: Callable[..., list[DepotServer]],
) -> None:
    upstream = make_depot_server()
    tgz = publish(upstream.url + "/npm/", "replicated", "1.0.0")
    replicas = make_replicas(2, "--npm-upstream", upstream.url + "/npm/")
    urls = [r.url + "/npm/replicated/-/replicated-1.0.0.tgz" for r in replicas] * 10
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda url: httpx.get(url, timeout=60), urls))
    assert all(a.status_code == 200 and a.content == tgz for a in answers)
    tarball_path = "/npm/replicated/-/replicated-1.0.0.tgz"
    assert 1 <= upstream_requests(upstream, tarball_path) <= 2
    assert 1 <= upstream_requests(upstream, "/npm/replicated") <= 2
    seen = upstream_requests(upstream, tarball_path)
    for replica in replicas:
        assert httpx.get(replica.url + "/npm/replicated/-/replicated-1.0.0.tgz").content == tgz
        packument = httpx.get(replica.url + "/npm/replicated").json()
        assert packument["versions"]["1.0.0"]["dist"]["tarball"].startswith(replica.url)
    assert upstream_requests(upstream, tarball_path) == seen
