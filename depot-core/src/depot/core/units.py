"""Durations and sizes as operators write them on command lines: ``24h``, ``90s``, ``50G``."""

from __future__ import annotations

import re

import click

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit (``ms s m h d w``); a bare number is
    seconds. Raises ValueError with a one-line reason."""
    m = _DURATION.match(str(text))
    if m is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 24h, 7d)")
    return float(m.group(1)) * _SECONDS[(m.group(2) or "s").lower()]


def format_duration(seconds: float) -> str:
    """The largest whole unit that fits, days and weeks from two on: ``86400`` is ``24h``,
    ``172800`` is ``2d``, ``90`` is ``90s``."""
    for unit, least in (("w", 2), ("d", 2), ("h", 1), ("m", 1)):
        if seconds >= least * _SECONDS[unit] and seconds % _SECONDS[unit] == 0:
            return f"{int(seconds // _SECONDS[unit])}{unit}"
    return f"{seconds:g}s"


def parse_size(text: str) -> int:
    """Bytes in ``text``: ``50G``, ``512MiB``, ``1.5T``, ``1000``. Units are powers of 1024."""
    m = _SIZE.match(str(text))
    if m is None:
        raise ValueError(f"{text!r} is not a size (e.g. 500M, 50G, 2T)")
    return int(float(m.group(1)) * 1024 ** _POWERS[m.group(2).lower()])


class Duration(click.ParamType):
    """A click parameter that accepts :func:`parse_duration`'s spellings and gives seconds."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):  # type: ignore[no-untyped-def]
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
