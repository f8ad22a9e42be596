"""Routing by path segment: each request tries only the routes that could match its path.

Starlette's router tries every route in order, matching each one's regular expression. Depot's
top level holds the core pages and one :class:`~starlette.routing.Mount` per ecosystem, and
each ecosystem has a dozen routes, most of them for writes and rare endpoints, before its
catch-all (npm's packument route is the last of eleven). A hot request paid for every failed
match on the way.

:class:`SegmentRouter` indexes its routes by the literal first segment of their path
(``/-/ping`` -> ``-``, ``/simple/{project}/`` -> ``simple``, ``/npm`` -> ``npm``); a route whose
first segment holds a placeholder (``/{path:path}``, ``/{hash}.narinfo``) may match any path.
A request tries the routes indexed under its own first segment and the placeholder ones, in
their declared order, and takes the first full match, exactly as Starlette would: a route with
another literal first segment cannot match. Everything else (405s from partial matches, slash
redirects, 404s) falls through to Starlette's ordinary scan over all routes, so the rules are
unchanged. :func:`index_mounts` gives every plain ``Mount(routes=...)`` inside the same router,
so an ecosystem's or a third-party plugin's routes get it without doing anything.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Mount, Route, Router, get_route_path
from starlette.types import Receive, Scope, Send


def first_segment(path: str) -> str:
    """``"nix"`` for ``"/nix/abc.narinfo"``, ``""`` for ``"/"``."""
    end = path.find("/", 1)
    return path[1:end] if end != -1 else path[1:]


def _literal_segment(route: BaseRoute) -> str | None:
    """The first segment every path the route matches starts with, or None if any may."""
    if not isinstance(route, Route | Mount):
        return None
    segment = first_segment(route.path)
    if "{" in segment or (isinstance(route, Mount) and not segment):
        return None
    return segment


class SegmentRouter(Router):
    """A :class:`~starlette.routing.Router` that tries only the routes a path's first segment
    allows, then falls back to Starlette's full scan."""

    def __init__(self, routes: list[BaseRoute], **kwargs: object) -> None:
        super().__init__(routes, **kwargs)  # type: ignore[arg-type]
        self.index_routes()

    def index_routes(self) -> None:
        """(Re)build the index from :attr:`routes`, and give plain mounts the same routing."""
        literal: dict[str, list[int]] = {}
        anywhere: list[int] = []
        for position, route in enumerate(self.routes):
            segment = _literal_segment(route)
            if segment is None:
                anywhere.append(position)
            else:
                literal.setdefault(segment, []).append(position)
            if isinstance(route, Mount):
                index_mounts(route)
        self._anywhere = [self.routes[p] for p in anywhere]
        self._by_segment = {
            segment: [self.routes[p] for p in sorted(positions + anywhere)]
            for segment, positions in literal.items()
        }

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            candidates = self._by_segment.get(first_segment(get_route_path(scope)), self._anywhere)
            for route in candidates:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    if "router" not in scope:
                        scope["router"] = self
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)


def index_mounts(mount: Mount) -> None:
    """Route a plain ``Mount(routes=...)`` (no middleware of its own) by segment too."""
    inner = mount.app
    if type(inner) is not Router or inner is not getattr(mount, "_base_app", None):
        return
    if inner.middleware_stack != inner.app:  # middleware of its own: leave it alone
        return
    router = SegmentRouter(
        inner.routes, redirect_slashes=inner.redirect_slashes, default=inner.default
    )
    mount._base_app = mount.app = router
