"""The pure format modules, checked against the real nix client where it can say."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import struct
import subprocess
from collections.abc import Callable

import brotli
import pytest
import zstandard
from depot.nix import narinfo, nixbase32
from depot.nix.compression import OUTPUT_CHUNK, CompressionError, decompressor
from depot.nix.nar import NarError, NarValidator, validate
from depot.nix.narinfo import NarInfoError
from depot.nix.nixbase32 import Hash
from depot.nix.signing import PublicKey, SecretKey, Signature

from .conftest import Closure  # noqa: TID252


def nix_out(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


# nix32 and hash strings


@pytest.mark.parametrize("data", [b"", b"depot", os.urandom(100)], ids=["empty", "word", "random"])
def test_nix32_matches_nix(data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    expected = nix_out(
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "hash",
        "to-base32",
        "--type",
        "sha256",
        digest,
    )
    assert nixbase32.encode(bytes.fromhex(digest)) == expected
    assert nixbase32.decode(expected, 32).hex() == digest


def test_hash_strings_in_every_spelling_nix_accepts() -> None:
    digest = hashlib.sha256(b"x").digest()
    canonical = f"sha256:{nixbase32.encode(digest)}"
    import base64

    for spelling in (canonical, f"sha256:{digest.hex()}", f"sha256:{base64.b64encode(digest).decode()}",
                     f"sha256-{base64.b64encode(digest).decode()}"):  # fmt: skip
        assert str(Hash.parse(spelling)) == canonical
    for bad in ("sha256:short", "md6:" + "0" * 52, "sha256:" + "e" * 52, "0" * 52):
        with pytest.raises(ValueError):
            Hash.parse(bad)


def test_nix32_refuses_values_that_overflow() -> None:
    with pytest.raises(ValueError):
        nixbase32.decode("z" * 52, 32)


# narinfo

NARINFO = """StorePath: /nix/store/kk8bv6zraa6ks2mrqp4cq85x3db2qy1y-dep
URL: nar/0f08cb922zqw1sd1ahx3vz1wz2wi4ijy3q6hvjbsz7x6jmv0mhjn.nar.xz
Compression: xz
FileHash: sha256:0f08cb922zqw1sd1ahx3vz1wz2wi4ijy3q6hvjbsz7x6jmv0mhjn
FileSize: 172
NarHash: sha256:021agnfsxq61mqdrb49gddaybna1zx246rfhzhj18807im810g77
NarSize: 160
References: gaqf87hrl6d0h12szs9v77q7hq7pyam4-top kk8bv6zraa6ks2mrqp4cq85x3db2qy1y-dep
Deriver: v6480c4a905nhadmf655fwfgld92s14j-dep.drv
System: x86_64-linux
"""


def test_narinfo_round_trips() -> None:
    info = narinfo.parse(NARINFO)
    assert info.hash_part == "kk8bv6zraa6ks2mrqp4cq85x3db2qy1y"
    assert info.nar_size == 160 and info.compression == "xz"
    assert narinfo.format(info) == NARINFO


def test_narinfo_without_compression_means_bzip2_and_is_written_with_it() -> None:
    info = narinfo.parse(NARINFO.replace("Compression: xz\n", ""))
    assert info.compression == "bzip2"
    assert "Compression: bzip2" in narinfo.format(info)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda t: t.replace("NarSize: 160", "NarSize: 0"), "NarSize is 0"),
        (lambda t: t.replace("NarSize: 160\n", ""), "lacks NarSize"),
        (lambda t: t.replace("NarSize: 160", "NarSize: -1"), "not a size"),
        (lambda t: t.replace("/nix/store/kk8", "/tmp/kk8"), "StorePath"),
        (lambda t: t.replace("References: gaqf", "References: ../gaqf"), "References"),
        (lambda t: t.replace("Compression: xz", "Compression: rar"), "Compression"),
        (lambda t: t + "Sig: nope\n", "Sig"),
        (lambda t: t + "System: again\n", "twice"),
        (lambda t: t.replace("NarHash: sha256:0", "NarHash: sha256:e"), "NarHash"),
    ],
)
def test_malformed_narinfo_is_refused_with_a_reason(
    edit: Callable[[str], str], reason: str
) -> None:
    with pytest.raises(NarInfoError, match=reason):
        narinfo.parse(edit(NARINFO))


# signing


def test_key_generated_by_depot_is_understood_by_nix() -> None:
    key = SecretKey.generate("depot.example-1")
    public = subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command", "key", "convert-secret-to-public"],
        input=str(key), capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert public == str(key.public_key())


def test_key_generated_by_nix_is_understood_by_depot() -> None:
    text = nix_out(
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "key",
        "generate-secret",
        "--key-name",
        "n-1",
    )
    key = SecretKey.parse(text)
    assert str(key) == text


def test_signature_covers_the_fingerprint() -> None:
    key = SecretKey.generate("k-1")
    info = narinfo.parse(NARINFO).signed(key)
    assert info.verify_signature(key.public_key())
    assert info.fingerprint() == (
        b"1;/nix/store/kk8bv6zraa6ks2mrqp4cq85x3db2qy1y-dep;"
        b"sha256:021agnfsxq61mqdrb49gddaybna1zx246rfhzhj18807im810g77;160;"
        b"/nix/store/gaqf87hrl6d0h12szs9v77q7hq7pyam4-top,/nix/store/kk8bv6zraa6ks2mrqp4cq85x3db2qy1y-dep"
    )
    tampered = narinfo.parse(narinfo.format(info).replace("NarSize: 160", "NarSize: 161"))
    assert not tampered.verify_signature(key.public_key())
    assert not info.verify_signature(SecretKey.generate("k-1").public_key())
    # Signing twice with one key keeps one signature; other keys' signatures stay.
    other = SecretKey.generate("other-1")
    both = info.signed(other).signed(key)
    assert [s.key_name for s in both.signatures] == ["k-1", "other-1"]


def test_corrupt_keys_are_refused() -> None:
    key = SecretKey.generate("k-1")
    import base64

    mismatched = key.seed + SecretKey.generate("k-1").public_key().raw
    with pytest.raises(ValueError, match="public half"):
        SecretKey.parse(f"k-1:{base64.b64encode(mismatched).decode()}")
    for bad in ("nocolon", "name:!!!", "name:" + "A" * 10, " :abc"):
        with pytest.raises(ValueError):
            SecretKey.parse(bad)
        with pytest.raises(ValueError):
            PublicKey.parse(bad)
        with pytest.raises(ValueError):
            Signature.parse(bad)


# NAR


def s(data: bytes) -> bytes:
    """A NAR string: length, bytes, zero padding."""
    return struct.pack("<Q", len(data)) + data + bytes((8 - len(data) % 8) % 8)


def nar(*tokens: bytes) -> bytes:
    return s(b"nix-archive-1") + b"".join(s(t) for t in tokens)


def regular(contents: bytes, executable: bool = False) -> list[bytes]:
    return [
        b"(",
        b"type",
        b"regular",
        *([b"executable", b""] if executable else []),
        b"contents",
        contents,
        b")",
    ]


def directory(*entries: tuple[bytes, list[bytes]]) -> list[bytes]:
    out = [b"(", b"type", b"directory"]
    for name, node in entries:
        out += [b"entry", b"(", b"name", name, b"node", *node, b")"]
    return [*out, b")"]


def symlink(target: bytes) -> list[bytes]:
    return [b"(", b"type", b"symlink", b"target", target, b")"]


def test_real_nar_validates_and_matches_nix(closure: Closure) -> None:
    data = subprocess.run(
        ["nix-store", "--dump", closure.lib], capture_output=True, check=True
    ).stdout
    info = json.loads(
        nix_out(
            "nix",
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
            closure.lib,
        )
    )[0]
    size, sha256_hex, listing = validate(data)
    assert size == info["narSize"]
    assert Hash("sha256", bytes.fromhex(sha256_hex)) == Hash.parse(info["narHash"])
    root = json.loads(listing)["root"]
    hello = root["entries"]["bin"]["entries"]["hello"]
    assert hello["executable"] is True
    assert data[hello["narOffset"] : hello["narOffset"] + hello["size"]].startswith(b"#!/bin/sh")
    assert root["entries"]["hello-link"] == {"type": "symlink", "target": "bin/hello"}


@pytest.mark.parametrize("chunk", [1, 7, 8, 4096])
def test_nar_validator_accepts_any_chunking(chunk: int) -> None:
    data = nar(
        *directory(
            (b"a", regular(b"x" * 13, executable=True)), (b"b", symlink(b"a")), (b"c", directory())
        )
    )
    parts: list[str] = []
    validator = NarValidator(parts.append)
    for i in range(0, len(data), chunk):
        validator.feed(data[i : i + chunk])
    validator.finish()
    assert validator.size == len(data)
    assert validator.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert json.loads("".join(parts))["root"]["entries"]["c"] == {
        "type": "directory",
        "entries": {},
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (s(b"nix-archive-2") + s(b"("), "magic"),
        (nar(*directory((b"b", regular(b"")), (b"a", regular(b"")))), "not sorted"),
        (nar(*directory((b"a", regular(b"")), (b"a", regular(b"")))), "not sorted"),
        (nar(*directory((b"..", regular(b"")))), "invalid file name"),
        (nar(*directory((b"a/b", regular(b"")))), "invalid file name"),
        (nar(*directory((b"", regular(b"")))), "invalid file name"),
        (nar(b"(", b"type", b"fifo", b")"), "unknown NAR node type"),
        (
            nar(b"(", b"type", b"regular", b"executable", b"yes", b"contents", b"", b")"),
            "executable",
        ),
        (nar(*regular(b"abc"))[:-20], "truncated"),
        (nar(*regular(b"abc")) + s(b"extra"), "trailing data"),
        (
            nar(*regular(b"abc")).replace(b"abc\x00\x00\x00\x00\x00", b"abc\x00\x00\x01\x00\x00"),
            "padding",
        ),
        (s(b"nix-archive-1") + struct.pack("<Q", 1 << 40), "too long"),
    ],
)
def test_invalid_nars_are_refused(data: bytes, reason: str) -> None:
    validator = NarValidator()
    with pytest.raises(NarError, match=reason):
        validator.feed(data)
        validator.finish()


# decompression

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "xz": lzma.compress,
    "bzip2": bz2.compress,
    "gzip": gzip.compress,
    "zstd": zstandard.ZstdCompressor().compress,
    "none": lambda data: data,
    "br": brotli.compress,
}


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_decompressors_stream_with_bounded_output(compression: str) -> None:
    # Zeros compress a thousandfold: output must still come in bounded chunks.
    data = os.urandom(100_000) + bytes(8 * OUTPUT_CHUNK)
    compressed = COMPRESSORS[compression](data)
    out: list[bytes] = []
    d = decompressor(compression, out.append)
    for i in range(0, len(compressed), 65536):
        d.feed(compressed[i : i + 65536])
    d.finish()
    assert b"".join(out) == data
    assert max(map(len, out)) <= 2 * OUTPUT_CHUNK


@pytest.mark.parametrize("compression", ["xz", "bzip2", "gzip", "br"])
def test_truncated_compressed_stream_is_an_error(compression: str) -> None:
    compressed = COMPRESSORS[compression](os.urandom(10_000))
    d = decompressor(compression, lambda _b: None)
    d.feed(compressed[:-8])
    with pytest.raises(CompressionError, match="truncated"):
        d.finish()


@pytest.mark.parametrize("compression", ["xz", "bzip2", "gzip", "zstd", "br"])
def test_corrupt_compressed_stream_is_an_error(compression: str) -> None:
    d = decompressor(compression, lambda _b: None)
    with pytest.raises(CompressionError):
        d.feed(b"\x00definitely not compressed data" * 10)
        d.finish()


def test_unknown_compression_is_an_error() -> None:
    with pytest.raises(CompressionError, match="not supported"):
        decompressor("lz4", lambda _b: None)
