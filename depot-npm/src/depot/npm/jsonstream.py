"""A JSON parser fed in chunks that hands chosen strings over in pieces instead of keeping them.

``npm publish`` sends one JSON document with each tarball inside it as a base64 string
(``_attachments.<file>.data``). Parsing that with :func:`json.loads` needs the whole body in memory
two or three times over. :class:`StreamingJSONParser` is fed the body a chunk at a time and builds
the document as usual, except for the strings its ``divert`` predicate picks by path: their text is
returned from :meth:`StreamingJSONParser.feed` as :class:`DivertedPiece` items as it arrives, and
the document holds ``None`` in their place. Memory is then bounded by the rest of the document
(the "skeleton", capped by ``max_skeleton``) plus one chunk, whatever the size of the strings.

Why not a library: ijson and json-stream both stream *between* values but return every string
whole (json-stream's "strings as streams" is an open wish, daggaz/json-stream#45), and neither is
async. This module is RFC 8259 JSON and nothing else: no NaN/Infinity, no comments, no trailing
commas, UTF-8 input. Strings decode exactly as :func:`json.loads` decodes them (all escapes,
surrogate pairs, a lone surrogate kept as is); a repeated key keeps its last value, as there.

Speed: walking every token in Python costs about a microsecond each. Objects and arrays that the
``descend`` predicate rules out (no diverted string can be inside them: a packument's
``versions``) are only skimmed for their end, a regular expression per string, and then built by
:func:`json.loads`, which also validates them; so a large document costs little more than
:func:`json.loads` would.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from depot.core.limits import MAX_JSON_DEPTH, MAX_JSON_NUMBER, MAX_TOP_LEVEL_KEYS, NUMBER_HOOKS

#: A value's place in the document: object keys and array indexes from the root.
JSONPath = tuple[str | int, ...]

_WHITESPACE = re.compile(rb"[ \t\n\r]*")
#: Inside a string: the next byte that is not plain text (end, escape, or a forbidden control).
_STRING_SPECIAL = re.compile(rb'["\\\x00-\x1f]')
_NUMBER_CHARS = re.compile(rb"[-+0-9.eE]*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_LITERALS = {b"true": True, b"false": False, b"null": None}
_SIMPLE_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
#: Skimming a container: everything up to the next bracket outside a string, then that bracket
#: (group 1), or a quote that opens a string the buffer cuts off, or nothing at the buffer's end.
_SKIM_TO_BRACKET = re.compile(rb'(?:[^"\[\]{}]+|"[^"\\]*(?:\\.[^"\\]*)*")*([\[\]{}"])?', re.DOTALL)
#: Skimming the rest of a cut string: plain bytes and whole escapes.
_SKIM_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_HEX = re.compile(rb"[0-9a-fA-F]{4}")
_HEX_START = re.compile(rb"[0-9a-fA-F]{0,3}")
_LOW_SURROGATE = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_LOW_SURROGATE_START = re.compile(rb"\\(u([dD]([c-fC-F][0-9a-fA-F]?)?)?)?|")

# What the parser expects next, outside a string.
_VALUE = "a value"
_FIRST_ITEM = "a value or ']'"
_FIRST_KEY = "a key or '}'"
_KEY = "a key"
_COLON = "':'"
_AFTER_VALUE = "',' or a closing bracket"
_END = "the end of the document"
_IN_STRING = "the rest of a string"
_IN_SKIMMED = "the rest of an object or array"


class JSONStreamError(ValueError):
    """The input is not one well-formed JSON document; the message says where and why."""


class SkeletonTooLarge(JSONStreamError):
    """The document without its diverted strings is larger than the parser's ``max_skeleton``."""


@dataclass(frozen=True)
class DivertedPiece:
    """Consecutive text of a diverted string: ``first`` on its first piece, ``last`` on its end."""

    path: JSONPath
    text: str
    first: bool
    last: bool


@dataclass
class _Container:
    """An open object or array; ``key`` is the object key whose value comes next."""

    value: dict[str, Any] | list[Any]
    key: str | None = None


@dataclass
class _Skim:
    """A container read whole: its raw bytes so far, bracket depth, and whether in a string."""

    raw: bytearray
    depth: int = 0
    in_string: bool = False


@dataclass
class _String:
    """The string being read: a key, a kept value, or a diverted value."""

    is_key: bool
    diverted: bool
    decoder: codecs.IncrementalDecoder
    parts: list[str]
    path: JSONPath = ()
    first_sent: bool = False


class StreamingJSONParser:
    """Parse one JSON document from chunks: ``feed(chunk)`` for each, then ``finish()``.

    ``divert(path)`` is asked at the start of every string value (not keys); when it says yes,
    the string's text comes out of :meth:`feed` in :class:`DivertedPiece` items instead of going
    into the document. ``descend(path)`` is asked at the start of every object and array: only
    those it says yes to are walked token by token (default: those under which ``divert`` may
    pick something, i.e. all when ``divert`` is given); the others are read whole, fast.
    ``max_skeleton`` bounds everything but the diverted text, in bytes of input; ``max_depth``
    bounds nesting; ``max_members`` the members of each walked container (walking costs about a
    microsecond per token, so 200,000 junk keys would hold the event loop for seconds).
    """

    def __init__(
        self,
        divert: Callable[[JSONPath], bool] | None = None,
        *,
        descend: Callable[[JSONPath], bool] | None = None,
        max_skeleton: int = 16 * 1024 * 1024,
        max_depth: int = MAX_JSON_DEPTH,
        max_members: int = MAX_TOP_LEVEL_KEYS,
    ) -> None:
        self._divert = divert or (lambda path: False)
        if descend is None:
            descend = (lambda path: True) if divert else (lambda path: False)
        self._descend = descend
        self.max_skeleton = max_skeleton
        self.max_depth = max_depth
        self.max_members = max_members
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._expect = _VALUE
        self._stack: list[_Container] = []
        self._string: _String | None = None
        self._skim: _Skim | None = None
        self._document: Any = None
        self._out: list[DivertedPiece] = []
        self._offset = 0  # input bytes consumed before _buf, for error messages
        self._diverted_bytes = 0  # input bytes that were diverted string text

    # -- the interface -------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[DivertedPiece]:
        """Parse what ``chunk`` completes; return the diverted text it carried, in order."""
        if self._eof:
            raise JSONStreamError("feed() after finish()")
        self._buf += chunk
        self._run()
        return self._take_output()

    def finish(self) -> Any:
        """Declare the input complete and return the document (diverted strings as ``None``)."""
        self._eof = True
        self._run()
        if self._expect != _END:
            raise JSONStreamError(
                f"the document is truncated: expected {self._expect} at byte {self._at()}"
            )
        assert not self._out, "diverted pieces are handed out by feed() before the end"
        return self._document

    @property
    def skeleton_size(self) -> int:
        """Input bytes read so far that were not diverted string text."""
        return self._offset + self._pos - self._diverted_bytes

    # -- the tokenizer -------------------------------------------------------------------------

    def _run(self) -> None:
        """Consume as much of the buffer as forms complete tokens, then drop what was consumed."""
        while self._step():
            pass
        self._offset += self._pos
        del self._buf[: self._pos]
        self._pos = 0
        if self._offset + len(self._buf) - self._diverted_bytes > self.max_skeleton:
            raise SkeletonTooLarge(
                f"the document without its attachment data is larger than {self.max_skeleton} bytes"
            )

    def _step(self) -> bool:
        """Read one token; False when the buffer ends before one is complete."""
        if self._string is not None:
            return self._read_string()
        if self._skim is not None:
            return self._read_skimmed()
        self._pos = _WHITESPACE.match(self._buf, self._pos).end()
        if self._pos >= len(self._buf):
            return False
        byte = self._buf[self._pos]
        expect = self._expect
        if expect == _END:
            raise self._error("extra data after the document")
        if expect == _COLON:
            if byte != ord(":"):
                raise self._error("expected ':' after an object key")
            self._pos += 1
            self._expect = _VALUE
            return True
        if expect == _AFTER_VALUE:
            return self._after_value(byte)
        if expect in (_FIRST_KEY, _KEY):
            if byte == ord("}") and expect == _FIRST_KEY:
                self._pos += 1
                self._close()
                return True
            if byte != ord('"'):
                raise self._error(f"expected {expect}")
            self._pos += 1
            self._open_string(is_key=True)
            return True
        # _VALUE or _FIRST_ITEM
        if byte == ord("]") and expect == _FIRST_ITEM:
            self._pos += 1
            self._close()
            return True
        return self._read_value(byte)

    def _after_value(self, byte: int) -> bool:
        top = self._stack[-1]
        is_object = isinstance(top.value, dict)
        if byte == ord(","):
            if len(top.value) >= self.max_members:
                raise self._error(f"more than {self.max_members} members in one object or array")
            self._pos += 1
            self._expect = _KEY if is_object else _VALUE
        elif byte == (ord("}") if is_object else ord("]")):
            self._pos += 1
            self._close()
        else:
            raise self._error(f"expected ',' or {'}' if is_object else ']'}")
        return True

    def _read_value(self, byte: int) -> bool:
        if byte == ord('"'):
            self._pos += 1
            self._open_string(is_key=False)
            return True
        if byte in (ord("{"), ord("[")):
            if len(self._stack) >= self.max_depth:
                raise self._error(f"nested deeper than {self.max_depth} levels")
            if not self._descend(self._path()):
                self._skim = _Skim(bytearray())
                self._expect = _IN_SKIMMED
                return True
            self._pos += 1
            if byte == ord("{"):
                self._stack.append(_Container({}))
                self._expect = _FIRST_KEY
            else:
                self._stack.append(_Container([]))
                self._expect = _FIRST_ITEM
            return True
        if byte in b"-0123456789":
            return self._read_number()
        return self._read_literal()

    def _read_number(self) -> bool:
        end = _NUMBER_CHARS.match(self._buf, self._pos).end()
        if end - self._pos > MAX_JSON_NUMBER:  # also before it ends: no rescans of a long one
            raise self._error(f"a number longer than {MAX_JSON_NUMBER} characters")
        if end == len(self._buf) and not self._eof:
            return False  # the number may go on in the next chunk
        text = bytes(self._buf[self._pos : end])
        match = _NUMBER.fullmatch(text)
        if match is None:
            raise self._error(f"malformed number {text[:40].decode()!r}")
        self._pos = end
        self._add(float(text) if match.group(1) or match.group(2) else int(text))
        return True

    def _read_literal(self) -> bool:
        rest = bytes(self._buf[self._pos : self._pos + 5])
        for word, value in _LITERALS.items():
            if rest.startswith(word):
                self._pos += len(word)
                self._add(value)
                return True
            if word.startswith(rest) and not self._eof:
                return False  # "tr" at the end of a chunk
        raise self._error(f"expected {self._expect}")

    # -- containers read whole -----------------------------------------------------------------

    def _read_skimmed(self) -> bool:
        """Find the end of a skimmed container; then build it with :func:`json.loads`."""
        skim = self._skim
        assert skim is not None
        buf, start = self._buf, self._pos
        pos = start
        done = False
        while pos < len(buf) and not done:
            if skim.in_string:
                pos = _SKIM_STRING_BODY.match(buf, pos).end()
                if pos >= len(buf) or buf[pos] == ord("\\"):
                    break  # the string, or an escape in it, goes on in the next chunk
                pos += 1
                skim.in_string = False
                continue
            token = _SKIM_TO_BRACKET.match(buf, pos)
            pos = token.end()
            if token.lastindex is None:
                break  # the end of the buffer
            byte = buf[token.start(1)]
            if byte == ord('"'):
                skim.in_string = True  # a string that goes on in the next chunk
            elif byte in b"[{":
                skim.depth += 1
                if len(self._stack) + skim.depth > self.max_depth:
                    raise self._error(f"nested deeper than {self.max_depth} levels", pos)
            else:
                skim.depth -= 1
                done = skim.depth == 0
        skim.raw += buf[start:pos]
        self._pos = pos
        if not done:
            return False
        self._skim = None
        try:
            value = json.loads(skim.raw.decode("utf-8", "surrogatepass"), **NUMBER_HOOKS)
        except UnicodeDecodeError as exc:
            raise self._error(f"invalid UTF-8 ({exc.reason})", pos) from exc
        except ValueError as exc:  # JSONDecodeError, and NaN/Infinity or long numbers (hooks)
            raise self._error(f"{exc} in the value that ends", pos) from exc
        self._add(value)
        return True

    # -- strings -------------------------------------------------------------------------------

    def _open_string(self, *, is_key: bool) -> None:
        path: JSONPath = ()
        diverted = False
        if not is_key:
            path = self._path()
            diverted = self._divert(path)
        decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")  # as json.loads(bytes)
        self._string = _String(is_key, diverted, decoder, [], path)
        self._expect = _IN_STRING

    def _read_string(self) -> bool:
        """Read plain text up to the next special byte, or one escape, or the closing quote."""
        string = self._string
        assert string is not None
        buf, pos = self._buf, self._pos
        special = _STRING_SPECIAL.search(buf, pos)
        end = special.start() if special else len(buf)
        if end > pos:
            self._text(string, buf[pos:end], end - pos)
            self._pos = end
        if special is None:
            return False
        byte = buf[end]
        if byte == ord('"'):
            self._pos = end + 1
            self._close_string(string)
            return True
        if byte != ord("\\"):
            raise self._error("control character inside a string", end)
        escape = self._escape(end)
        if escape is None:
            return False  # the escape is cut by the end of the chunk
        text, length = escape
        if string.diverted:
            self._diverted_bytes += length
        self._end_of_raw_text(string)
        string.parts.append(text)
        self._pos = end + length
        return True

    def _text(self, string: _String, raw: bytes | bytearray, length: int) -> None:
        try:
            string.parts.append(string.decoder.decode(raw))
        except UnicodeDecodeError as exc:
            raise self._error(f"invalid UTF-8 in a string ({exc.reason})") from exc
        if string.diverted:
            self._diverted_bytes += length

    def _end_of_raw_text(self, string: _String) -> None:
        """Raw UTF-8 text stops (an escape or the closing quote): no character may be cut."""
        try:
            string.parts.append(string.decoder.decode(b"", final=True))
        except UnicodeDecodeError as exc:
            raise self._error(f"invalid UTF-8 in a string ({exc.reason})") from exc

    def _escape(self, pos: int) -> tuple[str, int] | None:
        """The text of the escape at ``pos`` and its length in bytes; None if it is incomplete."""
        buf = self._buf
        if pos + 1 >= len(buf):
            return self._incomplete(pos)
        kind = buf[pos + 1]
        if kind in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[kind], 2
        if kind != ord("u"):
            raise self._error(f"invalid escape \\{chr(kind)}", pos)
        unit = self._hex4(pos)
        if unit is None:
            return self._incomplete(pos)
        if 0xD800 <= unit <= 0xDBFF:  # a high surrogate: a low one may follow (UTF-16 pair)
            follow = bytes(buf[pos + 6 : pos + 12])
            if _LOW_SURROGATE.fullmatch(follow):
                low = int(follow[2:], 16)
                return chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)), 12
            if len(follow) < 6 and _LOW_SURROGATE_START.fullmatch(follow) and not self._eof:
                return None  # cannot tell yet whether the pair goes on in the next chunk
        return chr(unit), 6

    def _hex4(self, pos: int) -> int | None:
        """The four hex digits after ``\\u`` at ``pos``; None if the buffer ends first."""
        digits = bytes(self._buf[pos + 2 : pos + 6])
        if _HEX.fullmatch(digits):
            return int(digits, 16)
        if not self._eof and _HEX_START.fullmatch(digits):
            return None
        raise self._error("invalid \\u escape", pos)

    def _incomplete(self, pos: int) -> None:
        if self._eof:
            raise self._error("the document is truncated inside an escape", pos)
        return None

    def _close_string(self, string: _String) -> None:
        self._end_of_raw_text(string)
        self._string = None
        if string.diverted:
            self._flush_diverted(string, last=True)
            self._add(None)
            return
        text = "".join(string.parts)
        if string.is_key:
            self._stack[-1].key = text
            self._expect = _COLON
        else:
            self._add(text)

    def _flush_diverted(self, string: _String, *, last: bool) -> None:
        """Hand out the diverted text read so far (one piece per string per feed)."""
        text = "".join(string.parts)
        string.parts.clear()
        if text or last or not string.first_sent:
            self._out.append(DivertedPiece(string.path, text, not string.first_sent, last))
            string.first_sent = True

    def _take_output(self) -> list[DivertedPiece]:
        string = self._string
        if string is not None and string.diverted and string.parts:
            self._flush_diverted(string, last=False)
        out, self._out = self._out, []
        return out

    # -- building the document -----------------------------------------------------------------

    def _path(self) -> JSONPath:
        return tuple(
            c.key if isinstance(c.value, dict) else len(c.value)  # type: ignore[misc]
            for c in self._stack
        )

    def _add(self, value: Any) -> None:
        """Place a complete value in its container, or make it the document."""
        if not self._stack:
            self._document = value
            self._expect = _END
            return
        top = self._stack[-1]
        if isinstance(top.value, dict):
            assert top.key is not None
            top.value[top.key] = value
            top.key = None
        else:
            top.value.append(value)
        self._expect = _AFTER_VALUE

    def _close(self) -> None:
        self._add(self._stack.pop().value)

    def _at(self, pos: int | None = None) -> int:
        return self._offset + (self._pos if pos is None else pos)

    def _error(self, reason: str, pos: int | None = None) -> JSONStreamError:
        return JSONStreamError(f"malformed JSON: {reason} at byte {self._at(pos)}")
