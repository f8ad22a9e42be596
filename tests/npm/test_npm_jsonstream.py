"""The streaming JSON parser and base64 decoder behind ``npm publish``, as pure functions.

Every document is fed whole, one byte at a time and in uneven chunks, so that tokens, escapes,
surrogate pairs and UTF-8 sequences are cut at every possible place; the result must be what
:func:`json.loads` gives.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from depot.npm.jsonstream import (
    DivertedPiece,
    JSONStreamError,
    SkeletonTooLarge,
    StreamingJSONParser,
)
from depot.npm.publish_body import is_attachment_data, may_hold_attachment_data
from depot.npm.uploads import Base64Decoder, Base64Error

TRICKY = [
    pytest.param(r'"plain"', id="string"),
    pytest.param(r'"\/\\\"\b\f\n\r\t"', id="simple-escapes"),
    pytest.param(r'"\u00e9\u20AC\u0000"', id="unicode-escapes"),
    pytest.param(r'"\ud83d\ude00 \uD834\uDD1E"', id="surrogate-pairs"),
    pytest.param(r'"\ud800\u0041 \udc00 x\ud800"', id="lone-surrogates-as-json-loads"),
    pytest.param('"é€𝄞 ünïcødé"', id="raw-utf8"),
    pytest.param('{"é": {"€": ["𝄞"]}}', id="utf8-keys"),
    pytest.param(r'{"\u0064ata": "escaped key"}', id="escaped-key"),
    pytest.param("[1, -0, 2.5, -3e2, 4E+10, 5.0e-3, 12345678901234567890]", id="numbers"),
    pytest.param("[true, false, null]", id="literals"),
    pytest.param('[[[[{"a": [[], {}]}]]], {"b": {"c": {"d": {}}}}]', id="nesting"),
    pytest.param(' \t\n\r{ "a" :\n1 ,\t"b"\r: [ ] }\n ', id="whitespace"),
    pytest.param('{"a": 1, "a": 2}', id="repeated-key-keeps-the-last"),
    pytest.param("42", id="top-level-number"),
    pytest.param('""', id="empty-string"),
    pytest.param(
        json.dumps(
            {
                "_attachments": {"p-1.0.0.tgz": {"data": "QUJD", "length": 3}},
                "versions": {"1.0.0": {"name": "p", "dist": {"shasum": "00"}}},
            }
        ),
        id="attachments-first",
    ),
    pytest.param(
        json.dumps(
            {
                "name": "p",
                "versions": {"1.0.0": {"description": 'a "quoted" \\ path/é'}},
                "_attachments": {"p-1.0.0.tgz": {"length": 3, "data": "QUJD"}},
            }
        ),
        id="attachments-last",
    ),
]


def splits(body: bytes) -> Iterator[list[bytes]]:
    """The body whole, byte by byte, and in chunks of 2, 3, 5 and 7 bytes."""
    yield [body]
    for size in (1, 2, 3, 5, 7):
        yield [body[i : i + size] for i in range(0, len(body), size)]


def walk_everything(path: Any) -> bool:
    return True


def skim_everything(path: Any) -> bool:
    return False


#: Token by token everywhere, read whole everywhere, and as publish bodies are read.
MODES = [
    pytest.param(walk_everything, id="walked"),
    pytest.param(skim_everything, id="skimmed"),
    pytest.param(may_hold_attachment_data, id="as-publish"),
]


def parse(chunks: list[bytes], **options: Any) -> tuple[Any, list[DivertedPiece]]:
    parser = StreamingJSONParser(**options)
    pieces = [piece for chunk in chunks for piece in parser.feed(chunk)]
    return parser.finish(), pieces


@pytest.mark.parametrize("descend", MODES)
@pytest.mark.parametrize("text", TRICKY)
def test_documents_parse_as_json_loads_parses_them_however_they_are_cut(
    text: str, descend: Any
) -> None:
    body = text.encode()
    for chunks in splits(body):
        document, pieces = parse(chunks, descend=descend)
        assert document == json.loads(body)
        assert pieces == []


@pytest.mark.parametrize("descend", [MODES[0], MODES[2]])
@pytest.mark.parametrize("text", TRICKY)
def test_diverted_data_comes_out_whole_and_the_document_holds_none(text: str, descend: Any) -> None:
    body = text.encode()
    expected = json.loads(body)
    data = {}
    for name, attachment in (
        expected.get("_attachments", {}) if isinstance(expected, dict) else {}
    ).items():
        data[name], attachment["data"] = attachment["data"], None
    for chunks in splits(body):
        document, pieces = parse(chunks, divert=is_attachment_data, descend=descend)
        assert document == expected
        for name, text_ in data.items():
            mine = [p for p in pieces if p.path == ("_attachments", name, "data")]
            assert "".join(p.text for p in mine) == text_
            assert mine[0].first and mine[-1].last
            assert not any(p.first for p in mine[1:]) and not any(p.last for p in mine[:-1])


def test_escaped_base64_is_unescaped_in_the_diverted_text() -> None:
    tarball = os.urandom(3000)
    encoded = base64.b64encode(tarball).decode()
    body = json.dumps({"_attachments": {"f": {"data": encoded}}}).replace("/", "\\/").encode()
    for chunks in splits(body):
        _, pieces = parse(chunks, divert=is_attachment_data)
        assert "".join(p.text for p in pieces) == encoded


def test_a_large_diverted_string_comes_out_a_chunk_at_a_time() -> None:
    encoded = base64.b64encode(os.urandom(3 * 2**20)).decode()
    body = json.dumps({"name": "p", "_attachments": {"f": {"data": encoded}}}).encode()
    parser = StreamingJSONParser(
        is_attachment_data, descend=may_hold_attachment_data, max_skeleton=1024
    )
    pieces = []
    for i in range(0, len(body), 65536):
        pieces += parser.feed(body[i : i + 65536])
    assert parser.finish() == {"name": "p", "_attachments": {"f": {"data": None}}}
    assert max(len(p.text) for p in pieces) <= 65536
    assert "".join(p.text for p in pieces) == encoded
    assert parser.skeleton_size < 1024


def test_only_strings_at_the_attachment_data_path_are_diverted() -> None:
    body = json.dumps(
        {
            "data": "top",
            "_attachments": {"f": {"data": "QUJD", "other": "kept"}, "g": {"data": 3}},
            "versions": {"1": {"_attachments": {"f": {"data": "nested, kept"}}}},
        }
    ).encode()
    document, pieces = parse([body], divert=is_attachment_data)
    assert [p.path for p in pieces] == [("_attachments", "f", "data")]
    assert document["data"] == "top"
    assert document["_attachments"] == {"f": {"data": None, "other": "kept"}, "g": {"data": 3}}
    assert document["versions"]["1"]["_attachments"]["f"]["data"] == "nested, kept"


MALFORMED = [
    pytest.param(b"", id="empty"),
    pytest.param(b'{"a": 1', id="truncated-object"),
    pytest.param(b'{"a": "b', id="truncated-string"),
    pytest.param(b'"\\u12', id="truncated-escape"),
    pytest.param(b"[1, 2,", id="truncated-array"),
    pytest.param(b"tru", id="truncated-literal"),
    pytest.param(b"[1,]", id="trailing-comma"),
    pytest.param(b'{"a" 1}', id="missing-colon"),
    pytest.param(b"[1 2]", id="missing-comma"),
    pytest.param(b'{"a": 1}}', id="extra-data"),
    pytest.param(b'{"a": 1} {}', id="two-documents"),
    pytest.param(b"{'a': 1}", id="single-quotes"),
    pytest.param(b"{a: 1}", id="bare-key"),
    pytest.param(b"[01]", id="leading-zero"),
    pytest.param(b"[1.]", id="bare-point"),
    pytest.param(b"[-]", id="bare-minus"),
    pytest.param(b"[NaN]", id="nan"),
    pytest.param(b"[Infinity]", id="infinity"),
    pytest.param(b'"\\x41"', id="bad-escape"),
    pytest.param(b'"\\u00g1"', id="bad-unicode-escape"),
    pytest.param(b'"tab\there"', id="raw-control-character"),
    pytest.param(b'"\xff"', id="invalid-utf8"),
    pytest.param(b'"\xc3"', id="cut-utf8"),
    pytest.param(b'"\xc3\\n\xa9"', id="utf8-cut-by-an-escape"),
    pytest.param(b"[1] // comment", id="comment"),
]


def refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


@pytest.mark.parametrize("descend", MODES)
@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_json_is_refused_however_it_is_cut(body: bytes, descend: Any) -> None:
    with pytest.raises(ValueError):
        json.loads(body, parse_constant=refuse)  # the reference agrees (strict RFC 8259)
    for chunks in splits(body):
        with pytest.raises(JSONStreamError):
            parse(chunks, divert=is_attachment_data, descend=descend)


def test_the_document_without_its_data_is_capped() -> None:
    big = json.dumps({"readme": "x" * 5000}).encode()
    with pytest.raises(SkeletonTooLarge):
        parse([big[i : i + 100] for i in range(0, len(big), 100)], max_skeleton=4096)


@pytest.mark.parametrize("descend", MODES)
def test_nesting_is_capped(descend: Any) -> None:
    with pytest.raises(JSONStreamError, match="nested deeper"):
        parse([b"[" * 300 + b"]" * 300], descend=descend, max_depth=256)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 100, 1001])
def test_base64_decodes_in_pieces_cut_anywhere(size: int) -> None:
    data = os.urandom(size)
    text = base64.b64encode(data).decode()
    for step in (1, 2, 3, 5, 4096):
        decoder = Base64Decoder()
        out = b"".join(decoder.feed(text[i : i + step]) for i in range(0, len(text), step))
        assert out + decoder.finish() == data


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("QUJD!", id="outside-the-alphabet"),
        pytest.param("QUJ", id="truncated"),
        pytest.param("QQ==QUJD", id="data-after-padding"),
        pytest.param("QU=D", id="padding-inside"),
        pytest.param("QUJD\nQUJD", id="newline"),
        pytest.param("QUJDé", id="non-ascii"),
    ],
)
def test_invalid_base64_is_refused(text: str) -> None:
    with pytest.raises(Base64Error):
        decoder = Base64Decoder()
        for char in text:
            decoder.feed(char)
        decoder.finish()
