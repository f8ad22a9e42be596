"""The simple repository API: PEP 503 HTML and PEP 691 JSON pages, and choosing between them.

Pure functions over :class:`IndexFile` records; the routes fetch rows and pass them in. Pages
follow api-version 1.1: PEP 592 yanked, PEP 629 repository version, PEP 658/714 core metadata
hashes, PEP 700 ``versions``, ``size`` and ``upload-time``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from packaging.version import InvalidVersion, Version

API_VERSION = "1.1"

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"

#: What we can answer, in our order of preference when a client likes several equally (PEP 691
#: recommends JSON). ``latest`` aliases resolve to v1.
OFFERS: tuple[str, ...] = (JSON_V1, HTML_V1, TEXT_HTML)
_WILDCARD_ORDER: tuple[str, ...] = (TEXT_HTML, HTML_V1, JSON_V1)
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}


class NotAcceptable(ValueError):
    """The Accept header allows none of :data:`OFFERS`; answered with 406."""


@dataclass(frozen=True)
class IndexFile:
    """One file as a project page lists it."""

    filename: str
    url: str  # absolute, without fragment
    sha256: str
    size: int
    upload_time: str  # ISO 8601, ``...Z``
    requires_python: str | None = None
    metadata_sha256: str | None = None  # PEP 658: hash of ``<url>.metadata`` when served
    yanked: str | None = None  # None: not yanked; "" yanked without reason; else the reason


def negotiate(accept: str | None, format_param: str | None = None) -> str:
    """The media type to answer with, honouring q-values (RFC 9110 section 12.5.1).

    No Accept header means text/html, what pre-PEP 691 clients expect. PEP 691's ``?format=``
    query parameter is accepted as an override (with the same syntax as Accept).
    """
    header = format_param or accept
    if not header or not header.strip():
        return TEXT_HTML
    best: tuple[float, int, int, str] | None = None
    for offer in OFFERS:
        q, specificity = _quality(header, offer)
        if q <= 0:
            continue
        # Equal q: a type named outright beats one matched by a wildcard; among named types
        # JSON comes first (PEP 691's advice), among wildcard matches plain text/html (what a
        # browser or curl can show).
        order = OFFERS if specificity == 3 else _WILDCARD_ORDER
        key = (q, specificity, -order.index(offer), offer)
        if best is None or key > best:
            best = key
    if best is None:
        raise NotAcceptable(f"none of {', '.join(OFFERS)} is acceptable")
    return best[3]


def _quality(header: str, offer: str) -> tuple[float, int]:
    """The q-value the header gives ``offer`` and how specifically (3 named, 2 type/*, 1 */*)."""
    offer_type, offer_subtype = offer.split("/")
    found: tuple[int, float] | None = None  # (specificity, q)
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = _ALIASES.get(fields[0].lower(), fields[0].lower())
        if "/" not in media:
            continue
        q = 1.0
        for param in fields[1:]:
            pname, _, value = param.partition("=")
            if pname.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0
        mtype, msubtype = media.split("/", 1)
        if media == offer:
            specificity = 3
        elif mtype == offer_type and msubtype == "*":
            specificity = 2
        elif media == "*/*":
            specificity = 1
        else:
            continue
        if found is None or specificity > found[0]:
            found = (specificity, q)
    return (0.0, 0) if found is None else (found[1], found[0])


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Distinct versions in PEP 440 order (unparsable ones last, as strings)."""
    parsed: list[tuple[Version, str]] = []
    odd: list[str] = []
    for text in set(versions):
        try:
            parsed.append((Version(text), text))
        except InvalidVersion:
            odd.append(text)
    return [text for _, text in sorted(parsed)] + sorted(odd)


def root_json(projects: Sequence[str]) -> bytes:
    """PEP 691 root page: every project by name."""
    body = {
        "meta": {"api-version": API_VERSION},
        "projects": [{"name": name} for name in projects],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def root_html(projects: Sequence[str]) -> bytes:
    """PEP 503 root page: one anchor per project, linking ``<name>/``."""
    links = "".join(f'<a href="{quote(name)}/">{html.escape(name)}</a><br>\n' for name in projects)
    return (_HTML_HEAD.format(title="Simple index") + links + "</body>\n</html>\n").encode()


def project_json(name: str, versions: Sequence[str], files: Sequence[IndexFile]) -> bytes:
    """PEP 691 project page (api-version 1.1)."""
    body = {
        "meta": {"api-version": API_VERSION},
        "name": name,
        "versions": list(versions),
        "files": [_file_json(f) for f in files],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _file_json(f: IndexFile) -> dict[str, object]:
    entry: dict[str, object] = {
        "filename": f.filename,
        "url": f.url,
        "hashes": {"sha256": f.sha256},
        "requires-python": f.requires_python,
        "size": f.size,
        "upload-time": f.upload_time,
        "yanked": False if f.yanked is None else (f.yanked or True),
    }
    # PEP 714: JSON says "core-metadata" only; the old "dist-info-metadata" key makes pip
    # 22.3 to 23.1 fail outright on the whole page.
    entry["core-metadata"] = {"sha256": f.metadata_sha256} if f.metadata_sha256 else False
    return entry


def project_html(name: str, files: Sequence[IndexFile]) -> bytes:
    """PEP 503 project page with the attributes of PEPs 592, 629, 658 and 714."""
    parts = [_HTML_HEAD.format(title=f"Links for {html.escape(name)}")]
    parts.append(f"<h1>Links for {html.escape(name)}</h1>\n")
    for f in files:
        attributes = [f'href="{html.escape(f.url)}#sha256={f.sha256}"']
        if f.requires_python:
            attributes.append(f'data-requires-python="{html.escape(f.requires_python)}"')
        if f.metadata_sha256:
            value = f"sha256={f.metadata_sha256}"
            attributes.append(f'data-core-metadata="{value}"')
            # PEP 714 allows the old attribute in HTML, which pip before 23.3 reads safely.
            attributes.append(f'data-dist-info-metadata="{value}"')
        if f.yanked is not None:
            attributes.append(f'data-yanked="{html.escape(f.yanked)}"')
        parts.append(f"<a {' '.join(attributes)}>{html.escape(f.filename)}</a><br>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts).encode()


_HTML_HEAD = (
    "<!DOCTYPE html>\n<html>\n<head>\n"
    f'<meta name="pypi:repository-version" content="{API_VERSION}">\n'
    "<title>{title}</title>\n</head>\n<body>\n"
)
