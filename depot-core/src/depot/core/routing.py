"""The top-level router: each request goes straight to the mount of its ecosystem.

Starlette's router tries every route in order, matching each one's regular expression. Depot's
top level holds the core pages and one :class:`~starlette.routing.Mount` per ecosystem, so a
narinfo or tarball request paid for several failed matches before reaching ``/nix`` or ``/npm``:
about a tenth of a narinfo request's server time. Here the first path segment picks the mount
directly whenever no other route could claim that segment; everything else (the core pages, 404s,
405s and slash redirects) falls through to Starlette's ordinary scan, so the routing rules are
unchanged.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Mount, Route, Router, get_route_path
from starlette.types import Receive, Scope, Send


def _first_segment(path: str) -> str:
    """``"nix"`` for ``"/nix/abc.narinfo"``; a route template's placeholders count as a segment."""
    return path.lstrip("/").split("/", 1)[0]


class EcosystemRouter(Router):
    """A :class:`~starlette.routing.Router` that dispatches on the first path segment first."""

    def __init__(self, routes: list[BaseRoute], **kwargs: object) -> None:
        super().__init__(routes, **kwargs)  # type: ignore[arg-type]
        self._direct: dict[str, Mount] = {}
        claimed: dict[str, int] = {}
        for route in self.routes:
            if isinstance(route, Mount | Route):
                segment = _first_segment(route.path)
                claimed[segment] = claimed.get(segment, 0) + 1
        for route in self.routes:
            if isinstance(route, Mount):
                segment = _first_segment(route.path)
                # Only a mount that alone owns its segment, with a literal name, is taken directly.
                if segment and "{" not in segment and claimed[segment] == 1:
                    self._direct[segment] = route

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._direct:
            mount = self._direct.get(_first_segment(get_route_path(scope)))
            if mount is not None:
                match, child_scope = mount.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = mount
                    scope.update(child_scope)
                    await mount.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)
