"""HTML fragments for depot's pages, built so that nothing untrusted is ever written by hand.

Every fragment is a :class:`markupsafe.Markup`. Text formatted into one is escaped by markupsafe;
HTML that comes from a package (a readme an ecosystem rendered from markdown or
reStructuredText) becomes Markup only through :func:`readme`, which runs it through nh3 (the
ammonia sanitiser): ``<script>``, ``<style>``, event-handler attributes, ``javascript:`` URLs,
forms, frames and every tag or attribute outside its allow-list are dropped. Ecosystems build
their package pages from these helpers, so one policy holds for every ecosystem and plugin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import nh3
from markupsafe import Markup, escape

__all__ = [
    "Markup",
    "code",
    "definitions",
    "escape",
    "join",
    "link",
    "pre",
    "readme",
    "safe_url",
    "sanitize",
    "table",
    "tag",
]

#: What a readme may contain: ammonia's defaults (text structure, tables, images, links) plus
#: the few tags READMEs commonly use for layout. No script, style, form, frame or object.
_README_TAGS = nh3.ALLOWED_TAGS | {"picture", "source", "input"}
_README_ATTRIBUTES = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height", "align"},
    "source": {"srcset", "media", "type"},
    "p": {"align"},
    "div": {"align"},
    # Heading ids let a readme's own table of contents work (readme_renderer prefixes them with
    # "user-content-"); the page runs no script, so an id cannot be used against it.
    **{f"h{level}": {"align", "id"} for level in range(1, 7)},
    "code": {"class"},  # language-xxx from fenced code blocks
    "pre": {"class"},
    "span": {"class"},  # Pygments token classes in readme_renderer's output
    "th": {"align", "colspan", "rowspan"},
    "td": {"align", "colspan", "rowspan"},
    "ol": {"start"},
}
#: Task-list checkboxes are the only inputs a readme keeps, and they are always disabled.
_README_ATTRIBUTE_VALUES = {"input": {"type": {"checkbox"}, "checked": {"", "checked"}}}
_README_FORCED_VALUES = {"input": {"disabled": "disabled"}}
_URL_SCHEMES = {"http", "https", "mailto"}


def sanitize(untrusted_html: str) -> Markup:
    """HTML from a package, reduced to what cannot run anything (see the module docstring)."""
    return Markup(
        nh3.clean(
            untrusted_html,
            tags=_README_TAGS,
            attributes=_README_ATTRIBUTES,
            tag_attribute_values=_README_ATTRIBUTE_VALUES,
            set_tag_attribute_values=_README_FORCED_VALUES,
            url_schemes=_URL_SCHEMES,
            link_rel="nofollow noopener noreferrer",
            strip_comments=True,
        )
    )


def readme(untrusted_html: str) -> Markup:
    """A rendered readme, sanitised and wrapped in the ``readme`` block the page styles."""
    return Markup('<div class="readme">{}</div>').format(sanitize(untrusted_html))


def safe_url(url: object) -> str | None:
    """``url`` if it is an http(s) URL a page may link to (from package metadata), else None."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


# The helpers below build Markup with f-strings over ``escape()`` rather than ``Markup.format``:
# the same escaping (markupsafe's C speedups), at a tenth of the cost, which a table of a thousand
# versions notices.


def link(href: str | None, text: object) -> Markup:
    """``<a href>`` around escaped ``text``; just the text when there is nowhere to link to.

    ``href`` must be a URL depot built or one that passed :func:`safe_url`.
    """
    if not href:
        return escape(text)
    return Markup(f'<a href="{escape(href)}">{escape(text)}</a>')


def code(text: object) -> Markup:
    return Markup(f"<code>{escape(text)}</code>")


def pre(text: object, cls: str = "") -> Markup:
    """A preformatted block, e.g. a command line to copy."""
    if cls:
        return Markup(f'<pre class="{escape(cls)}">{escape(text)}</pre>')
    return Markup(f"<pre>{escape(text)}</pre>")


def tag(name: str, content: object, cls: str = "") -> Markup:
    """``<name class=cls>content</name>``: ``name`` is a literal tag name of the caller's."""
    attrs = f' class="{escape(cls)}"' if cls else ""
    return Markup(f"<{name}{attrs}>{escape(content)}</{name}>")


def join(parts: Iterable[object], separator: str = ", ") -> Markup:
    """Fragments and texts joined, each text escaped."""
    return Markup(escape(separator).join(escape(p) for p in parts))


def definitions(pairs: Iterable[tuple[str, object]]) -> Markup:
    """A ``<dl>`` of (label, value) pairs; values are text or Markup. Empty values are left out."""
    items = "".join(
        f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>"
        for label, value in pairs
        if value not in (None, "")
    )
    return Markup(f'<dl class="facts">{items}</dl>') if items else Markup()


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> Markup:
    """A table that scrolls sideways on a narrow screen instead of widening the page.

    Rows are sequences of cells (text or Markup); a row given as a ``Markup`` is taken as a whole
    ``<tr>`` already built (a group heading, say).
    """
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        row if isinstance(row, Markup) else
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )  # fmt: skip
    return Markup(
        f'<div class="scroll"><table class="{escape(cls)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )
