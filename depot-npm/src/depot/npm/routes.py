"""Routes of the npm registry under ``/npm``.

Package URLs carry names with a slash (``@scope/pkg``; npm sends ``@scope%2fpkg``, which the
server decodes to the same path), so one catch-all route splits the path itself:

    /<name>                          GET/HEAD packument; PUT publish, deprecate
    /<name>/-rev/<rev>               PUT pruned packument (unpublish a version); DELETE package
    /<name>/<version|tag>            GET/HEAD version document; PUT version document (push API)
    /<name>/-/<file>.tgz             GET/HEAD tarball; PUT tarball (push API)
    /<name>/-/<file>.tgz/-rev/<rev>  DELETE tarball (second step of unpublishing a version)

Every segment is validated (name, version, tag, file name) before it reaches storage, so no
path can escape. The reading handlers live here; the writing ones in :mod:`depot.npm.publish`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from depot.core import EcosystemContext
from depot.core.errors import BadRequest, Conflict, HTTPError, NotFound
from depot.core.http import document_response
from depot.core.limits import check_search_text
from depot.npm import login, publish, store
from depot.npm.names import (
    InvalidName,
    is_version,
    require_name,
    require_tag,
)
from depot.npm.packument import (
    ABBREVIATED_MEDIA_TYPE,
    dist_tags,
    version_document,
    wants_abbreviated,
)
from depot.npm.publish_body import MAX_DOCUMENT
from depot.npm.registry import Registry
from depot.npm.responses import error_response, json_object, json_ok, read_json
from depot.npm.versions import choose_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

__all__ = ["error_response", "routes"]

#: The same few Accept headers arrive again and again (npm's, a browser's).
_wants_abbreviated = functools.lru_cache(maxsize=256)(wants_abbreviated)

ALL_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS")


def split_package_path(path: str) -> tuple[str, list[str]]:
    """``@s/pkg/-/pkg-1.0.0.tgz`` -> (``@s/pkg``, [``-``, ``pkg-1.0.0.tgz``])."""
    segments = path.split("/")
    if segments and segments[0].startswith("@"):
        if len(segments) < 2:
            raise InvalidName(f"invalid package name {segments[0]!r}")
        return f"{segments[0]}/{segments[1]}", segments[2:]
    return segments[0], segments[1:]


def routes(ctx: EcosystemContext) -> list[BaseRoute]:
    reg = Registry(ctx)

    async def get_packument(request: Request, name: str) -> Response:
        abbreviated = _wants_abbreviated(request.headers.get("accept"))
        # npm unpublish/deprecate read the full document with the _rev they will send back.
        for_write = (
            bool(request.scope["query_string"]) and request.query_params.get("write") == "true"
        )
        if for_write:
            abbreviated = False
        try:
            rendered = await reg.render(request, name, abbreviated, fresh=for_write)
            origin = None
        except NotFound:
            if reg.upstream is None:
                raise
            # Nothing published or pushed under this name: the upstream's, never merged.
            rendered = await reg.upstream.packument(request, name, abbreviated)
            origin = f"cached from {reg.upstream.label}"
        media_type = ABBREVIATED_MEDIA_TYPE if abbreviated else "application/json"
        return document_response(
            request, rendered.body, rendered.etag, media_type, ctx.document_cache_control,
            headers={"X-Depot-Origin": origin} if origin else None,
            prebuilt=rendered.raw_headers,
        )  # fmt: skip

    async def get_version(request: Request, name: str, spec: str) -> Response:
        version = spec
        if not is_version(spec):
            require_tag(spec)
            numbers = await store.version_numbers(ctx.db, name)
            if not numbers:
                raise NotFound(f"package {name} not found")
            tags = dist_tags(await store.stored_dist_tags(ctx.db, name), numbers)
            if spec not in tags:
                raise NotFound(f"{name} has no version or dist-tag {spec!r}")
            version = tags[spec]
        record = await store.get_version(ctx.db, name, version)
        if record is None:
            raise NotFound(f"{name}@{version} not found")
        return json_ok(version_document(record, reg.tarball_url(request, name)(record)))

    async def get_tarball(request: Request, name: str, filename: str) -> Response:
        # Not validated against the name: it is only looked up, and a file name that is not
        # one of the package's is a missing file (404), as on the public registry.
        try:
            return await reg.tarball_response(request, name, filename)
        except NotFound:
            if reg.upstream is None or await reg.is_published(name):
                raise  # a name published here never reaches the upstream
            return await reg.upstream.tarball(request, name, filename)

    async def package_route(request: Request) -> Response:
        path = request.path_params["path"]
        if not path or path.startswith("-"):
            raise NotFound(f"no such endpoint /{path}")
        name, rest = split_package_path(path)
        require_name(name)
        method = request.method
        match rest, method:
            case [], ("GET" | "HEAD"):
                return await get_packument(request, name)
            case [], "PUT":
                return await publish.put_packument(reg, request, name)
            case ["-rev", rev], "PUT":
                document = json_object(await read_json(request, MAX_DOCUMENT), "the packument")
                return await publish.update(reg, request, name, document, rev)
            case ["-rev", rev], "DELETE":
                if rev != await reg.current_rev(request, name):
                    raise Conflict(f"document update conflict: {name} changed (rev {rev} is stale)")
                return await publish.unpublish_package(reg, name)
            case ["-", filename], ("GET" | "HEAD"):
                return await get_tarball(request, name, filename)
            case ["-", filename], "PUT":
                return await publish.push_tarball(reg, request, name, filename)
            case ["-", filename, "-rev", _rev], "DELETE":
                return await publish.delete_tarball(reg, request, name, filename)
            case [spec], ("GET" | "HEAD"):
                return await get_version(request, name, spec)
            case [version], "PUT":
                return await publish.push_version(reg, request, name, version)
        known = len(rest) <= 1 or rest[0] in ("-", "-rev") and len(rest) in (2, 4)
        if known:
            raise HTTPError(405, f"{method} is not allowed on /{path}")
        raise NotFound(f"no such endpoint /{path}")

    async def dist_tags_route(request: Request) -> Response:
        path = request.path_params["path"]
        package_path, sep, tag_path = path.partition("/dist-tags")
        if not sep or (tag_path and not tag_path.startswith("/")):
            raise NotFound(f"no such endpoint /-/package/{path}")
        name = require_name(package_path)
        tag = tag_path.lstrip("/")
        numbers = await store.version_numbers(ctx.db, name)
        if not numbers:
            raise NotFound(f"package {name} not found")
        if request.method in ("GET", "HEAD") and not tag:
            return json_ok(dist_tags(await store.stored_dist_tags(ctx.db, name), numbers))
        require_tag(tag)
        if request.method in ("PUT", "POST"):
            version = await read_json(request)
            if not isinstance(version, str) or not is_version(version):
                raise BadRequest("the body must be a JSON string naming a version")
            if version not in numbers:
                raise NotFound(f"{name}@{version} not found")
            await store.set_dist_tag(ctx.db, name, tag, version)
        elif request.method == "DELETE":
            await store.remove_dist_tag(ctx.db, name, tag)
        else:
            raise HTTPError(405, f"{request.method} not allowed on dist-tags")
        await store.touch(ctx.db, name)
        await reg.changed(name)
        return json_ok({"ok": True, "id": name})

    async def delete_route(request: Request) -> Response:
        """``depot npm delete``: a package or, with ``?version=``, one version of it."""
        name = require_name(request.path_params["path"])
        dry_run = request.query_params.get("dry-run", "") not in ("", "0", "false")
        version = request.query_params.get("version") or None
        return await publish.delete_published(reg, name, version, dry_run)

    async def whoami(request: Request) -> Response:
        return await login.whoami(ctx, request)

    async def web_login(request: Request) -> Response:
        return await login.web_login(ctx, request)

    async def couch_login(request: Request) -> Response:
        return await login.couch_login(ctx, request, request.path_params["user"])

    async def logout(request: Request) -> Response:
        return await login.logout(ctx, request, request.path_params["token"])

    async def ping(request: Request) -> Response:
        return json_ok({})

    async def search(request: Request) -> Response:
        text = check_search_text(request.query_params.get("text", ""))
        try:
            size = max(1, min(250, int(request.query_params.get("size", "20"))))
            # Clamped: an offset past any table is an empty page, not a database overflow.
            offset = min(max(0, int(request.query_params.get("from", "0"))), 2**31 - 1)
        except ValueError as exc:
            raise BadRequest("size and from must be integers") from exc
        total, rows = await store.search(ctx.db, text, size, offset)
        objects = []
        for row in rows:
            latest = choose_latest(await store.version_numbers(ctx.db, row["name"]))
            record = latest and await store.get_version(ctx.db, row["name"], latest)
            if not record:
                continue
            manifest = record.manifest
            objects.append(
                {
                    "package": {
                        "name": row["name"],
                        "version": latest,
                        "description": manifest.get("description", ""),
                        "keywords": manifest.get("keywords", []),
                        "date": row["modified"],
                        "links": {},
                        "publisher": {},
                        "maintainers": [],
                    },
                    "score": {
                        "final": 1.0,
                        "detail": {"quality": 1.0, "popularity": 1.0, "maintenance": 1.0},
                    },
                    "searchScore": 1.0,
                }
            )
        return json_ok({"objects": objects, "total": total, "time": store.now()})

    # Depot has no advisory database: audits answer "nothing known" so npm install/audit go on.
    async def advisories_bulk(request: Request) -> Response:
        async for _ in request.stream():  # npm sends a gzipped body; nothing in it matters
            pass
        return json_ok({})

    async def audits_quick(request: Request) -> Response:
        async for _ in request.stream():
            pass
        count = 0
        return json_ok(
            {
                "actions": [],
                "advisories": {},
                "muted": [],
                "metadata": {
                    "vulnerabilities": {
                        "info": 0,
                        "low": 0,
                        "moderate": 0,
                        "high": 0,
                        "critical": 0,
                    },
                    "dependencies": count,
                    "devDependencies": 0,
                    "optionalDependencies": 0,
                    "totalDependencies": count,
                },
            }
        )

    return [
        Route("/-/ping", _npm(ping), methods=["GET", "HEAD"]),
        Route("/-/v1/search", _npm(search), methods=["GET"]),
        Route("/-/npm/v1/security/advisories/bulk", _npm(advisories_bulk), methods=["POST"]),
        Route("/-/npm/v1/security/audits/quick", _npm(audits_quick), methods=["POST"]),
        Route(
            "/-/package/{path:path}",
            _npm(dist_tags_route),
            methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
        ),
        Route("/-/depot/packages/{path:path}", _npm(delete_route), methods=["DELETE"]),
        Route("/-/whoami", _npm(whoami), methods=["GET"]),
        Route("/-/v1/login", _npm(web_login), methods=["POST"]),
        Route("/-/user/token/{token}", _npm(logout), methods=["DELETE"]),
        Route("/-/user/{user:path}", _npm(couch_login), methods=["PUT", "POST", "GET"]),
        # Every method reaches the dispatcher, so that even a 405 is answered in npm's JSON.
        Route("/{path:path}", _npm(package_route), methods=[*ALL_METHODS]),
    ]


def _npm(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Turn this package's validation errors into 400s with their one-line reason."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidName as exc:
            raise BadRequest(str(exc)) from exc

    endpoint.__name__ = handler.__name__
    return endpoint
