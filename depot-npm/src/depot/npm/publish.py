"""The write side of the registry: ``npm publish``, deprecate, unpublish and the push API.

Every handler reads route -> parse -> verify -> store -> respond: the tarball is received and
verified (:mod:`depot.npm.uploads`) before a version row points at it, and a published version
is never replaced. ``npm publish`` bodies are parsed as they stream in
(:mod:`depot.npm.publish_body`), so a tarball of any size costs no more memory than a small one.
"""

from __future__ import annotations

import re
import time
from contextlib import AsyncExitStack
from typing import Any

from depot.core.changes import Recorded
from depot.core.errors import BadRequest, Conflict, NotFound
from depot.npm import store
from depot.npm.integrity import IntegrityError, sri_digest, verify
from depot.npm.names import (
    require_tag,
    require_version,
    tarball_filename,
    version_from_filename,
)
from depot.npm.packument import (
    VersionRecord,
    package_fields,
    publish_fields,
    stored_manifest,
)
from depot.npm.publish_body import PublishBody, read_publish_body
from depot.npm.registry import Registry
from depot.npm.responses import json_object, json_ok, read_json
from depot.npm.uploads import add_tarball_row, receive_tarball
from depot.npm.versions import choose_latest
from starlette.requests import Request
from starlette.responses import Response

#: A CouchDB-style revision as :func:`depot.npm.packument.revision` writes it.
_REV = re.compile(r"[0-9]{1,20}-[0-9a-f]{1,64}")


async def put_packument(reg: Registry, request: Request, name: str) -> Response:
    """``PUT /npm/<name>``: ``npm publish`` when it carries attachments, else a deprecation.

    The body is parsed as it streams in, attachment data straight into uncommitted uploads
    (:mod:`depot.npm.publish_body`); they are committed only once everything is verified.
    """
    async with AsyncExitStack() as uploads:
        body = await read_publish_body(reg.ctx, name, request.stream(), uploads)
        document = body.document
        if document.get("name", name) != name or document.get("_id", name) != name:
            raise BadRequest(f"the document names {document.get('name')!r}, not {name!r}")
        if document.get("_attachments") or body.attachments:
            return await publish(reg, request, name, body)
        return await update(reg, request, name, document, None)


async def publish(reg: Registry, request: Request, name: str, body: PublishBody) -> Response:
    """``npm publish``: new versions, each with its tarball received from a base64 attachment.

    ``name`` was checked by the route: any name npm accepts for existing packages (``JSONStream``).
    """
    document = body.document
    attachments = json_object(document.get("_attachments"), "_attachments")
    manifests = json_object(document.get("versions"), "versions")
    tags = json_object(document.get("dist-tags") or {}, "dist-tags")
    for version, manifest in manifests.items():
        require_version(version)
        manifest = json_object(manifest, f"versions[{version!r}]")
        if manifest.get("name") != name or manifest.get("version") != version:
            raise BadRequest(f"versions[{version!r}] does not describe {name}@{version}")
    for tag, version in tags.items():
        require_tag(tag)
        if not isinstance(version, str) or version not in manifests:
            raise BadRequest(f"dist-tag {tag} points at {version!r}, which is not published here")
    _check_rev_field(document)
    if not attachments:
        raise BadRequest("nothing to publish: no _attachments")
    for filename in attachments.keys() | body.attachments.keys():
        if filename not in body.attachments:
            raise BadRequest(f"attachment {filename!r} has no base64 data")
        if filename not in attachments:
            raise BadRequest(f"attachment data for {filename!r} outside the final _attachments")
    # A version without its tarball would be answered 201 and never exist: refuse it.
    carried = {received.version for received in body.attachments.values()}
    for version in manifests:
        if version not in carried:
            raise BadRequest(f"versions[{version!r}] has no attachment: nothing to publish it from")
    # Verify every tarball before committing any, so a bad one leaves nothing stored.
    for filename, received in body.attachments.items():
        if received.version not in manifests:
            raise BadRequest(f"attachment {filename!r} matches no version in the document")
        attachment = json_object(attachments[filename], f"_attachments[{filename!r}]")
        dist = json_object(manifests[received.version].get("dist") or {}, "dist")
        length = attachment.get("length")
        if length is not None and (not isinstance(length, int) or isinstance(length, bool)):
            raise BadRequest(f"_attachments[{filename!r}].length must be a number of bytes")
        received.tarball.verify(
            name,
            received.version,
            integrity=dist.get("integrity"),
            shasum=dist.get("shasum"),
            length=length,
        )
    committed = [
        (received, await received.tarball.commit()) for received in body.attachments.values()
    ]

    async def record() -> tuple[list[str], Recorded]:
        """Every row of the publish and its change-log row, in one transaction (one commit
        shared with other writes). A version or tarball published already is refused here,
        in the transaction, instead of in queries of their own beforehand."""
        existing, had_versions = await store.published_among(reg.ctx.db, name, list(manifests))
        if existing:
            raise Conflict(
                f"cannot publish over the previously published version {name}@{existing[0]}"
            )
        for received, stored in committed:
            await add_tarball_row(reg.ctx, name, stored)
            manifest = manifests[received.version]
            await _add_version(
                reg,
                name,
                manifest,
                stored.filename,
                stored.integrity,
                stored.sha1,
                fields=publish_fields(document, manifest),
            )
        await _apply_publish_tags(reg, name, tags, set(manifests) if had_versions else None)
        if not committed:  # each added version touched the package already
            await store.touch(reg.ctx.db, name)
        return [received.version for received, _ in committed], await reg.ctx.changes.record(name)

    try:
        published, recorded = await reg.ctx.db.write(record)
    except Exception:
        # Nothing of the publish was committed: its tarballs are referenced by no row.
        for _, stored in committed:
            await reg.ctx.blobs.delete(stored.key)
        raise
    await reg.changed(name, recorded)
    for _, stored in committed:
        reg.ctx.artifact_stored(stored.key, stored.size, request)
    return json_ok({"ok": True, "id": name, "versions": published}, 201)


async def _add_version(
    reg: Registry,
    name: str,
    manifest: dict[str, Any],
    filename: str,
    integrity: str,
    shasum: str,
    fields: dict[str, Any] | None = None,
    deprecated: str | None = None,
    provenance: str = "published",
) -> None:
    record = VersionRecord(
        version=manifest["version"],
        manifest=stored_manifest(manifest),
        filename=filename,
        integrity=integrity,
        shasum=shasum,
        created=store.now(),
        deprecated=deprecated or None,
    )
    # time.created is never later than the first version's time (npm view orders by them).
    await store.ensure_package(reg.ctx.db, name, fields, created=record.created)
    if not await store.add_version(reg.ctx.db, name, record, provenance):
        raise Conflict(
            f"cannot publish over the previously published version {name}@{record.version}"
        )
    if fields is not None:
        await store.touch(reg.ctx.db, name, fields)


async def _apply_publish_tags(
    reg: Registry, name: str, tags: dict[str, str], added: set[str] | None
) -> None:
    """``latest`` is computed by precedence; ``--tag beta`` publishes leave it where it was.

    ``added``: the versions this publish added to a package that had versions before (None
    for its first publish).
    """
    for tag, version in tags.items():
        if tag == "latest":
            await store.remove_dist_tag(reg.ctx.db, name, "latest")
        else:
            await store.set_dist_tag(reg.ctx.db, name, tag, version)
    if "latest" in tags or added is None:
        return
    if "latest" not in await store.stored_dist_tags(reg.ctx.db, name):
        current = await store.version_numbers(reg.ctx.db, name)
        previous = choose_latest([v for v in current if v not in added])
        if previous != choose_latest(current):
            await store.set_dist_tag(reg.ctx.db, name, "latest", previous)


async def update(
    reg: Registry, request: Request, name: str, document: dict[str, Any], rev: str | None
) -> Response:
    """A PUT of the whole packument: deprecations, and with ``-rev`` pruned versions.

    npm sends back the packument it read (``?write=true``), with every published version; a
    document that lists none, or lists a version that was never published (a publish without
    its tarball), would be answered 201 and change nothing, so it is refused.
    """
    if rev is not None and rev != await reg.current_rev(request, name):
        raise Conflict(f"document update conflict: {name} changed (rev {rev} is stale)")
    if not isinstance(document.get("versions"), dict):
        # Without versions there is nothing to deprecate, and a pruned packument without them
        # would unpublish everything.
        raise BadRequest("the packument must list its versions")
    document_rev = _check_rev_field(document)
    if (
        rev is None
        and document_rev is not None
        and document_rev != await reg.current_rev(request, name)
    ):
        raise Conflict(f"document update conflict: {name} changed (_rev {document_rev} is stale)")
    manifests = json_object(document["versions"], "versions")
    stored = await reg.versions(name)
    if not stored:
        raise NotFound(f"package {name} not found")
    published = {record.version for record in stored}
    for version in manifests:
        if version not in published:
            require_version(version)
            raise BadRequest(
                f"{name}@{version} is not published and the document carries no tarball for it"
            )
    for record in stored:
        manifest = manifests.get(record.version)
        if not isinstance(manifest, dict):
            continue
        message = manifest.get("deprecated") or None
        if message is not None and not isinstance(message, str):
            raise BadRequest(f"versions[{record.version!r}].deprecated must be a string")
        if message != record.deprecated:
            await store.set_deprecated(reg.ctx.db, name, record.version, message)
    if rev is not None:
        doomed = [r.version for r in stored if r.version not in manifests]
        if len(doomed) == len(stored):
            return await unpublish_package(reg, name)
        keys = await store.remove_versions(reg.ctx.db, name, doomed)
        for key in keys:
            await reg.ctx.blobs.delete(key)
    await store.touch(reg.ctx.db, name)
    await reg.changed(name)
    return json_ok({"ok": True, "id": name}, 201)


def _check_rev_field(document: dict[str, Any]) -> str | None:
    """The document's ``_rev`` if it has one; 400 unless it is ``<serial>-<hex>`` as depot
    writes them (npm sends back the one it read)."""
    rev = document.get("_rev")
    if rev is None or rev == "":
        return None
    if not isinstance(rev, str) or not _REV.fullmatch(rev):
        raise BadRequest(f"_rev {str(rev)[:80]!r} is not a revision this registry wrote")
    return rev


async def unpublish_package(reg: Registry, name: str) -> Response:
    keys = await store.remove_package(reg.ctx.db, name)
    reg.forget(name)
    await reg.changed(name)
    for key in keys:
        await reg.ctx.blobs.delete(key)
    return json_ok({"ok": True, "id": name})


# -- push API (depot npm push) ---------------------------------------------------------------------


async def push_tarball(reg: Registry, request: Request, name: str, filename: str) -> Response:
    version = version_from_filename(name, filename)
    stored = await receive_tarball(
        reg.ctx,
        name,
        version,
        filename,
        request.stream(),
        require_digest=False,
        provenance="pushed",
    )
    await reg.changed(name)
    reg.ctx.artifact_stored(stored.key, stored.size, request)
    return json_ok({"ok": True, "integrity": stored.integrity, "shasum": stored.sha1}, 201)


async def push_version(reg: Registry, request: Request, name: str, version: str) -> Response:
    require_version(version)
    manifest = json_object(await read_json(request), "version document")
    if manifest.get("name") != name or manifest.get("version") != version:
        raise BadRequest(f"the version document does not describe {name}@{version}")
    filename = tarball_filename(name, version)
    tarball = await store.get_tarball(reg.ctx.db, name, filename)
    if tarball is None:
        raise BadRequest(f"{name}@{version}: upload {filename} before its version document")
    dist = json_object(manifest.get("dist") or {}, "dist")
    digests = {
        "sha1": bytes.fromhex(tarball["sha1"]),
        "sha512": sri_digest(tarball["sha512"]),
    }
    for field in ("integrity", "shasum"):
        if dist.get(field) is not None and not isinstance(dist.get(field), str):
            raise BadRequest(f"{filename}: dist.{field} must be a string")
    try:
        verify(digests, dist.get("integrity"), dist.get("shasum"))
    except IntegrityError as exc:
        raise BadRequest(f"{filename}: {exc}") from exc
    deprecated = manifest.get("deprecated")

    async def record() -> Recorded | None:
        """None if the same version is already published (from the same tarball)."""
        existing = await store.get_version(reg.ctx.db, name, version)
        if existing is not None:
            if existing.integrity == tarball["sha512"]:
                return None
            raise Conflict(f"cannot publish over the previously published version {name}@{version}")
        await _add_version(
            reg,
            name,
            manifest,
            filename,
            tarball["sha512"],
            tarball["sha1"],
            fields=package_fields(manifest),
            deprecated=deprecated if isinstance(deprecated, str) else None,
            provenance="pushed",
        )
        await store.touch(reg.ctx.db, name)
        return await reg.ctx.changes.record(name)

    recorded = await reg.ctx.db.write(record)
    if recorded is None:
        reg.ctx.changes.observed(name)  # perhaps published through another replica just now
        return json_ok({"ok": True, "id": name, "existing": True})
    await reg.changed(name, recorded)
    return json_ok({"ok": True, "id": name}, 201)


async def delete_tarball(reg: Registry, request: Request, name: str, filename: str) -> Response:
    version = version_from_filename(name, filename)
    if await store.get_version(reg.ctx.db, name, version) is not None:
        raise Conflict(f"{name}@{version} is still published; unpublish the version first")
    row = await store.get_tarball(reg.ctx.db, name, filename)
    if row is not None:
        await reg.ctx.db.execute(
            store.tarballs.delete().where(
                store.tarballs.c.name == name, store.tarballs.c.filename == filename
            )
        )
        await reg.changed(name)
        await reg.ctx.blobs.delete(row["blob_key"])
    return json_ok({"ok": True})


# -- removal on purpose (depot npm delete) ---------------------------------------------------------


async def delete_published(
    reg: Registry, name: str, version: str | None, dry_run: bool
) -> Response:
    """``DELETE /-/depot/packages/<name>[?version=V]``: remove a package or one version.

    The rows go first, in one transaction (the version stops being served at once), then the
    tarballs no row points at any more. ``dry_run`` answers the same and removes nothing.
    """
    since = time.time()
    numbers = await store.version_numbers(reg.ctx.db, name)
    if not numbers:
        raise NotFound(f"package {name} not found")
    if version is not None:
        require_version(version)
        if version not in numbers:
            raise NotFound(f"{name}@{version} not found")
    doomed = [version] if version is not None else numbers
    tarballs = []
    for number in doomed:
        record = await store.get_version(reg.ctx.db, name, number)
        row = None if record is None else await store.get_tarball(reg.ctx.db, name, record.filename)
        if row is not None:
            tarballs.append((row["blob_key"], int(row["size"])))
    if dry_run:
        blobs = tarballs
    else:
        async with reg.ctx.db.transaction():
            if len(doomed) == len(numbers):
                keys = await store.remove_package(reg.ctx.db, name)
            else:
                keys = await store.remove_versions(reg.ctx.db, name, doomed)
                await store.touch(reg.ctx.db, name)
        reg.forget(name)
        await reg.changed(name)
        blobs = [(e.key, e.size) for e in await reg.ctx.release_blobs(keys, since)]
        reg.ctx.log.info("deleted", extra={"package": name, "versions": doomed})
    return json_ok(
        {
            "ok": True,
            "id": name,
            "versions": doomed,
            "dry_run": dry_run,
            "blobs": [{"key": key, "size": size} for key, size in blobs],
        }
    )
