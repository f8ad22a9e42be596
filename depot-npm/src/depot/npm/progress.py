"""Progress on stderr for long client commands: a bar on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time

import click


class Progress:
    """Counts work done; redraws at most a few times a second."""

    def __init__(self, verb: str, interval: float = 5.0) -> None:
        self.verb = verb
        self.total = 0
        self.done = 0
        self.skipped = 0
        self.failed = 0
        self.bytes = 0
        self.tty = sys.stderr.isatty()
        self.interval = 0.1 if self.tty else interval
        self._last = 0.0
        self.started = time.monotonic()

    def add_total(self, n: int = 1) -> None:
        self.total += n
        self.show()

    def advance(self, nbytes: int = 0, skipped: bool = False, failed: bool = False) -> None:
        self.done += 1
        self.bytes += nbytes
        self.skipped += skipped
        self.failed += failed
        self.show()

    def line(self, message: str) -> None:
        """A message that must stay on screen (a failure), above the bar."""
        if self.tty:
            click.echo("\r\033[K", err=True, nl=False)
        click.echo(message, err=True)
        self.show(force=True)

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        total = max(self.total, self.done)
        width = 30
        filled = int(width * self.done / total) if total else 0
        text = (
            f"{self.verb} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{total} "
            f"({self.bytes / 1e6:.1f} MB)"
        )
        if self.tty:
            click.echo("\r\033[K" + text, err=True, nl=False)
        elif self.done and not force:
            click.echo(text, err=True)

    def close(self) -> None:
        if self.tty:
            click.echo("\r\033[K", err=True, nl=False)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
