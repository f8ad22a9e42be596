"""``--nix-upstream``: narinfos and NARs of paths not pushed here, from upstream binary caches.

Reads top to bottom per request, after the local cache (pushed paths, ``--nix-local-store``)
found nothing under the hash part:

- narinfo: held -> served (a narinfo never changes, so it never needs upstream again);
  remembered missing (a negative answer within the last minute) -> 404; else each
  ``--nix-upstream`` in order: the first narinfo found must parse, describe the hash part asked
  for, name its NAR as ``nar/<file hash>.nar<ext>`` and carry a valid signature by a
  ``--nix-upstream-key``, or it is a 502 with the reason and nothing is kept; a verified one is
  stored as the upstream signed it and served with depot's own signature added;
- NAR: held and verified -> served; else streamed from the upstream to the client while it is
  stored (:meth:`depot.core.upstream.UpstreamClient.fetch_blob`) and, before anything points at
  it, checked against FileHash/FileSize and, decompressed, against NarHash/NarSize with the
  same verification as ``nix copy --to`` uploads (:func:`depot.nix.verify.verify_nar`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.blobs import BlobUpload
from depot.core.errors import ConfigError, NotFound
from depot.core.http import blob_response
from depot.core.upstream import Unverified, UpstreamError
from depot.nix import narinfo, tables
from depot.nix.narinfo import NAR_URL, NarInfo, NarInfoError
from depot.nix.nixbase32 import encode
from depot.nix.signing import PublicKey
from depot.nix.verify import VerificationError, verify_nar
from starlette.requests import Request
from starlette.responses import Response

NAR_TYPE = "application/x-nix-nar"


def page_topic(hash_part: str) -> str:
    """What a fetch from upstream announces (:mod:`depot.core.changes`): it moves the
    ecosystem's generation, which kept pages follow (the path's page and those referring to
    it), but not the hash part's own topic. The narinfo served for the hash part is the one just
    rendered from this very fetch; moving its topic would only make the next lookup render it
    again."""
    return f"upstream:{hash_part}"


class NixUpstreams:
    """The pull-through side of the binary cache over ``--nix-upstream`` URLs, in order."""

    def __init__(
        self, ctx: EcosystemContext, urls: Sequence[str] | str, keys: Sequence[str] | str
    ) -> None:
        # create_app(nix_upstream="...") may name one of each as a plain string.
        urls = [urls] if isinstance(urls, str) else list(urls)
        keys = [keys] if isinstance(keys, str) else list(keys)
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"--nix-upstream {url!r} is not an http(s) URL")
        if not keys:
            raise ConfigError("--nix-upstream needs at least one --nix-upstream-key NAME:BASE64")
        self.keys: list[PublicKey] = []
        for text in keys:
            try:
                self.keys.append(PublicKey.parse(text))
            except ValueError as exc:
                raise ConfigError(f"--nix-upstream-key: {exc}") from None
        self.ctx = ctx
        self.urls = [url.rstrip("/") for url in urls]

    # -- narinfos --------------------------------------------------------------------------

    async def narinfo(self, hash_part: str) -> NarInfo | None:
        """The held or fetched narinfo of ``hash_part`` as the upstream signed it, or None."""
        client = self.ctx.upstream
        row = await self._row(tables.upstream_narinfos.c.hash_part == hash_part)
        if row is not None:
            client.hit(row["upstream_url"])
            self.used(hash_part)
            return narinfo.parse(row["narinfo"])
        if client.known_missing(("narinfo", hash_part)):
            return None
        client.miss(self.urls[0])
        return await client.single_flight(("narinfo", hash_part), lambda: self._fetch(hash_part))

    async def _row(self, condition: sa.ColumnElement[bool]) -> sa.Row | None:
        return await self.ctx.db.fetch_one(
            sa.select(tables.upstream_narinfos).where(condition).limit(1)
        )

    async def _fetch(self, hash_part: str) -> NarInfo | None:
        client = self.ctx.upstream
        failure: UpstreamError | None = None
        for upstream in self.urls:
            try:
                fetched = await client.fetch_document(
                    upstream, f"{upstream}/{hash_part}.narinfo", limit=narinfo.MAX_NARINFO_SIZE
                )
            except UpstreamError as exc:
                failure = exc
                continue
            if fetched.status != 200:
                continue
            info = self._verified(upstream, hash_part, fetched.body)
            text = narinfo.format(info)
            row = {
                "hash_part": hash_part, "upstream_url": upstream, "narinfo": text,
                "nar_url": info.url, "fetched_at": time.time(),
            }  # fmt: skip
            # One write shared with the others of that moment (a `nix copy --from` asks for a
            # closure's narinfos together); evictable (--cache-max-size/-age), the NAR adding
            # its size once stored.
            await self.ctx.group_commit(
                [(self.ctx.db.insert_or_ignore(tables.upstream_narinfos), row)],
                cached=[(hash_part, len(text))],
                notify=[page_topic(hash_part)],
            )
            return info
        if failure is not None:
            raise failure
        client.remember_missing(("narinfo", hash_part))
        return None

    def used(self, hash_part: str) -> None:
        """Note that the cached path was served (batched by the core, no write per request)."""
        self.ctx.record_use(hash_part)

    def _verified(self, upstream: str, hash_part: str, body: bytes) -> NarInfo:
        """The upstream's narinfo, or a 502 saying why it cannot be trusted."""
        try:
            info = narinfo.parse(body.decode())
        except (NarInfoError, UnicodeDecodeError) as exc:
            raise self._refused(upstream, f"{hash_part}.narinfo is not valid: {exc}") from None
        if info.hash_part != hash_part:
            raise self._refused(upstream, f"{hash_part}.narinfo describes {info.store_path}")
        if not NAR_URL.match(info.url):
            raise self._refused(upstream, f"{hash_part}.narinfo names its NAR {info.url!r}")
        if not any(info.verify_signature(key) for key in self.keys):
            names = ", ".join(key.name for key in self.keys)
            raise self._refused(
                upstream, f"{hash_part}.narinfo carries no valid signature by {names}"
            )
        return info

    def _refused(self, upstream: str, reason: str) -> UpstreamError:
        self.ctx.depot.metrics.upstream_errors.labels(self.ctx.name, upstream).inc()
        self.ctx.log.error(
            "upstream content failed verification",
            extra={"upstream": upstream, "reason": reason},
        )
        return UpstreamError(upstream, reason)

    # -- NARs ------------------------------------------------------------------------------

    async def nar(self, request: Request, key: str) -> Response:
        """A NAR some held upstream narinfo names: from the store, or fetched and verified."""
        client = self.ctx.upstream
        row = await self._row(tables.upstream_narinfos.c.nar_url == key)
        if row is None:
            raise NotFound(f"{key} not found")
        upstream = row["upstream_url"]
        if row["nar_key"] is not None:
            stored_key = row["nar_key"]
            try:
                response = await blob_response(
                    self.ctx.blobs, stored_key, request, NAR_TYPE,
                    on_start=lambda size: self.ctx.artifact_served(stored_key, size, request),
                )  # fmt: skip
            except NotFound:
                pass  # the blob is gone: fetch it again
            else:
                client.hit(upstream)
                self.used(row["hash_part"])
                return response
        info = narinfo.parse(row["narinfo"])

        async def finish(upload: BlobUpload) -> None:
            if info.file_size is not None and upload.size != info.file_size:
                raise Unverified(f"{key} has {upload.size} bytes, FileSize says {info.file_size}")
            digest = upload.digest("sha256")
            if info.file_hash is not None and digest != info.file_hash.digest:
                raise Unverified(f"{key} hashes to sha256:{encode(digest)}, not FileHash")
            stored_key = f"upstream/{key}"
            listing_key = f"upstream/listing/{info.nar_hash.nix32()}.ls"
            await upload.commit(stored_key)
            try:
                await verify_nar(self.ctx.blobs, stored_key, info, listing_key)
            except VerificationError as exc:
                await self.ctx.blobs.delete(stored_key)
                raise Unverified(str(exc)) from None
            async with self.ctx.reference_blobs(stored_key, listing_key):
                await self.ctx.db.execute(
                    tables.upstream_narinfos.update()
                    .where(tables.upstream_narinfos.c.nar_url == key)
                    .values(nar_key=stored_key, listing_key=listing_key)
                )
                await self.ctx.cache_stored(row["hash_part"], upload.size + len(row["narinfo"]))
            await self.ctx.changes.notify(page_topic(row["hash_part"]))  # NAR held now
            self.ctx.artifact_stored(stored_key, upload.size, request)

        return await client.fetch_blob(
            request,
            key=("nar", key),
            upstream=upstream,
            url=f"{upstream}/{key}",
            open_upload=lambda: self.ctx.blobs.upload(f"incoming/{uuid.uuid4().hex}"),
            finish=finish,
            media_type=NAR_TYPE,
        )
