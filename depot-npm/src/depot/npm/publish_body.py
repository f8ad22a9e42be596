"""Reading the body of ``PUT /npm/<name>`` (npm publish, deprecate) as it streams in.

npm publish sends one JSON document with each tarball inside it as a base64 string,
``_attachments.<file>.data`` (libnpmpublish). The body is parsed while it arrives
(:mod:`depot.npm.jsonstream`): everything but those strings becomes the document, capped at
:data:`MAX_DOCUMENT` bytes; each data string is base64-decoded straight into an uncommitted blob
upload (:class:`depot.npm.uploads.IncomingTarball`), hashed and read for its package.json on the
way. Memory stays at a chunk or two whatever the tarball's size.

The data may come before the fields it is checked against (npm sends ``_attachments`` last, but
JSON objects have no order), so nothing is verified here: the caller verifies every tarball against
the complete document, then commits. The uploads live in the caller's
:class:`~contextlib.AsyncExitStack`; leaving it without committing (any error, a client that goes
away) leaves nothing stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from depot.core import EcosystemContext
from depot.core.errors import BadRequest, HTTPError
from depot.npm.jsonstream import JSONPath, JSONStreamError, SkeletonTooLarge, StreamingJSONParser
from depot.npm.names import basename, require_version, tarball_filename
from depot.npm.responses import json_object
from depot.npm.uploads import Base64Decoder, Base64Error, IncomingTarball, open_tarball
from starlette.requests import ClientDisconnect

#: Largest document accepted without its attachment data. Deprecating sends the whole packument
#: back, which for a package with thousands of versions runs to megabytes.
MAX_DOCUMENT = 16 * 1024 * 1024
#: Attachments per publish (npm sends one); each holds an open upload until the body ends.
MAX_ATTACHMENTS = 16


@dataclass
class Attachment:
    """One ``_attachments`` entry whose data has been received into an uncommitted upload."""

    filename: str  # as the document names it, e.g. ``@scope/pkg-1.0.0.tgz``
    version: str  # the version the file name carries
    tarball: IncomingTarball
    decoder: Base64Decoder = field(default_factory=Base64Decoder)


@dataclass
class PublishBody:
    """The document (attachment data as ``None``) and the attachments received, by file name."""

    document: dict[str, Any]
    attachments: dict[str, Attachment]


def is_attachment_data(path: JSONPath) -> bool:
    """``_attachments.<file>.data`` of the top-level object: the strings to divert."""
    return len(path) == 3 and path[0] == "_attachments" and path[2] == "data"


def may_hold_attachment_data(path: JSONPath) -> bool:
    """The objects walked token by token: the root, ``_attachments`` and each attachment.

    Everything else (``versions``, ``readme``, ...) is read whole, at json.loads speed.
    """
    return path == () or (path[0] == "_attachments" and len(path) <= 2)


def attachment_version(name: str, filename: str) -> str:
    """The version in an attachment's file name: ``<name>-<v>.tgz`` or ``<basename>-<v>.tgz``."""
    for prefix in (f"{name}-", f"{basename(name)}-"):
        if filename.startswith(prefix) and filename.endswith(".tgz"):
            return require_version(filename[len(prefix) : -len(".tgz")])
    raise BadRequest(f"attachment {filename!r} is not named {name}-<version>.tgz")


async def read_publish_body(
    ctx: EcosystemContext, name: str, chunks: AsyncIterator[bytes], uploads: AsyncExitStack
) -> PublishBody:
    """Parse the body from ``chunks``; attachment data goes to uploads entered on ``uploads``.

    400 for malformed JSON, a truncated body, invalid base64, a tarball that is not one, or data
    given twice for one file or version; 413 past :data:`MAX_DOCUMENT`.
    """
    parser = StreamingJSONParser(
        is_attachment_data, descend=may_hold_attachment_data, max_skeleton=MAX_DOCUMENT
    )
    received: dict[str, Attachment] = {}
    current: Attachment | None = None
    try:
        async for chunk in chunks:
            for piece in parser.feed(chunk):
                if piece.first:
                    current = await _open(ctx, name, str(piece.path[1]), received, uploads)
                assert current is not None
                await _write(current, current.decoder.feed(piece.text))
                if piece.last:
                    await _write(current, current.decoder.finish())
                    await current.tarball.complete()
                    current = None
        document = parser.finish()
    except SkeletonTooLarge as exc:
        raise HTTPError(413, str(exc)) from exc
    except JSONStreamError as exc:
        raise BadRequest(str(exc)) from exc
    except Base64Error as exc:
        assert current is not None
        raise BadRequest(f"attachment {current.filename!r}: {exc}") from exc
    except ClientDisconnect as exc:  # the client's fault, not ours: a 4xx, not a logged 500
        raise BadRequest("the client went away before the end of the body") from exc
    return PublishBody(json_object(document, "the packument"), received)


async def _open(
    ctx: EcosystemContext,
    name: str,
    filename: str,
    received: dict[str, Attachment],
    uploads: AsyncExitStack,
) -> Attachment:
    """Start receiving the data of ``filename``: an upload under its canonical tarball name."""
    version = attachment_version(name, filename)
    if filename in received or any(a.version == version for a in received.values()):
        raise BadRequest(f"attachment data for {name}@{version} is given twice")
    if len(received) >= MAX_ATTACHMENTS:
        raise BadRequest(f"more than {MAX_ATTACHMENTS} attachments in one publish")
    tarball = await uploads.enter_async_context(
        open_tarball(ctx, name, tarball_filename(name, version))
    )
    received[filename] = Attachment(filename, version, tarball)
    return received[filename]


async def _write(attachment: Attachment, data: bytes) -> None:
    if data:
        await attachment.tarball.write(data)
