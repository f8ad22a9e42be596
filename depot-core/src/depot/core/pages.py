"""The pages people read: ``/`` (what this depot holds and how to use it), ``/-/browse/<eco>``,
and ``/-/health`` for load balancers. Package pages are in :mod:`depot.core.packagepages`.

Server-rendered HTML with no script: search is a plain GET form. Every value from the database or
the request is escaped; plugins hand in sections whose HTML they escaped themselves.
"""

from __future__ import annotations

import html
import inspect
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from depot.core.catalog import CatalogEntry
from depot.core.ecosystem import Ecosystem
from depot.core.errors import NotFound
from depot.core.http import Validators, external_base
from depot.core.markup import Markup
from depot.core.packagepages import package_page_url, provenance_label
from depot.core.packagepages import render as render_package_page
from depot.core.rendered import Rendered
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

if TYPE_CHECKING:
    from depot.core.app import Depot


@dataclass(frozen=True)
class Section:
    """A part of the ``/`` page contributed by a plugin; ``body_html`` is already escaped."""

    title: str
    body_html: str
    ecosystem: str | None = None


_STYLE = """*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;max-width:64rem;margin:1rem auto;padding:0 1rem;color:#222;
line-height:1.45;overflow-wrap:break-word}
code,pre{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px;font-size:.9em}
pre{padding:.6rem;overflow-x:auto;white-space:pre-wrap}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}
.eco{border:1px solid #ddd;border-radius:6px;padding:.2rem 1rem;margin:1rem 0}
nav{display:flex;flex-wrap:wrap;gap:.3rem 1rem;align-items:center}nav form{margin-left:auto}
.muted{color:#666}.summary{font-size:1.1rem}.scroll{overflow-x:auto;max-width:100%}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:1rem 0}
.facts dt{color:#666}.facts dd{margin:0;min-width:0}.facts code,pre{overflow-wrap:anywhere}
.install{margin:.4rem 0}.install pre{margin:.2rem 0}
.readme{border-top:1px solid #ddd;padding-top:.5rem}.readme img{max-width:100%;height:auto}
.yanked,.deprecated{color:#a00}.provenance{white-space:nowrap;font-size:.85em;padding:0 .3rem;
border-radius:3px}.provenance.cached,.provenance.upstream{background:#eef4ff;color:#124}
.provenance.upstream{color:#666}.provenance.local{background:#eef8ee;color:#131}
.provenance-note{border-left:4px solid #8a8;padding:.3rem .6rem;background:#f6fbf6}
.provenance-note.cached{border-color:#88a;background:#f5f7ff}
tr.group td{background:#f7f7f7;font-weight:600}
input[type=search]{max-width:100%}
@media (max-width:40rem){.facts{grid-template-columns:1fr}.facts dd{margin-bottom:.4rem}
td,th{padding:.25rem .3rem}body{padding:0 .6rem}}"""

#: Depot's pages run no script: a readme that slipped something past the sanitiser still could
#: not execute it. Images may come from anywhere (readme badges); styles are inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; frame-ancestors 'self'"
)


def page(title: str, body: str, base: str, crumbs: str = "", search: str = "") -> HTMLResponse:
    """A whole HTML document around ``body`` (already escaped); ``crumbs`` and ``search`` are
    escaped HTML put in the navigation bar after the link to ``/``."""
    nav = f'<a href="{html.escape(base)}/">depot</a>'
    if crumbs:
        nav += f"<span>/</span>{crumbs}"
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f'</title><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head><body>"
        f"<nav>{nav}{search}</nav>{body}</body></html>",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def _entry_rows(entries: Iterable[CatalogEntry], base: str, ecosystem: Ecosystem) -> str:
    """Table rows of catalog entries; a name links to its package page, else to ``href``, and
    with both the ``href`` (what clients fetch) follows as its URL path."""
    rows = []
    for e in entries:
        name = html.escape(e.name)
        href = html.escape(base + ecosystem.prefix + e.href) if e.href else ""
        if e.page is not None:
            url = package_page_url(base, ecosystem.name, e.page)
            name = f'<a href="{html.escape(url)}">{name}</a>'
            if href:
                path = html.escape(ecosystem.prefix + (e.href or ""))
                name += f' <a class="muted" href="{href}">{path}</a>'
        elif href:
            name = f'<a href="{href}">{name}</a>'
        fields = "".join(
            f"<div><span class=muted>{html.escape(label)}:</span> {html.escape(value)}</div>"
            for label, value in e.fields
        )
        when = e.uploaded_at.strftime("%Y-%m-%d %H:%M") if e.uploaded_at else ""
        if e.provenance is not None:
            name += f" {provenance_label(e.provenance)}"
        rows.append(
            f"<tr><td>{name}<div class=muted>{html.escape(e.summary)}</div>{fields}</td>"
            f"<td>{human_size(e.size)}</td><td>{html.escape(when)}</td></tr>"
        )
    return "".join(rows)


async def _sections(depot: Depot, request: Request) -> list[Section]:
    sections: list[Section] = []
    for result in reversed(depot.plugins.hook.depot_index_sections(depot=depot, request=request)):
        if inspect.isawaitable(result):
            result = await result
        sections.extend(result or ())
    return sections


async def index(request: Request) -> Response:
    depot: Depot = request.scope["depot"]
    base = external_base(request, depot.settings)
    catalogs = {c.ecosystem: c for c in depot.catalogs()}
    sections = await _sections(depot, request)
    parts = ["<h1>depot</h1><p>Nix, npm and Python packages served from one place.</p>"]
    if depot.settings.auth_file:
        parts.append(
            "<p><strong>Authentication is on.</strong> Make a token from your SSH key with "
            "<code>depot token</code>; each client's line below shows where it goes.</p>"
        )
    if not depot.ecosystems:
        parts.append("<p>No ecosystem plugin is installed.</p>")
    for name, ecosystem in depot.ecosystems.items():
        url = base + ecosystem.prefix
        parts.append(
            f'<section class="eco" id="{html.escape(name)}"><h2>{html.escape(ecosystem.title)}</h2>'
        )
        parts.append(f'<p><a href="{html.escape(url)}/">{html.escape(url)}/</a></p>')
        catalog = catalogs.get(name)
        if catalog is not None:
            stats = await catalog.stats(newest=5)
            parts.append(
                f"<p>{stats.objects} stored, {human_size(stats.bytes)}. "
                f'<a href="{html.escape(base)}/-/browse/{html.escape(name)}">'
                "Browse and search</a></p>"
            )
            if stats.newest:
                rows = _entry_rows(stats.newest, base, ecosystem)
                parts.append(f'<h3>Newest</h3><div class="scroll"><table>{rows}</table></div>')
        for section in sections:
            if section.ecosystem == name:
                parts.append(f"<h3>{html.escape(section.title)}</h3>{section.body_html}")
        parts.append("</section>")
    for section in sections:
        if section.ecosystem not in depot.ecosystems:
            parts.append(f"<h2>{html.escape(section.title)}</h2>{section.body_html}")
    parts.append(await _retention_section(depot))
    return page("depot", "".join(parts), base)


async def _retention_section(depot: Depot) -> str:
    """The blob store's size per ecosystem (as the last collection measured it) and the
    retention settings."""
    from depot.core.collector import last_collection
    from depot.core.units import format_duration

    settings = depot.settings
    interval = (
        f"every {format_duration(settings.gc_interval)}"
        if settings.gc_interval
        else "not in the background (run <code>depot gc</code>)"
    )
    rows = [
        f"<tr><td>storage</td><td>{html.escape(settings.storage_type)}</td></tr>",
        f"<tr><td>garbage collection</td><td>{interval}</td></tr>",
        "<tr><td>grace period</td><td>unreferenced blobs younger than "
        f"{format_duration(settings.gc_grace)} are kept</td></tr>",
    ]
    rows += await _cache_rows(depot)
    last = await last_collection(depot.database)
    if last is None:
        rows.append("<tr><td>last collection</td><td>none yet</td></tr>")
    else:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(last.started))
        rows.append(
            f"<tr><td>last collection</td><td>{when}, {last.duration:.1f} s, removed "
            f"{last.removed} objects ({human_size(last.removed_bytes)})</td></tr>"
        )
        for name, tally in last.ecosystems.items():
            rows.append(
                f"<tr><td>store size: {html.escape(name)}</td><td>{tally.kept} blobs, "
                f"{human_size(tally.kept_bytes)}</td></tr>"
            )
    table = "".join(rows)
    return f'<section id="retention"><h2>Storage and retention</h2><table>{table}</table></section>'


async def _cache_rows(depot: Depot) -> list[str]:
    """The retention of content cached from upstreams: its limits and what is held now."""
    from depot.core.retention import cached_totals
    from depot.core.units import format_duration

    settings = depot.settings
    limits = []
    if settings.cache_max_size is not None:
        limits.append(f"least recently used first above {human_size(settings.cache_max_size)}")
    if settings.cache_max_age is not None:
        limits.append(f"unused for {format_duration(settings.cache_max_age)}")
    evicted = (
        "; ".join(limits) + ", at each collection (published content never)"
        if limits
        else "never (no --cache-max-size or --cache-max-age)"
    )
    rows = [f"<tr><td>content cached from upstreams evicted</td><td>{evicted}</td></tr>"]
    for name, (items, size) in (await cached_totals(depot.database)).items():
        rows.append(
            f"<tr><td>cached from upstream: {html.escape(name)}</td><td>{items} items, "
            f"{human_size(size)}</td></tr>"
        )
    return rows


async def browse(request: Request) -> Response:
    """Search one ecosystem's catalog: ``/-/browse/<ecosystem>?q=...``."""
    depot: Depot = request.scope["depot"]
    name = request.path_params["ecosystem"]
    catalog = next((c for c in depot.catalogs() if c.ecosystem == name), None)
    if catalog is None or name not in depot.ecosystems:
        raise NotFound(f"no ecosystem {name!r} to browse")
    base = external_base(request, depot.settings)
    query = request.query_params.get("q", "")[:200]
    entries = await catalog.search(query, limit=100)
    ecosystem = depot.ecosystems[name]
    form = (
        f'<form method="get"><input type="search" name="q" value="{html.escape(query)}" '
        f'placeholder="search {html.escape(ecosystem.title)}" autofocus> '
        "<button>Search</button></form>"
    )
    # Published and cached names in two tables: what the team put here is what a search is
    # mostly for, and a cached name is a copy of someone else's package, installable here
    # (offline too) but not vouched for by anyone who published it.
    published = [e for e in entries if e.provenance is None or not e.provenance.cached]
    cached = [e for e in entries if e.provenance is not None and e.provenance.cached]
    result = ""
    if published:
        result += (
            '<div class="scroll"><table id="published"><tr><th>name</th><th>size</th>'
            f"<th>uploaded</th></tr>{_entry_rows(published, base, ecosystem)}</table></div>"
        )
    if cached:
        result += (
            '<h2 id="cached">Cached from upstreams</h2><div class="scroll"><table>'
            "<tr><th>name</th><th>size cached</th><th>fetched</th></tr>"
            f"{_entry_rows(cached, base, ecosystem)}</table></div>"
        )
    if not entries:
        result = (
            f"<p>Nothing matches {html.escape(query)!s}.</p>"
            if query
            else "<p>Nothing stored yet.</p>"
        )
    return page(
        f"{ecosystem.title} - depot", f"<h1>{html.escape(ecosystem.title)}</h1>{form}{result}", base
    )


async def package_page(request: Request) -> Response:
    """``GET /-/browse/<ecosystem>/<name>``: the ecosystem builds the page, the core lays it out
    (and keeps it until the ecosystem's change generation moves, see :class:`PackagePages`)."""
    depot: Depot = request.scope["depot"]
    ecosystem_name = request.path_params["ecosystem"]
    name = request.path_params["name"]
    pages = next((p for p in depot.package_pages() if p.ecosystem == ecosystem_name), None)
    ecosystem = depot.ecosystems.get(ecosystem_name)
    if pages is None or ecosystem is None:
        raise NotFound(f"no package pages for {ecosystem_name!r}")
    base = external_base(request, depot.settings)
    key = (ecosystem_name, name, request.url.query, base)
    generation = None
    if getattr(pages, "follows_changes", False):
        generation = depot.context(ecosystem_name).changes.generation()
        kept = depot.rendered_pages.get(key, generation)
        if kept is not None:
            return _html_page(request, kept)
    found = await pages.page(name, request)
    if found is None:
        raise NotFound(f"{ecosystem.title} holds no {name!r}")
    browse_url = f"{base}/-/browse/{quote(ecosystem_name, safe='')}"
    crumbs = Markup('<a href="{}">{}</a>').format(browse_url, ecosystem.title)
    search = Markup(
        '<form class="search" method="get" action="{}"><input type="search" name="q" '
        'placeholder="search {}" aria-label="search"> <button>Search</button></form>'
    ).format(browse_url, ecosystem.title)
    title = f"{found.title} - {ecosystem.title} - depot"
    rendered = Rendered.of(page(title, render_package_page(found), base, crumbs, search).body)
    if generation is not None:
        depot.rendered_pages.put(key, generation, rendered)
    return _html_page(request, rendered)


def _html_page(request: Request, rendered: Rendered) -> Response:
    """A rendered page with its ETag, or 304 when the client holds it already."""
    validators = Validators(rendered.etag, None, "no-cache")
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
    if validators.unchanged(request):
        return validators.not_modified(headers)
    return Response(
        rendered.body, media_type="text/html", headers={**validators.headers(), **headers}
    )


#: The key ``/-/health`` looks up in the blob store; no ecosystem writes outside its namespace.
HEALTH_PROBE_KEY = "depot-health/probe"


async def health(request: Request) -> Response:
    """200 when the database and the blob store answer, 503 otherwise: what a load balancer probes.

    The store is asked for a key that never exists (one ``stat``, a HEAD request on S3), so an
    unreachable bucket takes the replica out of rotation just as an unreachable database does.
    """
    depot: Depot = request.scope["depot"]
    checks = (
        ("database", lambda: depot.database.fetch_val("SELECT 1")),
        ("blob store", lambda: depot.blob_store.stat(HEALTH_PROBE_KEY)),  # type: ignore[union-attr]
    )
    for name, check in checks:
        try:
            await check()
        except Exception as exc:  # any failure of a backing service means "not healthy"
            reason = f"{name}: {type(exc).__name__}: {exc}"[:200]
            return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ok", "ecosystems": sorted(depot.ecosystems)})
