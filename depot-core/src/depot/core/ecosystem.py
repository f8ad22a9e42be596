"""What an ecosystem plugin declares about itself."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Ecosystem:
    """A package ecosystem served by depot.

    ``name`` scopes the blob namespace, the logger (``depot.<name>``) and the CLI group;
    ``prefix`` is the URL prefix of its routes; ``title`` is what people read on the ``/`` page.
    """

    name: str
    prefix: str
    title: str
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"ecosystem name {self.name!r} must match {_NAME.pattern}")
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"ecosystem prefix {self.prefix!r} must start and not end with '/'")
