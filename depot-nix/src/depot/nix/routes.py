"""Routes of the Nix binary cache under ``/nix``.

What ``nix copy --to`` sends, in order (``binary-cache-store.cc``, ``http-binary-cache-store.cc``):
``GET nix-cache-info``, then per path ``PUT <hash>.ls``, ``HEAD``/``PUT nar/<filehash>.nar<ext>``
and last ``PUT <hash>.narinfo``. A NAR is stored as uploaded, keyed by its file hash, once its bytes
hash to the name; it is served only after a narinfo naming it was verified against its contents.
Nix reads 404 (and 403, 410) as "not here".
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

from depot.core import EcosystemContext
from depot.core.errors import BadRequest, Conflict, HTTPError, NotFound
from depot.core.http import (
    IMMUTABLE,
    Validators,
    blob_response,
    document_response,
    document_validators,
    read_limited_body,
)
from depot.core.limits import parse_json
from depot.core.rendered import Rendered, RenderedCache
from depot.nix import narinfo, store
from depot.nix.compression import CompressionError
from depot.nix.hotcache import HotCache
from depot.nix.keys import Signer
from depot.nix.localnar import LocalNarResponse
from depot.nix.localstore import LocalStore
from depot.nix.narinfo import NAR_URL, NarInfo, NarInfoError
from depot.nix.nixbase32 import Hash, encode
from depot.nix.storepath import check_base_name, is_hash_part
from depot.nix.verify import VerificationError, verify_nar
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from depot.nix.pullthrough import NixUpstreams

NARINFO_TYPE = "text/x-nix-narinfo"
NAR_TYPE = "application/x-nix-nar"
MAX_SMALL_BODY = 1024 * 1024
#: Hash parts remembered as absent per process (nix asks for many a path a cache lacks).
MAX_ABSENT = 100_000
#: What a narinfo says a store path *is*: the fields its signatures sign (``1;StorePath;NarHash;
#: NarSize;References``) and its content address. A later upload of the path must agree on them.
#: The rest (URL, Compression, FileHash, FileSize, Deriver, System) only says how one upload was
#: packed or built: two CI machines pushing one path with different compression, or two builders
#: of one fixed-output path from different derivations, both succeed and the first stays served.
MEANING_FIELDS = {
    "store_path": "StorePath",
    "nar_hash": "NarHash",
    "nar_size": "NarSize",
    "references": "References",
    "ca": "CA",
}


def routes(ctx: EcosystemContext) -> list[BaseRoute]:
    signer = Signer(ctx.settings.private_key)
    # Narinfos of uploaded paths are kept while their hash part's generation stands: every
    # upload and added signature announces it (depot.core.changes), so a hot narinfo, or a
    # known absent one, costs no database query. The local store changes outside depot: its
    # narinfos are kept a few seconds only.
    narinfos = RenderedCache()
    absent: dict[str, int] = {}
    # Hash parts whose kept narinfo came from an upstream: a hit on one is a use of the cached
    # path (--cache-max-size/-age). Bounded like ``absent``; forgetting one only skips a use.
    from_upstream: set[str] = set()
    local_narinfos = HotCache()
    extra = ctx.settings.extra
    priority = int(extra.get("nix_priority") or 30)
    want_mass_query = bool(extra.get("nix_want_mass_query", True))
    local_root = extra.get("nix_local_store")
    local = LocalStore(Path(local_root)) if local_root else None
    upstreams: NixUpstreams | None = None
    if extra.get("nix_upstream"):
        from depot.nix.pullthrough import NixUpstreams

        upstreams = NixUpstreams(ctx, extra["nix_upstream"], extra.get("nix_upstream_key") or ())
    if local is not None:
        ctx.log.info(
            f"serving the local nix store {local.store_dir} from {local.source}",
            extra={"store": str(local.store_dir), "source": local.source},
        )

    def render_narinfo(info: NarInfo) -> Rendered:
        if signer.key is not None:
            info = info.signed(signer.key)
        return Rendered.of(narinfo.format(info).encode())

    async def served_narinfo(hash_part: str) -> Rendered | None:
        """An uploaded narinfo, else the local store's (uploaded content wins), else the
        upstreams' (verified against --nix-upstream-key), rendered."""
        generation = ctx.changes.generation(hash_part)  # before reading the row
        cached = narinfos.get(hash_part, generation)
        if cached is not None:
            if hash_part in from_upstream and upstreams is not None:
                upstreams.used(hash_part)
            return cached
        if absent.get(hash_part) == generation:
            return None
        found = await store.get_narinfo(ctx.db, hash_part)
        if found is not None:
            absent.pop(hash_part, None)
            from_upstream.discard(hash_part)
            return narinfos.put(hash_part, generation, render_narinfo(found[0]))
        if local is not None:
            text = local_narinfos.get(hash_part)
            if text is None:
                info = await local.lookup(hash_part)
                if info is not None:
                    text = render_narinfo(info).body.decode()
                    local_narinfos.put(hash_part, text)
            if text is not None:
                return Rendered.of(text.encode())
        if upstreams is not None:
            # Misses are remembered by the upstream client (briefly), not in ``absent``.
            fetched = await upstreams.narinfo(hash_part)
            if fetched is None:
                return None
            if len(from_upstream) >= MAX_ABSENT:
                from_upstream.clear()
            from_upstream.add(hash_part)
            return narinfos.put(hash_part, generation, render_narinfo(fetched))
        if local is None:
            if len(absent) >= MAX_ABSENT:
                absent.clear()
            absent[hash_part] = generation
        return None

    async def cache_info(request: Request) -> Response:
        if request.method == "PUT":
            # nix PUTs one when GET failed; ours is always there, so only check it agrees.
            text = (await read_small_body(request)).decode(errors="replace")
            if "StoreDir: /nix/store" not in text:
                raise BadRequest("this cache's StoreDir is /nix/store")
            return PlainTextResponse("")
        key = signer.key
        body = narinfo.cache_info(
            priority=priority,
            public_key=key.public_key() if key else None,
            want_mass_query=want_mass_query,
        )
        validators = document_validators(body.encode(), ctx.document_cache_control)
        if validators.unchanged(request):
            return validators.not_modified()
        return PlainTextResponse(body, media_type="text/x-nix-cache-info",
                                 headers=validators.headers())  # fmt: skip

    async def get_narinfo(request: Request) -> Response:
        hash_part = checked_hash_part(request)
        rendered = await served_narinfo(hash_part)
        if rendered is None:
            raise NotFound(f"{hash_part}.narinfo not found")
        return document_response(
            request, rendered.body, rendered.etag, NARINFO_TYPE, ctx.document_cache_control,
            vary=None, prebuilt=rendered.raw_headers,
        )  # fmt: skip

    async def put_narinfo(request: Request) -> Response:
        hash_part = checked_hash_part(request)
        try:
            info = narinfo.parse((await read_small_body(request)).decode())
        except (NarInfoError, UnicodeDecodeError) as exc:
            raise BadRequest(str(exc)) from None
        if info.hash_part != hash_part:
            raise BadRequest(
                f"narinfo StorePath {info.store_path} does not belong under {hash_part}.narinfo"
            )
        check_own_signatures(info)
        existing = await store.get_narinfo(ctx.db, hash_part)
        if existing is not None:
            return await merge_signatures(existing[0], info)
        m = NAR_URL.match(info.url)
        if m is None:
            raise BadRequest(f"narinfo URL {info.url!r} is not nar/<file hash>.nar[.ext]")
        nar_key = info.url
        stat = await ctx.blobs.stat(nar_key)
        if stat is None:
            raise BadRequest(f"{info.url} has not been uploaded; PUT the NAR before its narinfo")
        file_hash = Hash.parse(f"sha256:{m.group(1)}")
        if info.file_hash is not None and info.file_hash != file_hash:
            raise BadRequest(f"narinfo FileHash {info.file_hash} does not match {info.url}")
        if info.file_size is not None and info.file_size != stat.size:
            raise BadRequest(
                f"narinfo FileSize {info.file_size} but {info.url} has {stat.size} bytes"
            )
        info = dataclasses.replace(info, file_hash=file_hash, file_size=stat.size)
        listing_key = f"listing/{info.nar_hash.nix32()}.ls"
        try:
            await verify_nar(ctx.blobs, nar_key, info, listing_key)
        except (VerificationError, CompressionError) as exc:
            raise BadRequest(str(exc)) from None
        async with ctx.reference_blobs(nar_key, listing_key):
            inserted = await store.insert_narinfo(ctx.db, info, nar_key, listing_key)
        if not inserted:
            raced = await store.get_narinfo(ctx.db, hash_part)
            assert raced is not None
            return await merge_signatures(raced[0], info)
        local_narinfos.drop(hash_part)  # uploaded content wins over the local store's
        await ctx.changes.notify(hash_part)
        ctx.artifact_stored(f"{hash_part}.narinfo", info.nar_size, request)
        return PlainTextResponse("")

    async def delete_narinfo(request: Request) -> Response:
        """``DELETE <hash>.narinfo`` (``depot nix delete``): the narinfo goes first, so its NAR
        stops being served at once; then the NAR and listing, unless another narinfo shares
        them. ``?dry-run=1`` answers the same and removes nothing."""
        hash_part = checked_hash_part(request)
        dry_run = request.query_params.get("dry-run", "") not in ("", "0", "false")
        since = time.time()
        found = await store.get_narinfo(ctx.db, hash_part)
        keys = await store.nar_and_listing_keys(ctx.db, hash_part)
        if found is None or keys is None:
            raise NotFound(f"{hash_part}.narinfo not found")
        info = found[0]
        if dry_run:
            blobs = [(k, s.size) for k in keys if (s := await ctx.blobs.stat(k)) is not None]
        else:
            await store.delete_narinfo(ctx.db, hash_part)
            await ctx.changes.notify(hash_part)
            blobs = [(e.key, e.size) for e in await ctx.release_blobs(keys, since)]
            ctx.log.info("narinfo deleted", extra={"store_path": info.store_path})
        return JSONResponse(
            {
                "store_path": info.store_path,
                "dry_run": dry_run,
                "blobs": [{"key": k, "size": size} for k, size in blobs],
            }
        )

    def check_own_signatures(info: NarInfo) -> None:
        """A signature claiming depot's key name must be depot's; others cannot be checked here."""
        key = signer.key
        if key is None:
            return
        public = key.public_key()
        for signature in info.signatures:
            if signature.key_name == key.name and not public.verify(signature, info.fingerprint()):
                raise BadRequest(f"Sig by {key.name} does not verify for {info.store_path}")

    async def merge_signatures(published: NarInfo, incoming: NarInfo) -> Response:
        """A narinfo for a path already published (``nix store sign``, a retried or concurrent
        ``nix copy``): accepted and served unchanged but for its new signatures; refused only if
        it says the path holds something else."""
        for field, label in MEANING_FIELDS.items():
            if getattr(published, field) != getattr(incoming, field):
                raise Conflict(
                    f"{published.hash_part}.narinfo is published with another {label}; "
                    "a store path's contents cannot change"
                )
        # Same fingerprint, so signatures over the incoming narinfo hold for the published one.
        new = tuple(s for s in incoming.signatures if s not in published.signatures)
        if new:
            await store.add_signatures(ctx.db, published.hash_part, new)
            await ctx.changes.notify(published.hash_part)
        else:
            # Perhaps put through another replica a moment ago: nix checks a reference it has
            # just put with a GET here, which must not answer from an absence remembered before.
            ctx.changes.observed(published.hash_part)
        ctx.log.info(
            "narinfo already published; kept the first upload",
            extra={
                "store_path": published.store_path,
                "kept_url": published.url,
                "incoming_url": incoming.url,
                "added_signatures": len(new),
            },
        )
        return PlainTextResponse("")

    async def listing(request: Request) -> Response:
        hash_part = checked_hash_part(request)
        if request.method == "PUT":
            # nix uploads its own listing before the NAR; depot serves the one it derives from
            # the verified NAR instead, so the upload is read and dropped.
            async for _chunk in request.stream():
                pass
            return PlainTextResponse("")
        found = await store.get_narinfo(ctx.db, hash_part)
        if found is not None:
            return await blob_response(ctx.blobs, found[1], request, "application/json")
        info = await local.lookup(hash_part) if local is not None else None
        if info is None:
            raise NotFound(f"{hash_part}.ls not found")
        try:
            text = await asyncio.to_thread(local.listing, info.base_name)  # type: ignore[union-attr]
        except OSError as exc:
            ctx.log.warning(
                "local store path unreadable", extra={"path": info.store_path, "error": str(exc)}
            )
            raise NotFound(f"{hash_part}.ls not found") from None
        # A local path may be deleted and built again, so its listing is revalidated.
        validators = document_validators(text.encode(), ctx.document_cache_control)
        if validators.unchanged(request):
            return validators.not_modified()
        return Response(text, media_type="application/json", headers=validators.headers())

    async def get_local_nar(request: Request) -> Response:
        """A local path's NAR, serialised as it is sent; only while the path is still valid with
        the NarHash the client's narinfo gave (the URL carries it)."""
        hash_part, nar_hash = request.path_params["hash_part"], request.path_params["nar_hash"]
        info = (
            await local.lookup(hash_part) if local is not None and is_hash_part(hash_part) else None
        )
        if info is None or info.nar_hash.nix32() != nar_hash:
            raise NotFound(f"nar/local/{hash_part}/{nar_hash}.nar not found")
        # The URL names the NarHash, so its bytes never change.
        validators = Validators(f'"{nar_hash}"', None, IMMUTABLE)
        if validators.unchanged(request):
            return validators.not_modified()

        def served(size: int) -> None:
            ctx.artifact_served(f"nar/local/{hash_part}", size, request)

        return LocalNarResponse(
            str(local.store_dir),
            info.base_name,
            info.nar_size,
            request,
            NAR_TYPE,
            served,  # type: ignore[union-attr]
            headers=validators.headers(),
        )

    async def get_nar(request: Request) -> Response:
        key = checked_nar_key(request)
        if not await store.nar_is_published(ctx.db, key):
            if upstreams is not None:
                return await upstreams.nar(request, key)
            raise NotFound(f"{key} not found")

        def served(size: int) -> None:
            ctx.artifact_served(key, size, request)

        return await blob_response(ctx.blobs, key, request, NAR_TYPE, on_start=served)

    async def put_nar(request: Request) -> Response:
        key = checked_nar_key(request)
        expected = Hash.parse(f"sha256:{key[4:56]}")
        declared = request.headers.get("content-length")
        async with ctx.blobs.upload(key, hashes=("sha256",)) as upload:
            async for chunk in request.stream():
                await upload.write(chunk)
            await upload.complete()
            if declared is not None and declared.isdigit() and int(declared) != upload.size:
                raise BadRequest(
                    f"{key}: body has {upload.size} bytes, Content-Length said {declared}"
                )
            if upload.digest("sha256") != expected.digest:
                raise BadRequest(
                    f"{key}: body hashes to sha256:{encode(upload.digest('sha256'))}, not its name"
                )
            await upload.commit()
        ctx.log.info("nar uploaded", extra={"key": key, "size": upload.size})
        return PlainTextResponse("")

    async def build_log(request: Request) -> Response:
        drv = request.path_params["drv"]
        try:
            check_base_name(drv)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if not drv.endswith(".drv"):
            raise BadRequest(f"{drv} is not a derivation (.drv) base name")
        key = f"log/{drv}"
        if request.method == "PUT":
            async with ctx.blobs.upload(key) as upload:
                async for chunk in request.stream():
                    await upload.write(chunk)
                await upload.complete()
                await upload.commit()
            async with ctx.reference_blobs(key):
                await store.put_build_log(ctx.db, drv, key, upload.size)
            ctx.artifact_stored(key, upload.size, request)
            return PlainTextResponse("")
        log_key = await store.build_log_key(ctx.db, drv)
        if log_key is None:
            raise NotFound(f"no build log for {drv}")
        return await blob_response(ctx.blobs, log_key, request, "text/plain; charset=utf-8")

    async def realisation(request: Request) -> Response:
        # Content-addressed derivations (experimental) record their outputs here
        # (``realisations/<drv hash>!<output>.doi``); a failure here fails the whole nix copy.
        realisation_id = request.path_params["id"]
        if not _is_realisation_id(realisation_id):
            raise BadRequest(f"{realisation_id!r} is not <algo>:<hash>!<output>")
        if request.method == "PUT":
            body = await read_small_body(request)
            document = parse_json(body, "the realisation")
            if not isinstance(document, dict):
                raise BadRequest("realisation is not a JSON object")
            await store.put_realisation(ctx.db, realisation_id, body.decode())
            return PlainTextResponse("")
        document = await store.get_realisation(ctx.db, realisation_id)
        if document is None:
            raise NotFound(f"realisation {realisation_id} not found")
        return Response(document, media_type="application/json")

    return [
        Route("/nix-cache-info", cache_info, methods=["GET", "HEAD", "PUT"]),
        Route("/{hash_part}.narinfo", get_narinfo, methods=["GET", "HEAD"]),
        Route("/{hash_part}.narinfo", put_narinfo, methods=["PUT"]),
        Route("/{hash_part}.narinfo", delete_narinfo, methods=["DELETE"]),
        Route("/{hash_part}.ls", listing, methods=["GET", "HEAD", "PUT"]),
        Route("/nar/{file}", get_nar, methods=["GET", "HEAD"]),
        Route("/nar/local/{hash_part}/{nar_hash}.nar", get_local_nar, methods=["GET", "HEAD"]),
        Route("/nar/{file}", put_nar, methods=["PUT"]),
        Route("/log/{drv}", build_log, methods=["GET", "HEAD", "PUT"]),
        Route("/realisations/{id}.doi", realisation, methods=["GET", "HEAD", "PUT"]),
    ]


def checked_hash_part(request: Request) -> str:
    hash_part = request.path_params["hash_part"]
    if not is_hash_part(hash_part):
        # For reads an odd spelling simply is not here; an upload under it is a client error.
        raise _refusal(request, f"{hash_part!r} is not a store path hash part")
    return hash_part


def checked_nar_key(request: Request) -> str:
    key = "nar/" + request.path_params["file"]
    if not NAR_URL.match(key):
        raise _refusal(request, f"{key!r} is not nar/<file hash>.nar[.ext]")
    return key


def _refusal(request: Request, reason: str) -> HTTPError:
    return BadRequest(reason) if request.method == "PUT" else NotFound(reason)


def _is_realisation_id(text: str) -> bool:
    digest, bang, output = text.partition("!")
    if not bang or not output or not all(c.isalnum() or c in "-_+." for c in output):
        return False
    try:
        Hash.parse(digest)
    except ValueError:
        return False
    return True


async def read_small_body(request: Request) -> bytes:
    """The body of a metadata upload (narinfo, listing, log), at most :data:`MAX_SMALL_BODY`."""
    return await read_limited_body(request, MAX_SMALL_BODY)
