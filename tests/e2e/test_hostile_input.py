"""A corpus of malformed requests to every endpoint: each gets a 4xx, never a 5xx or a traceback.

The corpus is generated here, deterministically (one seed per endpoint): hostile path segments
(very long, control characters, undecodable escapes, huge numbers), hostile bodies (100,000
``[``, 100,000-digit numbers, invalid UTF-8, truncated documents) and, for every endpoint that
reads a document, the valid document with one value replaced by a hostile one or removed. The
requests run in-process (httpx's ASGITransport), after one valid npm package, Python wheel and
raw file were published, so that the update paths are reached too.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import random
import tarfile
import traceback
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from depot.core import create_app

REQUESTS_PER_ENDPOINT = 200

# -- hostile pieces ----------------------------------------------------------------------------

HOSTILE_SEGMENTS = [
    "",
    "a" * 300,
    "a" * 10_000,
    "%00",
    "%0a%0d",
    "..",
    "%2e%2e",
    "%2F",
    "%ff%fe",
    "\u202e",
    "%F0%9F%98%80" * 50,
    "[" * 2000,
    "-",
    "@",
    "@scope",
    "@a%2fb",
    "9" * 5000,
    "1." + "9" * 5000,
    "1.0.0-" + "a" * 5000,
    "latest",
    "x.narinfo",
    "sha256:" + "0" * 52 + "!out",
    "sha256:" + "z" * 5000 + "!out",
    "%25",
    "%",
    "a b",
    "*",
    "$(id)",
]

#: Raw values spliced into JSON documents (text that json.dumps cannot produce).
RAW_VALUES = [
    "[" * 100_000,
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 50_000 + "1" + "}" * 50_000,
    "1" * 100_000,
    "-" + "9" * 5000,
    "1." + "1" * 100_000,
    "1e" + "9" * 5000,
    "NaN",
    "Infinity",
    "-Infinity",
    '"\\ud800"',
    '"\\u0000"',
    '"\x01\x02"',
    "tru",
    "nul",
]

JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**64,
    1e308,
    "",
    "\x00\x01\x1f",
    "a" * 100_000,
    "\u202e\ufeff",
    [],
    [None],
    {},
    {"": None},
    {str(i): i for i in range(2000)},
    "1.0.0",
    ["1.0.0"],
]

HOSTILE_BODIES: list[bytes] = [
    b"",
    b"{",
    b"[",
    b"[" * 100_000,
    b"{" * 100_000,
    b'{"a":' * 50_000,
    b"1" * 100_000,
    b"\xff\xfe\x00",
    b"\xef\xbb\xbf{}",
    b'{"versions": null}',
    b"null",
    b"[]",
    b'""',
    b"NaN",
    b'{"a": NaN}',
    b'{"_rev": "\\u0000\\u0001"}',
    b'"\xc3"',
    b"\x00" * 1000,
    b"--boundary\r\n",
    json.dumps({f"junk{i}": i for i in range(200_000)}).encode(),
]

CONTENT_TYPES = [
    None,
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=boundary",
    "multipart/form-data",
    "multipart/form-data; boundary=" + "b" * 5000,
    "text/plain; charset=utf-16",
    "application/octet-stream",
    "\x7f",
]

QUERIES = [
    "",
    "text=" + "a" * 54_000,
    "text=%00%ff",
    "size=" + "9" * 5000,
    "from=" + "9" * 5000,
    "from=-1&size=-1",
    "size=abc",
    "format=" + "x" * 1000,
    "q=" + "%25" * 15_000,
    "write=true",
    "sha256=" + "g" * 64,
    "sha256=" + "0" * 50_000,
]


def mutations(document: Any, rng: random.Random) -> tuple[bytes, str]:
    """The document with one value replaced (by a JSON value or spliced raw text) or removed."""
    paths = list(_paths(document))
    path = rng.choice(paths) if paths else ()
    marker = "\x00RAW\x00"
    choice = rng.random()
    if choice < 0.4:
        raw = rng.choice(RAW_VALUES)
        mutated = _replace(document, path, marker)
        text = json.dumps(mutated).replace(json.dumps(marker), raw, 1)
        return text.encode("utf-8", "surrogatepass"), f"{path} = raw {raw[:20]!r}"
    if choice < 0.85 or not path:
        value = rng.choice(JSON_VALUES)
        return json.dumps(_replace(document, path, value)).encode(), f"{path} = {str(value)[:20]!r}"
    return json.dumps(_remove(document, path)).encode(), f"del {path}"


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def _remove(value: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        copy = dict(value) if isinstance(value, dict) else list(value)
        del copy[path[0]]
        return copy
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _remove(value[path[0]], path[1:])
    return copy


# -- valid documents the mutations start from ---------------------------------------------------


def npm_tarball(name: str, version: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        data = json.dumps({"name": name, "version": version}).encode()
        info = tarfile.TarInfo("package/package.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def npm_publish_document(name: str, version: str) -> dict[str, Any]:
    tgz = npm_tarball(name, version)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    return {
        "_id": name,
        "name": name,
        "dist-tags": {"latest": version},
        "versions": {
            version: {
                "name": name,
                "version": version,
                "dist": {"integrity": integrity, "shasum": hashlib.sha1(tgz).hexdigest()},  # noqa: S324
            }
        },
        "_attachments": {
            f"{name}-{version}.tgz": {
                "content_type": "application/octet-stream",
                "data": base64.b64encode(tgz).decode(),
                "length": len(tgz),
            }
        },
    }


def wheel(name: str, version: str, metadata_name: bytes | None = None) -> bytes:
    out = io.BytesIO()
    dist_info = f"{name}-{version}.dist-info"
    metadata = b"Metadata-Version: 2.1\nName: " + (metadata_name or name.encode())
    metadata += f"\nVersion: {version}\n".encode()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(f"{name}.py", "")
        archive.writestr(f"{dist_info}/METADATA", metadata)
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", "")
    return out.getvalue()


def twine_form(name: str, version: str, content: bytes) -> dict[str, Any]:
    return {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel",
        "sha256_digest": hashlib.sha256(content).hexdigest(),
    }


NARINFO = (
    "StorePath: /nix/store/{h}-hello\nURL: nar/{f}.nar\nCompression: none\n"
    "NarHash: sha256:{f}\nNarSize: 120\nReferences: \n"
)


# -- running the corpus ------------------------------------------------------------------------


@dataclass
class Outcome:
    request: str
    status: int
    error: str | None


class Recorder:
    """Wraps the app: any exception escaping it is recorded with its traceback's last lines."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.errors: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:
            self.errors.append(traceback.format_exc(limit=-3))
            raise


class LogCapture(logging.Handler):
    """Every depot log record at error level or with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.bad.append(f"{record.levelname} {record.getMessage()} {record.exc_info or ''}")


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Recorder, LogCapture]]:
    app = create_app(store_path=tmp_path / "store")
    recorder = Recorder(app)
    capture = LogCapture()
    depot_log = logging.getLogger("depot")
    depot_log.addHandler(capture)
    transport = httpx.ASGITransport(app=recorder, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://depot.test", timeout=60
    ) as client:
        await seed(client)
        capture.bad.clear()
        yield client, recorder, capture
    depot_log.removeHandler(capture)
    await app.state.depot.shutdown()


async def seed(client: httpx.AsyncClient) -> None:
    """One published thing per ecosystem, so that reads and updates find something."""
    answer = await client.put("/npm/seed", json=npm_publish_document("seed", "1.0.0"))
    assert answer.status_code == 201, answer.text
    content = wheel("seed", "1.0")
    answer = await client.post(
        "/python/",
        data=twine_form("seed", "1.0", content),
        files={"content": ("seed-1.0-py3-none-any.whl", content)},
    )
    assert answer.status_code == 200, answer.text
    answer = await client.put("/raw/files/seed.txt", content=b"seed")
    assert answer.status_code in (200, 201), answer.text


@dataclass
class Endpoint:
    """One route: its method, a path with ``{}`` for each segment, and what a valid body is."""

    method: str
    path: str
    valid_segments: tuple[str, ...] = ()
    document: Any = None  # a JSON document to mutate
    text: str | None = None  # a text body to mutate
    form: bool = False  # twine's multipart form
    query: bool = False

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


_FILE_HASH = "1" * 52
_HASH = "0" * 32
ENDPOINTS = [
    # core
    Endpoint("GET", "/", query=True),
    Endpoint("GET", "/-/health"),
    Endpoint("GET", "/-/browse/{}", ("npm",), query=True),
    Endpoint("GET", "/metrics"),
    # npm
    Endpoint("GET", "/npm/{}", ("seed",), query=True),
    Endpoint("PUT", "/npm/{}", ("seed2",), document=npm_publish_document("seed2", "1.0.0")),
    Endpoint("PUT", "/npm/{}", ("seed",), document={"_id": "seed", "name": "seed",
             "versions": {"1.0.0": {"name": "seed", "version": "1.0.0", "deprecated": "old"}}}),
    Endpoint("PUT", "/npm/{}/-rev/{}", ("seed", "1-0"),
             document={"_id": "seed", "versions": {"1.0.0": {"name": "seed"}}}),
    Endpoint("DELETE", "/npm/{}/-rev/{}", ("nosuch", "1-0")),
    Endpoint("GET", "/npm/{}/{}", ("seed", "1.0.0")),
    Endpoint("PUT", "/npm/{}/{}", ("seed", "2.0.0"),
             document={"name": "seed", "version": "2.0.0", "dist": {"shasum": "0" * 40}}),
    Endpoint("GET", "/npm/{}/-/{}", ("seed", "seed-1.0.0.tgz")),
    Endpoint("PUT", "/npm/{}/-/{}", ("seed", "seed-3.0.0.tgz"), text="not a tarball"),
    Endpoint("DELETE", "/npm/{}/-/{}/-rev/{}", ("seed", "seed-9.0.0.tgz", "1-0")),
    Endpoint("GET", "/npm/-/package/{}/dist-tags", ("seed",)),
    Endpoint("PUT", "/npm/-/package/{}/dist-tags/{}", ("seed", "beta"), document="1.0.0"),
    Endpoint("DELETE", "/npm/-/package/{}/dist-tags/{}", ("seed", "beta")),
    Endpoint("GET", "/npm/-/v1/search", query=True),
    Endpoint("POST", "/npm/-/npm/v1/security/advisories/bulk", document={"seed": ["1.0.0"]}),
    Endpoint("PUT", "/npm/-/user/{}", ("org.couchdb.user:a",), document={"name": "a"}),
    # nix
    Endpoint("PUT", "/nix/nix-cache-info", text="StoreDir: /nix/store\n"),
    Endpoint("GET", "/nix/{}.narinfo", (_HASH,)),
    Endpoint("PUT", "/nix/{}.narinfo", (_HASH,), text=NARINFO.format(h=_HASH, f=_FILE_HASH)),
    Endpoint("GET", "/nix/{}.ls", (_HASH,)),
    Endpoint("PUT", "/nix/{}.ls", (_HASH,), document={"version": 1, "root": {"type": "regular"}}),
    Endpoint("GET", "/nix/nar/{}", (f"{_FILE_HASH}.nar",)),
    Endpoint("PUT", "/nix/nar/{}", (f"{_FILE_HASH}.nar.xz",), text="not a nar"),
    Endpoint("GET", "/nix/log/{}", ("abc-x.drv",)),
    Endpoint("PUT", "/nix/log/{}", (f"{_HASH}-x.drv",), text="a log line\n"),
    Endpoint("GET", "/nix/realisations/{}.doi", ("sha256:" + _FILE_HASH + "!out",)),
    Endpoint("PUT", "/nix/realisations/{}.doi", ("sha256:" + _FILE_HASH + "!out",),
             document={"id": "sha256:x!out", "outPath": "x-y", "signatures": [],
                       "dependentRealisations": {}}),
    # python
    Endpoint("GET", "/python/simple/", query=True),
    Endpoint("GET", "/python/simple/{}/", ("seed",), query=True),
    Endpoint("GET", "/python/files/{}/{}", ("seed", "seed-1.0-py3-none-any.whl.metadata")),
    Endpoint("PUT", "/python/files/{}/{}", ("seed", "seed-2.0-py3-none-any.whl"), text="zip?",
             query=True),
    Endpoint("POST", "/python/", form=True),
    Endpoint("POST", "/python/-/yank/{}/{}", ("seed", "1.0"), document={"reason": "broken"}),
    Endpoint("DELETE", "/python/-/yank/{}/{}", ("seed", "1.0")),
    # the third-party example
    Endpoint("PUT", "/raw/files/{}", ("x.txt",), text="raw"),
    Endpoint("GET", "/raw/files/{}", ("seed.txt",)),
]  # fmt: skip


def corpus(endpoint: Endpoint) -> Iterator[tuple[str, dict[str, Any]]]:
    """``REQUESTS_PER_ENDPOINT`` requests for ``endpoint``: (description, httpx arguments)."""
    rng = random.Random(endpoint.id)
    for _ in range(REQUESTS_PER_ENDPOINT):
        segments = [
            rng.choice(HOSTILE_SEGMENTS) if rng.random() < 0.4 else valid
            for valid in endpoint.valid_segments
        ]
        path = endpoint.path.format(*segments)
        arguments: dict[str, Any] = {"headers": {}}
        if endpoint.query and rng.random() < 0.5:
            path += "?" + rng.choice(QUERIES)
        description = path[:120]
        if endpoint.method in ("PUT", "POST"):
            body, what = _body(endpoint, rng)
            arguments["content"] = body
            description += f" body: {what}"
            content_type = rng.choice(CONTENT_TYPES)
            if endpoint.form and rng.random() < 0.7:
                content_type = "multipart/form-data; boundary=boundary"
            if content_type is not None:
                arguments["headers"]["content-type"] = content_type
                description += f" ({content_type[:40]})"
        if rng.random() < 0.1:
            arguments["headers"]["accept"] = rng.choice(
                ["application/vnd.npm.install-v1+json", "text/html;q=abc", "*/*;q=" + "9" * 500]
            )
        if rng.random() < 0.05:
            arguments["headers"]["range"] = rng.choice(["bytes=9999999999-", "bytes=-0", "bytes=x"])
        yield description, {"url": path, "method": endpoint.method, **arguments}


def _body(endpoint: Endpoint, rng: random.Random) -> tuple[bytes, str]:
    if endpoint.form:
        return _form_body(rng)
    if endpoint.document is not None and rng.random() < 0.7:
        return mutations(endpoint.document, rng)
    if endpoint.text is not None and rng.random() < 0.5:
        lines = endpoint.text.splitlines(keepends=True)
        index = rng.randrange(len(lines))
        lines[index] = rng.choice(
            ["", "\x00\n", "a" * 100_000 + "\n", "URL: " + "9" * 5000 + "\n", lines[index] * 1000]
        )
        return "".join(lines).encode(), f"line {index} mutated"
    body = rng.choice(HOSTILE_BODIES)
    return body, repr(body[:30])


def _form_body(rng: random.Random) -> tuple[bytes, str]:
    """A multipart form as twine sends it, with one field or the file made hostile."""
    content = wheel("seed", "3.0")
    fields = twine_form("seed", "3.0", content)
    filename = "seed-3.0-py3-none-any.whl"
    choice = rng.random()
    if choice < 0.3:
        field = rng.choice(list(fields))
        fields[field] = rng.choice(
            ["", "\x00", "9" * 5000, "1." + "9" * 5000, "a" * 100_000, "file_upload", "sdist"]
        )
        what = f"field {field}"
    elif choice < 0.5:
        content = wheel("seed", "3.0", metadata_name=rng.choice([b"\xff\xfe", b"s\xe9ed", b""]))
        fields["sha256_digest"] = hashlib.sha256(content).hexdigest()
        what = "METADATA Name mutated"
    elif choice < 0.7:
        filename = rng.choice(["", "x", "../x.whl", "seed-" + "9" * 5000 + "-py3-none-any.whl"])
        what = f"filename {filename[:30]}"
    else:
        cut = rng.randrange(len(content))
        content = content[:cut]
        what = f"file cut at {cut}"
    parts = []
    for key, value in fields.items():
        parts.append(
            f'--boundary\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode(
                "utf-8", "surrogatepass"
            )
        )
    parts.append(
        f'--boundary\r\nContent-Disposition: form-data; name="content"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    if rng.random() < 0.9:
        parts.append(b"--boundary--\r\n")
    return b"".join(parts), what


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.id for e in ENDPOINTS])
async def test_malformed_requests_get_4xx_without_tracebacks(
    hostile: tuple[httpx.AsyncClient, Recorder, LogCapture], endpoint: Endpoint
) -> None:
    client, recorder, capture = hostile
    failures: list[str] = []
    for description, arguments in corpus(endpoint):
        answer = await client.request(**arguments)
        if answer.status_code >= 500 or recorder.errors:
            failures.append(
                f"{answer.status_code} {endpoint.method} {description}: "
                f"{answer.text[:200]} {recorder.errors[-1] if recorder.errors else ''}"
            )
            recorder.errors.clear()
    assert not failures, f"{len(failures)} of {REQUESTS_PER_ENDPOINT}:\n" + "\n".join(failures[:10])
    assert not capture.bad, "\n".join(capture.bad[:5])
