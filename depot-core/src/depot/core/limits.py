"""The limits on what a client may send, and the one bounded JSON reader every ecosystem uses.

Every input a client controls is bounded before it can cost more than a 400: JSON nesting (Python's
parser recurses, and 100,000 ``[`` raised ``RecursionError``), the length of a JSON number (the
integer-string conversion limit of 4,300 digits raised ``ValueError`` deep in a handler), and the
length of names, versions and search text (SQLite refuses a LIKE pattern over 50,000 bytes, which
looked like a database outage). They live here so every ecosystem, and a third-party plugin, says
the same thing about the same input; each ecosystem may be stricter (npm names stop at 214).

The answers are :class:`~depot.core.errors.BadRequest` with a one-line reason.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from depot.core.errors import BadRequest
from depot.core.http import read_limited_body
from starlette.requests import Request

#: Deepest nesting of objects and arrays in any JSON body. Real documents (packuments, manifests
#: with ``exports`` conditions, realisations) stay under 20.
MAX_JSON_DEPTH = 128
#: Longest JSON number, in characters. A float has 17 significant digits; 100 leaves room for
#: exponents and zeros and refuses 100,000-digit integers before Python converts them.
MAX_JSON_NUMBER = 100
#: Longest package or project name in a URL or a document (npm's own limit is 214).
MAX_NAME_LENGTH = 256
#: Longest version string (npm's semver refuses longer ones; PEP 440 versions are far shorter).
MAX_VERSION_LENGTH = 256
#: Longest search text (npm search, the browse pages).
MAX_SEARCH_TEXT = 256
#: Most keys in a document's top-level object. Packuments, manifests and realisations have a few
#: dozen; 200,000 junk keys cost a streaming parser seconds and mean nothing.
MAX_TOP_LEVEL_KEYS = 1000
#: Largest JSON body read whole (version documents, dist-tags, realisations) unless a caller
#: says otherwise.
MAX_JSON_BODY = 16 * 1024 * 1024


class JSONLimitError(ValueError):
    """A JSON document over one of the limits; the message says which."""


def check_length(value: str, limit: int, what: str) -> str:
    """``value`` if it is at most ``limit`` characters, else 400 naming ``what``."""
    if len(value) > limit:
        raise BadRequest(f"{what} is longer than {limit} characters")
    return value


def check_name(value: str, what: str = "the name") -> str:
    return check_length(value, MAX_NAME_LENGTH, what)


def check_version(value: str, what: str = "the version") -> str:
    return check_length(value, MAX_VERSION_LENGTH, what)


def check_search_text(value: str) -> str:
    return check_length(value, MAX_SEARCH_TEXT, "the search text")


def _number(text: str) -> str:
    if len(text) > MAX_JSON_NUMBER:
        raise JSONLimitError(f"a number longer than {MAX_JSON_NUMBER} characters")
    return text


def _int(text: str) -> int:
    return int(_number(text))


def _float(text: str) -> float:
    return float(_number(text))


def _constant(text: str) -> None:
    raise JSONLimitError(f"{text} is not JSON")


#: Keyword arguments for :func:`json.loads` that bound numbers and refuse NaN and Infinity;
#: for parsers that check depth themselves (depot-npm's streaming publish parser).
NUMBER_HOOKS: dict[str, Any] = {
    "parse_int": _int,
    "parse_float": _float,
    "parse_constant": _constant,
}

#: A JSON string (with escapes), removed before counting brackets.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [1 if b in b"[{" else -1 for b in range(256)]


def json_depth(data: bytes) -> int:
    """The deepest bracket nesting outside strings (an upper bound for malformed input).

    Computed with regular expressions and ``bytes.translate`` so that checking a 16 MiB document
    costs milliseconds, and before :func:`json.loads` would recurse into it.
    """
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def decode_json(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON within the limits; :class:`ValueError` (with a one-line reason) otherwise."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = json_depth(raw)
    if depth > max_depth:
        raise JSONLimitError(f"nested deeper than {max_depth} levels")
    try:
        document = json.loads(raw, **NUMBER_HOOKS)
    except RecursionError as exc:  # cannot happen below max_depth; kept as a guard
        raise JSONLimitError(f"nested deeper than {max_depth} levels") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-8 ({exc.reason})") from exc
    if isinstance(document, dict) and len(document) > MAX_TOP_LEVEL_KEYS:
        raise JSONLimitError(f"more than {MAX_TOP_LEVEL_KEYS} keys in the top-level object")
    return document


def parse_json(data: bytes | str, what: str = "the body") -> Any:
    """:func:`decode_json`, answering 400 ``<what> is not valid JSON: <reason>``."""
    try:
        return decode_json(data)
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from exc


async def read_json_body(
    request: Request, limit: int = MAX_JSON_BODY, what: str = "the body"
) -> Any:
    """A request body that must be one JSON document: 413 past ``limit`` bytes, 400 when it is
    malformed or over a limit. Every ecosystem reads its JSON bodies through this."""
    return parse_json(await read_limited_body(request, limit), what)
