"""Yanking and un-yanking releases (PEP 592), as ``POST|DELETE /python/-/yank/<project>/<version>``.

PyPI yanks releases, not files: every file of the version gets the same state. A yanked file stays
on the project page, marked ``data-yanked`` / ``"yanked"``; installers skip it unless a requirement
pins that version exactly (``==`` or ``===``). Setting the state it already has changes nothing,
so a retried request is harmless. A yank that gives no reason keeps the one the release has; an
empty reason clears it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.errors import BadRequest, NotFound
from depot.core.limits import check_version, parse_json
from depot.pypi.schema import pypi_files
from packaging.version import InvalidVersion, Version

#: A reason is one line for a person to read in pip's warning; longer ones are refused.
MAX_REASON = 1000

#: The request body holds at most a reason (JSON or form); anything larger is refused.
MAX_BODY = 16 * 1024


@dataclass(frozen=True)
class Release:
    """A release's yank state after a request, as the route answers it."""

    project: str
    version: str
    files: list[str]
    reason: str | None  # None: not yanked; "": yanked without a reason
    changed: int  # files whose state this request changed

    def as_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "version": self.version,
            "yanked": self.reason is not None,
            "reason": self.reason or None,
            "files": self.files,
            "changed": self.changed,
        }


def parse_version(text: str) -> Version:
    check_version(text)
    try:
        return Version(text)
    except (InvalidVersion, ValueError) as exc:
        raise BadRequest(f"{text!r} is not a valid version (PEP 440)") from exc


def parse_reason(body: bytes, content_type: str | None) -> str | None:
    """The yank reason in a request body: JSON ``{"reason": ...}`` or a form field ``reason``.

    None when the body gives none (empty, or without ``reason``). Whitespace runs, newlines
    included, become one space: the reason ends up in an HTML attribute and in one line of pip's
    output.
    """
    if not body.strip():
        return None
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        document = parse_json(body)
        if not isinstance(document, dict):
            raise BadRequest('the JSON body must be an object: {"reason": "..."}')
        reason = document.get("reason")
        if reason is None:
            return None
    elif media_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the form body is malformed: {exc}") from exc
        values = fields.get("reason")
        if values is None:
            return None
        if len(values) > 1:
            raise BadRequest("the form gives 'reason' more than once")
        reason = values[0]
    else:
        raise BadRequest(
            'send the reason as JSON {"reason": "..."} or as the form field reason=..., '
            f"not {media_type or 'a body without Content-Type'}"
        )
    if not isinstance(reason, str):
        raise BadRequest("the reason must be a string")
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON:
        raise BadRequest(f"the reason is longer than {MAX_REASON} characters")
    return reason


async def set_yanked(
    ctx: EcosystemContext, project: str, version: Version, yanked: bool, reason: str | None = None
) -> Release:
    """Yank (with ``reason``, or keeping the release's) or un-yank every file of a release.

    ``project`` is PEP 503 normalised. Versions compare as PEP 440 says (``1.0`` is ``1.0.0``).
    Raises 404 for a project or version the index does not hold; then nothing changes.
    """
    rows = await ctx.db.fetch_all(
        sa.select(pypi_files.c.filename, pypi_files.c.version, pypi_files.c.yanked).where(
            pypi_files.c.project == project
        )
    )
    if not rows:
        raise NotFound(f"project {project} not found")
    release = [row for row in rows if _same_version(row, version)]
    if not release:
        raise NotFound(f"project {project} has no version {version}")
    filenames = sorted(row["filename"] for row in release)
    if not yanked:
        reason = None
    elif reason is None:
        reason = release_reason(row["yanked"] for row in release) or ""
    changed = sum(1 for row in release if row["yanked"] != reason)
    if changed:
        current = pypi_files.c.yanked
        # One statement, guarded by the current state: concurrent requests never lose each
        # other's changes, and a file already in the wanted state keeps its yank_changes.
        differs = current.is_not(None) if reason is None else current.is_distinct_from(reason)
        await ctx.db.execute(
            pypi_files.update()
            .where(pypi_files.c.filename.in_(filenames), differs)
            .values(yanked=reason, yank_changes=pypi_files.c.yank_changes + 1)
        )
        await ctx.changes.notify(project)
    return Release(project, str(release[0]["version"]), filenames, reason, changed)


#: The versions and states of a project's yanked files (run with values: built once).
_YANKED_FILES = sa.select(pypi_files.c.version, pypi_files.c.yanked).where(
    pypi_files.c.project == sa.bindparam("project"), pypi_files.c.yanked.is_not(None)
)


async def release_state(ctx: EcosystemContext, project: str, version: Version) -> str | None:
    """The yank state a new file of this release is born with: that of the release's files.

    A wheel uploaded late to a yanked release must not make the release installable again.
    """
    rows = await ctx.db.fetch_all(_YANKED_FILES, {"project": project})
    return release_reason(row["yanked"] for row in rows if _same_version(row, version))


def release_reason(states: Iterable[str | None]) -> str | None:
    """The yank state files of one release share: the first reason, else ``""``, else None."""
    yanked = [state for state in states if state is not None]
    return next((state for state in yanked if state), "" if yanked else None)


def _same_version(row: Mapping[str, Any], version: Version) -> bool:
    try:
        return Version(row["version"]) == version
    except InvalidVersion:
        return False
