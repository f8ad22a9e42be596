"""The ``s3`` blob store: objects in one S3-compatible bucket (AWS, MinIO, SeaweedFS, GCS interop).

Several ``depot serve`` replicas share one bucket; nothing about a blob is kept in one process.
boto3 is synchronous, so every call runs on a small thread pool, off the event loop.

Atomic publication: an upload of less than :data:`PART_SIZE` bytes is held in memory and sent
with a single ``PutObject`` at commit. A larger one is streamed as a multipart upload, in parts of
:data:`PART_SIZE`, under a staging key of its own (``.staging/<random>``); at commit it is
completed there and copied server-side to its key (S3 has no rename), then the staging object is
deleted. Leaving the upload without commit (verification failed, client went away, the store
failed) aborts the multipart upload, so no partial object is ever visible, and uploads racing
for one key never see each other's bytes. Memory per upload stays at about two parts: one being
filled while the previous one is sent.

A process killed midway cannot abort: ``depot gc`` (:meth:`S3BlobStore.remove_leftovers`) aborts
multipart uploads and deletes staged objects older than its grace period, and a bucket lifecycle
rule (``AbortIncompleteMultipartUpload`` and expiry of ``.staging/``, see depot-core/README.md)
does the same on the bucket's side; none of it is ever visible under a depot key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from depot.core.blobs import (
    CHUNK_SIZE,
    BlobEntry,
    BlobStat,
    Hashes,
    LeftoverReport,
    StorageBackend,
    check_key,
)
from depot.core.errors import ConfigError
from depot.core.hookspecs import hookimpl
from depot.core.settings import option

if TYPE_CHECKING:
    from depot.core.settings import Settings

log = logging.getLogger("depot.core.s3")

#: Multipart part size (a part is sent once this much is buffered). S3 wants at least 5 MiB per
#: part (but the last) and at most 10,000 parts, so one object can reach about 78 GiB; an upload
#: holds about two parts in memory: one being filled while the previous one is sent.
PART_SIZE = 8 * 1024 * 1024

#: Downloads are read from the GET response in chunks this large.
READ_CHUNK_SIZE = 4 * CHUNK_SIZE

#: Threads (and pooled HTTP connections) per process for boto3 calls.
MAX_THREADS = 16

#: Where multipart uploads are staged until commit. Depot's keys never start with ``.``
#: (:func:`depot.core.blobs.check_key`), so nothing else lives here; a lifecycle rule may expire it.
STAGING_PREFIX = ".staging/"

T = TypeVar("T")


def _error_code(exc: Exception) -> tuple[str, int]:
    """The S3 error code and HTTP status of a botocore ``ClientError``."""
    response = getattr(exc, "response", {}) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _is_not_found(exc: Exception) -> bool:
    code, status = _error_code(exc)
    return status == 404 or code in ("404", "NoSuchKey", "NotFound")


class S3BlobUpload:
    """A write in progress; see the module docstring for how it stays invisible until commit."""

    def __init__(self, store: S3BlobStore, key: str, hashes: Iterable[str]) -> None:
        self._store = store
        self._key = key
        self._hashes = Hashes(hashes)
        self._size = 0
        # Bytes not yet sent, as written (no growing buffer to reallocate); the first
        # ``_hashed`` chunks are already in the digests.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._hashed = 0
        # Multipart uploads are staged under a key of their own: a commit under another key (a
        # digest) must copy, and a key shared by racing uploads would let one copy another's bytes.
        self._staging = f"{STAGING_PREFIX}{secrets.token_hex(16)}"
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._in_flight: asyncio.Future[None] | None = None
        self._committed = False

    @property
    def size(self) -> int:
        return self._size

    def hexdigest(self, algorithm: str) -> str:
        assert self._hashed == len(self._chunks), "await complete() before reading digests"
        return self._hashes.hexdigest(algorithm)

    def digest(self, algorithm: str) -> bytes:
        assert self._hashed == len(self._chunks), "await complete() before reading digests"
        return self._hashes.digest(algorithm)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(bytes(data))
        self._size += len(data)
        self._buffered += len(data)
        if self._buffered >= PART_SIZE:
            await self._send_part()

    def _hash_pending(self) -> None:
        for chunk in self._chunks[self._hashed :]:
            self._hashes.update(chunk)
        self._hashed = len(self._chunks)

    async def _hash_buffer(self) -> None:
        """Feed the chunks not yet hashed to the digests, off the event loop."""
        if self._hashed < len(self._chunks):
            await asyncio.to_thread(self._hash_pending)

    def _take_part(self) -> bytes:
        self._hash_pending()
        part = b"".join(self._chunks)
        self._chunks, self._buffered, self._hashed = [], 0, 0
        return part

    async def _send_part(self) -> None:
        """Hash everything buffered and start uploading it as the next part.

        One part is in flight while the next one is buffered, so receiving and sending overlap;
        the previous part is awaited first, which keeps memory at about two parts.
        """
        await self._wait_for_part()
        part = await asyncio.to_thread(self._take_part)
        if self._upload_id is None:
            created = await self._store.call(
                "create_multipart_upload", Bucket=self._store.bucket, Key=self._staging
            )
            self._upload_id = created["UploadId"]
        self._in_flight = asyncio.ensure_future(self._upload_part(len(self._parts) + 1, part))
        self._parts.append({"PartNumber": len(self._parts) + 1})

    async def _upload_part(self, number: int, part: bytes) -> None:
        uploaded = await self._store.call(
            "upload_part",
            Bucket=self._store.bucket,
            Key=self._staging,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=part,
        )
        self._parts[number - 1]["ETag"] = uploaded["ETag"]

    async def _wait_for_part(self) -> None:
        """Wait for the part in flight; its failure fails the upload."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight

    async def complete(self) -> None:
        await self._hash_buffer()

    async def commit(self, key: str | None = None) -> None:
        """Publish under ``key`` (default: the key given at open), replacing any object there.

        A small blob is one ``PutObject``. A multipart upload is completed under its staging key
        and copied server-side to the final key (S3's rename), then the staging object deleted.
        """
        await self._hash_buffer()
        store, final = self._store, check_key(key) if key else self._key
        if self._upload_id is None:
            body = b"".join(self._chunks)
            await store.call("put_object", Bucket=store.bucket, Key=final, Body=body)
        else:
            if self._chunks:
                await self._send_part()
            await self._wait_for_part()
            await store.call(
                "complete_multipart_upload",
                Bucket=store.bucket,
                Key=self._staging,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
            self._committed = True
            try:
                await store.call(
                    "copy",
                    CopySource={"Bucket": store.bucket, "Key": self._staging},
                    Bucket=store.bucket,
                    Key=final,
                    Config=store.transfer_config,
                )
            finally:
                await self._delete_staging()
        self._chunks, self._buffered, self._hashed = [], 0, 0
        self._committed = True

    async def _delete_staging(self) -> None:
        """Remove the staging object; once the copy is published, failing here fails nothing."""
        try:
            await self._store.call("delete_object", Bucket=self._store.bucket, Key=self._staging)
        except Exception as exc:  # invisible under any depot key; the lifecycle rule expires it
            log.warning(
                "could not delete staging object",
                extra={"key": self._staging, "error": f"{type(exc).__name__}: {exc}"},
            )

    async def abort(self) -> None:
        """Drop the buffered bytes and any uploaded parts; a no-op after commit."""
        self._chunks, self._buffered, self._hashed = [], 0, 0
        if self._in_flight is not None:
            with contextlib.suppress(Exception):  # its failure is why we abort, or moot now
                await self._wait_for_part()
        if self._upload_id is None or self._committed:
            return
        upload_id, self._upload_id = self._upload_id, None
        try:
            await self._store.call(
                "abort_multipart_upload",
                Bucket=self._store.bucket,
                Key=self._staging,
                UploadId=upload_id,
            )
        except Exception as exc:  # the parts stay invisible; a lifecycle rule reclaims them
            log.warning(
                "could not abort multipart upload",
                extra={"key": self._key, "error": f"{type(exc).__name__}: {exc}"},
            )


class S3BlobStore:
    """Blobs as objects in one bucket, keyed as depot keys them (``npm/...``, ``nix/...``)."""

    def __init__(self, client: Any, bucket: str, max_threads: int = MAX_THREADS) -> None:
        self.client = client
        self.bucket = bucket
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="depot-s3")
        from boto3.s3.transfer import TransferConfig

        # Server-side copies of staged uploads: one CopyObject up to 5 GiB (S3's limit for it),
        # a multipart copy beyond, run by the calling pool thread itself.
        self.transfer_config = TransferConfig(
            multipart_threshold=5 * 1024**3, multipart_chunksize=512 * 1024**2, use_threads=False
        )

    async def call(self, method: str, **kwargs: Any) -> Any:
        """Run one boto3 client method on the thread pool."""
        return await self.run(getattr(self.client, method), **kwargs)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def stat(self, key: str) -> BlobStat | None:
        from botocore.exceptions import ClientError

        try:
            head = await self.call("head_object", Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise
        # S3's ETag is derived from the object's bytes (MD5, or MD5 of part MD5s), the same
        # for every replica reading the bucket.
        modified = head.get("LastModified")
        return BlobStat(
            size=int(head["ContentLength"]),
            modified=modified.timestamp() if modified is not None else None,
            etag=head.get("ETag"),
        )

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        from botocore.exceptions import ClientError

        if end is not None and end <= start:
            return
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": check_key(key)}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await self.call("get_object", **request)
        except ClientError as exc:
            if _is_not_found(exc):
                raise FileNotFoundError(key) from exc
            raise
        body = response["Body"]
        try:
            while True:
                chunk = await self.run(body.read, READ_CHUNK_SIZE)
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    @asynccontextmanager
    async def upload(
        self, key: str, hashes: Iterable[str] = ("sha256",)
    ) -> AsyncIterator[S3BlobUpload]:
        upload = S3BlobUpload(self, check_key(key), hashes)
        try:
            yield upload
        finally:
            await upload.abort()

    async def delete(self, key: str) -> None:
        await self.call("delete_object", Bucket=self.bucket, Key=check_key(key))

    async def delete_many(self, keys: Sequence[str]) -> None:
        """DeleteObjects, 1,000 keys a call (S3's limit); a key that failed raises."""
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": check_key(k)} for k in keys[start : start + 1000]]
            answer = await self.call(
                "delete_objects",
                Bucket=self.bucket,
                Delete={"Objects": chunk, "Quiet": True},
            )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(
                    f"S3 could not delete {len(errors)} object(s), first {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )

    async def _pages(self, method: str, **request: Any) -> AsyncIterator[dict[str, Any]]:
        """The pages of a paginated listing, one call each, as they are needed."""
        paginator = self.client.get_paginator(method)
        pages = iter(paginator.paginate(Bucket=self.bucket, **request))
        while (page := await self.run(next, pages, None)) is not None:
            yield page

    async def list(self, prefix: str) -> AsyncIterator[BlobEntry]:
        async for page in self._pages("list_objects_v2", Prefix=prefix):
            for item in page.get("Contents", ()):
                if item["Key"].startswith("."):
                    continue
                yield BlobEntry(item["Key"], int(item["Size"]), item["LastModified"].timestamp())

    async def remove_leftovers(self, older_than: float, dry_run: bool = False) -> LeftoverReport:
        """Abort multipart uploads begun before ``older_than`` and delete staged objects of
        copies that never finished (the staging object is deleted after each copy)."""
        objects = size = 0
        async for page in self._pages("list_multipart_uploads", Prefix=STAGING_PREFIX):
            for upload in page.get("Uploads", ()):
                if upload["Initiated"].timestamp() >= older_than:
                    continue
                parts = await self.call(
                    "list_parts", Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                objects += 1
                size += sum(int(p["Size"]) for p in parts.get("Parts", ()))
                if not dry_run:
                    await self.call(
                        "abort_multipart_upload",
                        Bucket=self.bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
        async for page in self._pages("list_objects_v2", Prefix=STAGING_PREFIX):
            stale = [
                item
                for item in page.get("Contents", ())
                if item["LastModified"].timestamp() < older_than
            ]
            objects += len(stale)
            size += sum(int(item["Size"]) for item in stale)
            if stale and not dry_run:
                await self.call(
                    "delete_objects",
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": i["Key"]} for i in stale], "Quiet": True},
                )
        return LeftoverReport(objects, size)

    def local_path(self, key: str) -> Path | None:
        return None

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.client.close)


def make_client(settings: Settings) -> Any:
    """A boto3 S3 client from the ``--s3-*`` options; no credentials: boto3's default chain."""
    import boto3
    from botocore.config import Config

    extra = settings.extra
    key_id, secret = extra.get("s3_access_key_id"), extra.get("s3_secret_access_key")
    if bool(key_id) != bool(secret):
        raise ConfigError("--s3-access-key-id and --s3-secret-access-key must be given together")
    config = Config(
        region_name=extra.get("s3_region") or "us-east-1",
        s3={"addressing_style": "path" if extra.get("s3_force_path_style") else "auto"},
        max_pool_connections=MAX_THREADS,
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        # Checksums only where S3 requires them: several S3-compatible stores (GCS interop,
        # older MinIO) refuse the flexible checksums boto3 sends by default since 1.36.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session(
        aws_access_key_id=key_id or None, aws_secret_access_key=secret or None
    )
    return session.client("s3", endpoint_url=extra.get("s3_endpoint") or None, config=config)


def check_bucket(client: Any, bucket: str, where: str) -> None:
    """Prove at start-up that the bucket exists and the credentials reach it, in one line if not."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError as exc:
        raise ConfigError(
            "no S3 credentials: set --s3-access-key-id and --s3-secret-access-key "
            "(or AWS_ACCESS_KEY_ID, a profile, an IAM role)"
        ) from exc
    except ClientError as exc:
        code, status = _error_code(exc)
        if status == 404 or code in ("404", "NoSuchBucket"):
            raise ConfigError(f"S3 bucket {bucket!r} does not exist at {where}") from exc
        if status in (401, 403):
            raise ConfigError(
                f"S3 refused access to bucket {bucket!r} at {where} ({code or status}): "
                "check the access key, secret and the bucket's policy"
            ) from exc
        raise ConfigError(f"S3 bucket {bucket!r} at {where} answered {code or status}") from exc
    except BotoCoreError as exc:
        raise ConfigError(f"cannot reach S3 at {where}: {exc}".splitlines()[0]) from exc


async def open_s3(settings: Settings) -> S3BlobStore:
    """The ``open`` of the ``s3`` backend: build the client and check the bucket."""
    bucket = settings.extra.get("s3_bucket")
    if not bucket:
        raise ConfigError("--storage-type s3 needs --s3-bucket (or DEPOT_S3_BUCKET)")
    where = (
        settings.extra.get("s3_endpoint")
        or f"region {settings.extra.get('s3_region') or 'us-east-1'}"
    )
    client = make_client(settings)
    try:
        await asyncio.to_thread(check_bucket, client, bucket, where)
    except ConfigError:
        client.close()
        raise
    log.info("s3 blob store ready", extra={"bucket": bucket, "endpoint": where})
    return S3BlobStore(client, bucket)


@hookimpl
def depot_storage_backends() -> list[StorageBackend]:
    return [StorageBackend("s3", open_s3, "objects in an S3-compatible bucket (--s3-*)")]


@hookimpl
def depot_serve_options() -> list[click.Option]:
    return [
        option(
            ["--s3-bucket"],
            default=None,
            help="S3 bucket for blobs (required with --storage-type s3).",
        ),
        option(["--s3-region"], default="us-east-1", show_default=True, help="S3 region."),
        option(
            ["--s3-endpoint"],
            default=None,
            help="S3 endpoint URL for MinIO, SeaweedFS, LocalStack, GCS interop [default: AWS].",
        ),
        option(
            ["--s3-access-key-id"],
            default=None,
            help="S3 access key [default: boto3's chain: environment, profile, IAM role].",
        ),
        option(
            ["--s3-secret-access-key"],
            default=None,
            help="S3 secret key (with --s3-access-key-id).",
        ),
        option(
            ["--s3-force-path-style"],
            is_flag=True,
            default=False,
            help="Address the bucket as ENDPOINT/BUCKET (MinIO, most self-hosted stores).",
        ),
    ]
